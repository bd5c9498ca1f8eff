//! Upstream attempts (UDP socket pool, pipelined TCP/TLS/DoH connections), retries and failure, and what
//! comes back from upstream sockets and connections.

use super::*;

impl Core {
    pub(super) fn send_attempt(&mut self, flight: FlightRef, now: Instant) {
        let Some(f) = self.flights.get_mut(flight.slot, flight.generation) else { return };
        let upstream = &self.upstreams[f.upstream];
        let Some(remote) = upstream.addr else {
            return self.fail(flight, now);
        };
        // DoH streams look like a pipelined connection to the core: the edge maps each framed message to an
        // HTTP/2 request and each response back to a frame.
        let over_tcp = f.use_tcp || matches!(upstream.scheme, Scheme::Tcp | Scheme::Tls | Scheme::Https);
        f.attempt += 1;
        f.tries += 1;
        let attempt = f.attempt;
        let deadline = f.deadline;
        let upstream_id = f.upstream;
        let sent = if over_tcp {
            self.send_tcp(flight, attempt, upstream_id, remote, now)
        } else {
            self.send_udp(flight, attempt, upstream_id, remote, now)
        };
        if !sent {
            return self.fail(flight, now);
        }
        self.stats.upstream_sent += 1;
        let timer = Timer::Attempt(flight, attempt);
        let full_wait = now + self.settings.udp_attempt_timeout;
        if !over_tcp && full_wait <= deadline {
            self.timers.push_in_order(full_wait, timer);
        } else {
            self.timers.push(deadline, timer);
        }
    }

    pub(super) fn send_udp(
        &mut self,
        flight: FlightRef,
        attempt: u32,
        upstream: usize,
        remote: SocketAddr,
        now: Instant,
    ) -> bool {
        let max_pending = self.settings.max_pending_per_udp_socket;
        let mut chosen = None;
        for &slot in &self.upstreams[upstream].udp {
            let sock = self.udp.at_mut(slot).expect("listed sockets exist");
            if sock.retiring || sock.pending.len() >= max_pending {
                continue;
            }
            sock.expire_quarantine(now);
            if let Some(id) = sock.allocate(&mut self.rng, flight, attempt) {
                chosen = Some((slot, sock.generation, id));
                break;
            }
        }
        if chosen.is_none() && self.upstreams[upstream].udp.len() < self.settings.max_udp_sockets {
            let seed = self.rng.next_u64();
            let (slot, generation) = self.udp.insert(|generation| UdpSock::new(generation, upstream, now, seed));
            self.upstreams[upstream].udp.push(slot);
            self.outputs.push_back(Output::UdpOpen { socket: SocketId(pack(slot, generation)), remote });
            let sock = self.udp.at_mut(slot).expect("just inserted");
            chosen = sock.allocate(&mut self.rng, flight, attempt).map(|id| (slot, generation, id));
        }
        let Some((slot, generation, id)) = chosen else { return false };
        let f = self.flights.get_mut(flight.slot, flight.generation).expect("caller holds a live flight");
        let mut payload = f.template.to_vec();
        wire::set_id(&mut payload, id);
        f.via = Via::Udp { slot, id };
        self.udp.at_mut(slot).expect("chosen socket").last_used = now;
        self.outputs.push_back(Output::UdpSend { socket: SocketId(pack(slot, generation)), payload });
        true
    }

    pub(super) fn send_tcp(
        &mut self,
        flight: FlightRef,
        attempt: u32,
        upstream: usize,
        remote: SocketAddr,
        now: Instant,
    ) -> bool {
        let Some(slot) = self.pick_conn(upstream, remote, now) else { return false };
        let conn = self.tcp.at_mut(slot).expect("picked conn exists");
        let Some(id) = conn.allocate(flight, attempt) else { return false };
        let generation = conn.generation;
        conn.last_used = now;
        let f = self.flights.get_mut(flight.slot, flight.generation).expect("caller holds a live flight");
        let mut message = f.template.to_vec();
        wire::set_id(&mut message, id);
        f.via = Via::Tcp { slot, id };
        let framed = frame(&message);
        let conn = self.tcp.at_mut(slot).expect("picked conn exists");
        match conn.state {
            ConnState::Open => {
                self.outputs.push_back(Output::TcpSend { conn: ConnId(pack(slot, generation)), payload: framed })
            }
            ConnState::Connecting => conn.queued.extend_from_slice(&framed),
        }
        true
    }

    /// The least-loaded open connection; another is dialled (without waiting for it) when that one has
    /// `tcp_scale_up_pending` queries; a dialling connection takes queries only when none is open.
    pub(super) fn pick_conn(&mut self, upstream: usize, remote: SocketAddr, now: Instant) -> Option<u32> {
        let settings = &self.settings;
        let conns = &self.upstreams[upstream].tcp;
        let mut best_open: Option<(usize, u32)> = None;
        let mut best_connecting: Option<(usize, u32)> = None;
        for &slot in conns {
            let conn = self.tcp.at(slot).expect("listed conns exist");
            let load = conn.pending.len();
            if load >= settings.max_pending_per_tcp_conn {
                continue;
            }
            match conn.state {
                ConnState::Open => {
                    if best_open.is_none_or(|(best, _)| load < best) {
                        best_open = Some((load, slot));
                    }
                }
                ConnState::Connecting if conn.queued.len() < MAX_QUEUED_BYTES => {
                    if best_connecting.is_none_or(|(best, _)| load < best) {
                        best_connecting = Some((load, slot));
                    }
                }
                ConnState::Connecting => {}
            }
        }
        let room = conns.len() < settings.max_tcp_conns;
        match (best_open, best_connecting) {
            (Some((load, slot)), connecting) => {
                if load >= settings.tcp_scale_up_pending && room && connecting.is_none() {
                    self.open_conn(upstream, remote, now);
                }
                Some(slot)
            }
            (None, Some((load, slot))) => {
                if load >= settings.tcp_scale_up_pending && room {
                    return Some(self.open_conn(upstream, remote, now));
                }
                Some(slot)
            }
            (None, None) if room => Some(self.open_conn(upstream, remote, now)),
            (None, None) => None,
        }
    }

    pub(super) fn open_conn(&mut self, upstream: usize, remote: SocketAddr, now: Instant) -> u32 {
        let first_id = self.rng.next_u16();
        let seed = self.rng.next_u64();
        let (slot, generation) = self.tcp.insert(|generation| TcpConn::new(generation, upstream, now, first_id, seed));
        self.upstreams[upstream].tcp.push(slot);
        self.stats.tcp_opened += 1;
        let tls = self.upstreams[upstream].tls_name.clone();
        let doh_path = self.upstreams[upstream].doh_path.clone();
        self.outputs.push_back(Output::TcpConnect { conn: ConnId(pack(slot, generation)), remote, tls, doh_path });
        slot
    }

    pub(super) fn release_via(&mut self, flight: FlightRef, now: Instant) {
        let Some(f) = self.flights.get_mut(flight.slot, flight.generation) else { return };
        let via = std::mem::replace(&mut f.via, Via::None);
        match via {
            Via::None => {}
            Via::Udp { slot, id } => {
                let until = now + self.settings.id_quarantine;
                if let Some(sock) = self.udp.at_mut(slot) {
                    sock.release(id, until);
                }
            }
            Via::Tcp { slot, id } => {
                if let Some(conn) = self.tcp.at_mut(slot) {
                    conn.pending.remove(&id);
                }
            }
        }
    }

    pub(super) fn attempt_timed_out(&mut self, flight: FlightRef, attempt: u32, now: Instant) {
        let Some(f) = self.flights.get(flight.slot, flight.generation) else { return };
        if f.attempt != attempt {
            return;
        }
        let was_udp = matches!(f.via, Via::Udp { .. });
        self.release_via(flight, now);
        if was_udp {
            self.stats.udp_timeouts += 1;
            let f = self.flights.get_mut(flight.slot, flight.generation).expect("checked above");
            if self.upstreams[f.upstream].scheme == Scheme::TcpUdp {
                f.use_tcp = true;
            }
        }
        self.retry_or_fail(flight, now);
    }

    pub(super) fn retry_or_fail(&mut self, flight: FlightRef, now: Instant) {
        let Some(f) = self.flights.get(flight.slot, flight.generation) else { return };
        if now < f.deadline && f.tries < self.settings.max_attempts {
            self.send_attempt(flight, now);
        } else {
            self.fail(flight, now);
        }
    }

    /// Answers every waiter SERVFAIL and ends the flight.
    pub(super) fn fail(&mut self, flight: FlightRef, now: Instant) {
        self.release_via(flight, now);
        let Some(f) = self.flights.remove(flight.slot) else { return };
        self.flight_index.remove(&f.key);
        if f.refresh {
            self.stats.refresh_failures += 1;
            self.cache.refresh_failed(&f.key);
        }
        for waiter in f.waiters {
            if waiter.gate.is_some() {
                self.release_gate(now, waiter, false);
                continue;
            }
            self.stats.servfail += 1;
            let mut payload = Vec::with_capacity(waiter.head.len() + 11);
            wire::empty_response(&waiter.head, &waiter.query, rcode::SERVFAIL, &mut payload);
            self.in_flight -= 1;
            self.outputs.push_back(Output::Answer { client: waiter.client, payload });
        }
    }

    // ---- upstream input ----

    /// A datagram arrived on upstream socket `socket`.
    pub fn handle_udp(&mut self, now: Instant, socket: SocketId, datagram: &[u8]) {
        let (slot, generation) = unpack(socket.0);
        let quarantine_until = now + self.settings.id_quarantine;
        let Some(sock) = self.udp.get_mut(slot, generation) else { return };
        if datagram.len() < wire::HEADER_LEN || wire::flags_of(datagram) & wire::flags::QR == 0 {
            self.stats.unexpected_datagrams += 1;
            sock.suspicious += 1;
            return self.check_suspicious(slot);
        }
        let id = wire::id(datagram);
        let Some(&(flight, attempt)) = sock.pending.get(&id) else {
            if sock.is_quarantined(id) {
                self.stats.late_datagrams += 1;
            } else {
                self.stats.unexpected_datagrams += 1;
                sock.suspicious += 1;
            }
            return self.check_suspicious(slot);
        };
        let matches = self.flights.get(flight.slot, flight.generation).is_some_and(|f| {
            f.attempt == attempt
                && wire::skip_name(datagram, wire::HEADER_LEN)
                    .is_ok_and(|end| wire::same_question(datagram, end + 4, &f.template, f.question_end))
        });
        if !matches {
            // A spoofed or confused answer must not end the real query: the ID stays pending.
            self.stats.mismatched_datagrams += 1;
            let sock = self.udp.at_mut(slot).expect("checked above");
            sock.suspicious += 1;
            return self.check_suspicious(slot);
        }
        let sock = self.udp.at_mut(slot).expect("checked above");
        sock.release(id, quarantine_until);
        if let Some(f) = self.flights.get_mut(flight.slot, flight.generation) {
            f.via = Via::None;
        }
        let retiring_empty = sock.retiring && sock.pending.is_empty();
        if retiring_empty {
            self.close_udp(slot);
        }
        self.on_response(flight, datagram, true, now);
    }

    pub(super) fn check_suspicious(&mut self, slot: u32) {
        let max = self.settings.max_suspicious_datagrams;
        let Some(sock) = self.udp.at_mut(slot) else { return };
        if sock.suspicious > max && !sock.retiring {
            sock.retiring = true;
            self.stats.sockets_retired += 1;
            let upstream = sock.upstream;
            let empty = sock.pending.is_empty();
            // Retired: no new queries; it closes once its pending queries are answered or time out.
            self.upstreams[upstream].udp.retain(|&s| s != slot);
            if empty {
                self.close_udp(slot);
            }
        }
    }

    pub(super) fn close_udp(&mut self, slot: u32) {
        if let Some(sock) = self.udp.remove(slot) {
            self.upstreams[sock.upstream].udp.retain(|&s| s != slot);
            self.outputs.push_back(Output::UdpClose { socket: SocketId(pack(slot, sock.generation)) });
        }
    }

    /// Connection `conn` is open (TLS: handshake done).
    pub fn tcp_connected(&mut self, _now: Instant, conn: ConnId) {
        let (slot, generation) = unpack(conn.0);
        let Some(c) = self.tcp.get_mut(slot, generation) else { return };
        c.state = ConnState::Open;
        let queued = std::mem::take(&mut c.queued);
        if !queued.is_empty() {
            self.outputs.push_back(Output::TcpSend { conn, payload: queued });
        }
    }

    /// Bytes arrived on connection `conn`.
    pub fn tcp_received(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let (slot, generation) = unpack(conn.0);
        let mut frames = std::mem::take(&mut self.frames);
        let Some(c) = self.tcp.get_mut(slot, generation) else { return };
        c.last_used = now;
        if c.receive(bytes, &mut frames).is_err() {
            frames.clear();
            self.frames = frames;
            self.outputs.push_back(Output::TcpClose { conn });
            return self.tcp_closed(now, conn);
        }
        for message in frames.drain(..) {
            let Some(c) = self.tcp.get_mut(slot, generation) else { break };
            let id = wire::id(&message);
            let Some(&(flight, attempt)) = c.pending.get(&id) else {
                self.stats.late_datagrams += 1;
                continue;
            };
            let matches = wire::flags_of(&message) & wire::flags::QR != 0
                && self.flights.get(flight.slot, flight.generation).is_some_and(|f| {
                    f.attempt == attempt
                        && wire::skip_name(&message, wire::HEADER_LEN)
                            .is_ok_and(|end| wire::same_question(&message, end + 4, &f.template, f.question_end))
                });
            if !matches {
                self.stats.mismatched_datagrams += 1;
                continue;
            }
            c.pending.remove(&id);
            if let Some(f) = self.flights.get_mut(flight.slot, flight.generation) {
                f.via = Via::None;
            }
            self.on_response(flight, &message, false, now);
        }
        self.frames = frames;
    }

    /// Connection `conn` failed to open, broke, or was closed by the upstream: each of its queries is retried
    /// (on another connection) or answered SERVFAIL.
    ///
    /// A break spends one attempt of one query. On a connection that was open, the oldest unanswered query is
    /// the likely cause (a server answers a pipeline mostly in order and dies on the query it cannot take): it
    /// spends an attempt and is re-sent after the others. The rest are bystanders: re-sent first, in their
    /// order, with their attempt given back; their deadline still bounds them. A connection that never opened
    /// spends an attempt of every query on it.
    pub fn tcp_closed(&mut self, now: Instant, conn: ConnId) {
        let (slot, generation) = unpack(conn.0);
        if self.tcp.get(slot, generation).is_none() {
            return;
        }
        let c = self.tcp.remove(slot).expect("checked above");
        self.upstreams[c.upstream].tcp.retain(|&s| s != slot);
        if !c.pending.is_empty() || c.state == ConnState::Connecting {
            self.stats.tcp_broken += 1;
        }
        let mut orphans: Vec<(u16, FlightRef)> = c
            .pending
            .iter()
            .filter(|(_, (flight, attempt))| {
                self.flights.get(flight.slot, flight.generation).is_some_and(|f| f.attempt == *attempt)
            })
            .map(|(&id, &(flight, _))| (c.age(id), flight))
            .collect();
        // Oldest first.
        orphans.sort_unstable_by(|a, b| b.cmp(a));
        let suspect = match c.state {
            ConnState::Open if !orphans.is_empty() => Some(orphans.remove(0).1),
            _ => None,
        };
        for (_, flight) in orphans {
            let Some(f) = self.flights.get_mut(flight.slot, flight.generation) else { continue };
            f.via = Via::None;
            if suspect.is_some() {
                self.stats.tcp_bystanders += 1;
                f.tries = f.tries.saturating_sub(1);
            }
            self.retry_or_fail(flight, now);
        }
        if let Some(flight) = suspect
            && let Some(f) = self.flights.get_mut(flight.slot, flight.generation)
        {
            f.via = Via::None;
            self.retry_or_fail(flight, now);
        }
    }
}
