//! A worker's TCP clients of the `bind` listener: accepted, framed, pipelined, answered out of order, closed
//! when idle or too slow to read their answers.

use super::*;

impl Worker {
    pub(super) fn accept(&mut self, index: usize, now: Instant) {
        let Some(Listener::Tcp(listener)) = self.listeners.get(index) else { return };
        loop {
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(_) => return,
            };
            let live = self.clients.iter().flatten().count();
            if live >= MAX_TCP_CLIENTS || stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().ok().map(|addr| addr.ip());
            let interface = local.and_then(sys::interface_of_local_addr);
            let slot = match self.clients.iter().position(Option::is_none) {
                Some(slot) => slot,
                None => {
                    self.clients.push(None);
                    self.client_gens.push(0);
                    self.clients.len() - 1
                }
            };
            self.client_gens[slot] = self.client_gens[slot].wrapping_add(1);
            if self.epoll.add(stream.as_raw_fd(), token(KIND_TCP_CLIENT, slot as u64), sys::IN).is_err() {
                continue;
            }
            self.clients[slot] = Some(Client {
                generation: self.client_gens[slot],
                stream,
                peer,
                local,
                interface,
                rbuf: Vec::new(),
                wbuf: Vec::new(),
                last: now,
            });
            let _ = index;
        }
    }

    pub(super) fn client_event(&mut self, slot: usize, flags: u32, now: Instant) {
        let Some(Some(client)) = self.clients.get_mut(slot) else { return };
        client.last = now;
        if flags & sys::OUT != 0 && !client.wbuf.is_empty() {
            if flush(&mut client.stream, &mut client.wbuf).is_err() {
                return self.close_client(slot);
            }
            if client.wbuf.is_empty() {
                let _ = self.epoll.modify(client.stream.as_raw_fd(), token(KIND_TCP_CLIENT, slot as u64), sys::IN);
            }
        }
        if flags & (sys::IN | sys::ERR) == 0 {
            return;
        }
        let mut closed = false;
        loop {
            match client.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => client.rbuf.extend_from_slice(&self.read_buf[..n]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let mut messages = Vec::new();
        let mut at = 0;
        while client.rbuf.len() - at >= 2 {
            let len = usize::from(u16::from_be_bytes([client.rbuf[at], client.rbuf[at + 1]]));
            if client.rbuf.len() - at - 2 < len {
                break;
            }
            messages.push(client.rbuf[at + 2..at + 2 + len].to_vec());
            at += 2 + len;
        }
        client.rbuf.drain(..at);
        let (peer, local, generation, interface) =
            (client.peer, client.local, client.generation, client.interface.clone());
        let direction = self.direction_of(interface.as_deref());
        for message in messages {
            let client_addr = ClientAddr {
                peer,
                local,
                ifindex: 0,
                listener: 0,
                tcp: Some(u64::from(generation) << 32 | slot as u64),
            };
            let cx =
                QueryContext { client: client_addr, direction, interface: interface.as_deref(), original_dst: None };
            if self.core.handle_query(now, &message, &cx, &mut self.reply) == Handled::Answered {
                let reply = std::mem::take(&mut self.reply);
                self.answer_tcp(client_addr, &reply);
                self.reply = reply;
            }
        }
        if closed {
            self.close_client(slot);
        }
    }

    pub(super) fn answer_tcp(&mut self, client: ClientAddr, payload: &[u8]) {
        let Some(tag) = client.tcp else { return };
        let (slot, generation) = ((tag & 0xffff_ffff) as usize, (tag >> 32) as u32);
        let Some(Some(conn)) = self.clients.get_mut(slot) else { return };
        if conn.generation != generation {
            return;
        }
        conn.wbuf.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        conn.wbuf.extend_from_slice(payload);
        if flush(&mut conn.stream, &mut conn.wbuf).is_err() || conn.wbuf.len() > MAX_CLIENT_BACKLOG {
            return self.close_client(slot);
        }
        if !conn.wbuf.is_empty() {
            let _ = self.epoll.modify(conn.stream.as_raw_fd(), token(KIND_TCP_CLIENT, slot as u64), sys::IN | sys::OUT);
        }
    }

    pub(super) fn close_client(&mut self, slot: usize) {
        if let Some(client) = self.clients.get_mut(slot).and_then(Option::take) {
            let _ = self.epoll.delete(client.stream.as_raw_fd());
        }
    }

    pub(super) fn expire_clients(&mut self, now: Instant) {
        let idle: Vec<usize> = self
            .clients
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| c.as_ref().filter(|c| now.duration_since(c.last) >= TCP_CLIENT_IDLE).map(|_| slot))
            .collect();
        for slot in idle {
            self.close_client(slot);
        }
    }
}
