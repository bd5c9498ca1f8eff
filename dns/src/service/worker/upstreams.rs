//! A worker's upstream side: connected UDP sockets read in batches, TCP connections, DoT sessions (rustls on
//! the non-blocking socket) and the DoH thread's events, each reported to the core.

use super::*;

impl Worker {
    pub(super) fn upstream_udp_readable(&mut self, slot: u32, now: Instant) {
        let Some(up) = self.up_udp.get(&slot) else { return };
        let (fd, id) = (up.socket.as_raw_fd(), up.id);
        for _ in 0..MAX_BATCHES_PER_EVENT {
            let count = match self.batch.recv(fd) {
                Ok(0) | Err(_) => break,
                Ok(count) => count,
            };
            for i in 0..count {
                if self.batch.received[i].len > 0 {
                    self.core.handle_udp(now, id, self.batch.payload(i));
                }
            }
            if count < sys::BATCH {
                break;
            }
        }
    }

    pub(super) fn upstream_tcp_event(&mut self, slot: u32, flags: u32, now: Instant) {
        let Some(up) = self.up_tcp.get_mut(&slot) else { return };
        let id = up.id;
        if up.connecting && up.tls.is_none() {
            if flags & (sys::OUT | sys::ERR) == 0 {
                return;
            }
            if sys::take_socket_error(up.stream.as_raw_fd()).is_err() || flags & sys::ERR != 0 && flags & sys::OUT == 0
            {
                return self.broken(slot, id, now);
            }
            up.connecting = false;
            let _ = self.epoll.modify(up.stream.as_raw_fd(), token(KIND_UP_TCP, u64::from(slot)), sys::IN);
            self.core.tcp_connected(now, id);
            return;
        }
        if up.tls.is_some() {
            return self.tls_event(slot, flags, now);
        }
        if flags & sys::OUT != 0 && !up.wbuf.is_empty() {
            if flush(&mut up.stream, &mut up.wbuf).is_err() {
                return self.broken(slot, id, now);
            }
            if up.wbuf.is_empty() {
                let _ = self.epoll.modify(up.stream.as_raw_fd(), token(KIND_UP_TCP, u64::from(slot)), sys::IN);
            }
        }
        if flags & (sys::IN | sys::ERR) == 0 {
            return;
        }
        loop {
            let Some(up) = self.up_tcp.get_mut(&slot) else { return };
            match up.stream.read(&mut self.read_buf) {
                Ok(0) => return self.broken(slot, id, now),
                Ok(n) => self.core.tcp_received(now, id, &self.read_buf[..n]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.broken(slot, id, now),
            }
        }
    }

    /// A DoT connection is readable or writable: move ciphertext, finish the handshake, hand plaintext to the core.
    pub(super) fn tls_event(&mut self, slot: u32, flags: u32, now: Instant) {
        let Some(up) = self.up_tcp.get_mut(&slot) else { return };
        let id = up.id;
        if up.connecting && flags & sys::ERR != 0 && sys::take_socket_error(up.stream.as_raw_fd()).is_err() {
            return self.broken(slot, id, now);
        }
        let mut plaintext = Vec::new();
        let mut closed = false;
        if flags & (sys::IN | sys::ERR) != 0 {
            let tls = up.tls.as_mut().expect("TLS connection");
            loop {
                match tls.read_tls(&mut up.stream) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(_) => {
                        if tls.process_new_packets().is_err() {
                            return self.broken(slot, id, now);
                        }
                        let mut reader = tls.reader();
                        loop {
                            match reader.read(&mut self.read_buf) {
                                Ok(0) => break,
                                Ok(n) => plaintext.extend_from_slice(&self.read_buf[..n]),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return self.broken(slot, id, now),
                }
            }
        }
        if self.pump_tls(slot).is_err() {
            return self.broken(slot, id, now);
        }
        let Some(up) = self.up_tcp.get_mut(&slot) else { return };
        let handshaking = up.tls.as_ref().is_some_and(|tls| tls.is_handshaking());
        if up.connecting && !handshaking {
            up.connecting = false;
            self.core.tcp_connected(now, id);
            let _ = self.pump_tls(slot);
        }
        if !plaintext.is_empty() {
            self.core.tcp_received(now, id, &plaintext);
        }
        if closed {
            self.broken(slot, id, now);
        }
    }

    /// Writes what the TLS session has queued; watches for writability when the socket is full.
    pub(super) fn pump_tls(&mut self, slot: u32) -> io::Result<()> {
        let Some(up) = self.up_tcp.get_mut(&slot) else { return Ok(()) };
        let Some(tls) = up.tls.as_mut() else { return Ok(()) };
        let mut blocked = false;
        while tls.wants_write() {
            match tls.write_tls(&mut up.stream) {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        let interest = if blocked || up.connecting && up.tls.as_ref().is_none_or(|t| t.is_handshaking()) {
            sys::IN | sys::OUT
        } else {
            sys::IN
        };
        let _ = self.epoll.modify(up.stream.as_raw_fd(), token(KIND_UP_TCP, u64::from(slot)), interest);
        Ok(())
    }

    pub(super) fn broken(&mut self, slot: u32, id: ConnId, now: Instant) {
        self.drop_up_tcp(slot);
        self.core.tcp_closed(now, id);
    }

    /// Events from the DoH thread.
    pub(super) fn doh_events(&mut self, now: Instant) {
        let Some((_, inbox)) = &self.doh else { return };
        inbox.wake.drain();
        let events: Vec<doh::Event> = inbox.events.try_iter().collect();
        for event in events {
            match event {
                doh::Event::Connected(conn) => self.core.tcp_connected(now, conn),
                doh::Event::Received(conn, framed) => self.core.tcp_received(now, conn, &framed),
                doh::Event::Closed(conn) => {
                    if self.doh_conns.get(&(conn.0 as u32)) == Some(&conn) {
                        self.doh_conns.remove(&(conn.0 as u32));
                        self.core.tcp_closed(now, conn);
                    }
                }
            }
        }
    }

    pub(super) fn drop_up_tcp(&mut self, slot: u32) {
        if let Some(up) = self.up_tcp.remove(&slot) {
            let _ = self.epoll.delete(up.stream.as_raw_fd());
        }
    }

    pub(super) fn open_udp(&mut self, id: SocketId, remote: SocketAddr) -> io::Result<()> {
        let socket = Socket::new(Domain::for_address(remote), Type::DGRAM, Some(Protocol::UDP))?;
        if self.mark != 0 {
            socket.set_mark(self.mark)?;
        }
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        sys::size_receive_buffer(socket.as_raw_fd(), SOCKET_BUFFER);
        socket.connect(&SockAddr::from(remote))?;
        let socket: UdpSocket = socket.into();
        let slot = id.0 as u32;
        self.epoll.add(socket.as_raw_fd(), token(KIND_UP_UDP, u64::from(slot)), sys::IN)?;
        if let Some(old) =
            self.up_udp.insert(slot, UpUdp { id, socket, queue: Vec::new(), sender: GsoSender::new(self.gso) })
        {
            let _ = self.epoll.delete(old.socket.as_raw_fd());
        }
        Ok(())
    }

    pub(super) fn open_tcp(&mut self, id: ConnId, remote: SocketAddr, tls_name: Option<&str>) -> io::Result<()> {
        let tls = match tls_name {
            Some(name) => {
                let server =
                    rustls::pki_types::ServerName::try_from(name.trim_start_matches('[').trim_end_matches(']'))
                        .map_err(io::Error::other)?
                        .to_owned();
                Some(Box::new(rustls::ClientConnection::new(self.tls.clone(), server).map_err(io::Error::other)?))
            }
            None => None,
        };
        let socket = Socket::new(Domain::for_address(remote), Type::STREAM, Some(Protocol::TCP))?;
        if self.mark != 0 {
            socket.set_mark(self.mark)?;
        }
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        socket.set_tcp_nodelay(true)?;
        match socket.connect(&SockAddr::from(remote)) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(error) => return Err(error),
        }
        let stream: TcpStream = socket.into();
        let slot = id.0 as u32;
        self.epoll.add(stream.as_raw_fd(), token(KIND_UP_TCP, u64::from(slot)), sys::IN | sys::OUT)?;
        if let Some(old) = self.up_tcp.insert(slot, UpTcp { id, stream, connecting: true, wbuf: Vec::new(), tls }) {
            let _ = self.epoll.delete(old.stream.as_raw_fd());
        }
        Ok(())
    }
}
