//! DNS the datapath intercepts: a LAN client's UDP or TCP to port 53 that no `must_` rule sent direct reaches a
//! worker's transparent socket (tc steers it like a proxied flow while [`STEER_F_DNS`] is set) and goes to the
//! DNS forwarder with the interface it arrived on, so `interface(lan: ...)` DNS rules see what routing sees (dae
//! loses the interface for UDP/53).
//!
//! - UDP: the worker's UDP socket ([`super::udp`]) hands datagrams to port 53 here, with IP_PKTINFO's ifindex
//!   (the LAN interface) and destination (the server the client asked). Answers leave from a transparent
//!   socket bound to that server's address and port 53, so the client sees the server it asked.
//! - TCP: the worker's transparent listener accepts the connection; its ingress interface comes from the flow
//!   tag. Queries are read length-prefixed and submitted; answers are framed back on the connection.
//!
//! Overload sheds with a defined answer: a query the forwarder's queue refuses is answered REFUSED here and
//! counted (`refused`).
//!
//! [`STEER_F_DNS`]: datapath_abi::steer::STEER_F_DNS

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use config::dns::PacketDirection;
use datapath_abi::{Direction, FlowKey, FlowTag};
use dns::{
    ClientAddr, Handle, Intercepted,
    service::{AnswerSink, sys},
};
use socket2::{Domain, Socket, Type};
use tracing::debug;

use crate::{flow_table::FlowTable, links::LinkReader};

/// The port DNS is intercepted on (the kernel's `outbound::DNS` decision is made for it only).
pub use config::rules::DNS_PORT;
/// Reply sockets kept (one per server address clients ask); past this the cache starts over.
pub(super) const MAX_REPLY_SOCKETS: usize = 1024;
/// Longest DNS message over TCP.
const MAX_TCP_MESSAGE: usize = 65_535;
/// A TCP DNS client idle this long is closed (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What the answer path needs: reply sockets and the TCP clients waiting for answers.
#[derive(Debug, Default)]
pub struct Replies {
    udp: Mutex<HashMap<SocketAddr, UdpSocket>>,
    tcp: Mutex<HashMap<u64, TcpStream>>,
    next_tcp: AtomicU64,
    /// Answers that could not be delivered (socket gone, send failed).
    pub undelivered: AtomicU64,
}

impl Replies {
    /// The forwarder's answer sink: UDP answers from the server's address, TCP answers framed on their
    /// connection.
    pub fn sink(self: &Arc<Self>) -> AnswerSink {
        let replies = Arc::clone(self);
        Arc::new(move |client: ClientAddr, message: &[u8]| replies.deliver(&client, message))
    }

    /// Sends `message` to `client`: from the server's address over UDP, framed on its connection over TCP.
    fn deliver(&self, client: &ClientAddr, message: &[u8]) {
        let delivered = match client.tcp {
            Some(token) => self.send_tcp(token, message),
            None => self.send_udp(client, message),
        };
        if let Err(e) = delivered {
            self.undelivered.fetch_add(1, Ordering::Relaxed);
            debug!(peer = %client.peer, error = %e, "DNS answer not delivered");
        }
    }

    fn send_udp(&self, client: &ClientAddr, message: &[u8]) -> io::Result<()> {
        let server = client.local.ok_or_else(|| io::Error::other("no original destination"))?;
        self.send_from(SocketAddr::new(server, DNS_PORT), client.peer, message)
    }

    /// Sends `payload` to `to` from `from`, an address the gateway does not own (the server a client asked),
    /// through a transparent socket bound there (kept for the next datagram).
    pub fn send_from(&self, from: SocketAddr, to: SocketAddr, payload: &[u8]) -> io::Result<()> {
        self.with_reply_socket(from, to, |socket, to| socket.send_to(payload, to).map(|_| ()))
    }

    /// Runs `send` on the transparent socket bound to `from` (opened on first use), with `to` in its family.
    fn with_reply_socket(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        send: impl FnOnce(&UdpSocket, SocketAddr) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut sockets = self.udp.lock().unwrap_or_else(|e| e.into_inner());
        if !sockets.contains_key(&from) {
            if sockets.len() >= MAX_REPLY_SOCKETS {
                sockets.clear();
            }
            sockets.insert(from, reply_socket(from)?);
        }
        send(&sockets[&from], in_family_of(from, to))
    }

    fn send_tcp(&self, token: u64, message: &[u8]) -> io::Result<()> {
        let stream = {
            let clients = self.tcp.lock().unwrap_or_else(|e| e.into_inner());
            clients.get(&token).map(TcpStream::try_clone).ok_or_else(|| io::Error::other("connection gone"))??
        };
        let len = u16::try_from(message.len()).map_err(|_| io::Error::other("answer too long for TCP"))?;
        let mut framed = Vec::with_capacity(message.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(message);
        (&stream).write_all(&framed)
    }

    fn register_tcp(&self, stream: &TcpStream) -> io::Result<u64> {
        let token = self.next_tcp.fetch_add(1, Ordering::Relaxed);
        self.tcp.lock().unwrap_or_else(|e| e.into_inner()).insert(token, stream.try_clone()?);
        Ok(token)
    }

    fn forget_tcp(&self, token: u64) {
        self.tcp.lock().unwrap_or_else(|e| e.into_inner()).remove(&token);
    }
}

/// `to` as a socket bound to `from` addresses it (an IPv4 client of an IPv6 socket: v4-mapped).
pub(super) fn in_family_of(from: SocketAddr, to: SocketAddr) -> SocketAddr {
    match (from, to) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        _ => to,
    }
}

/// A transparent UDP socket bound to `from`, an address the gateway need not own, to send from (several may
/// share an address: SO_REUSEPORT).
pub(super) fn reply_socket(from: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(if from.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 }, Type::DGRAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Never read: the smallest receive buffer bounds what a stray datagram that matches it can hold.
    socket.set_recv_buffer_size(0)?;
    if from.is_ipv6() {
        socket.set_only_v6(true)?;
        sys::set_int_opt(socket.as_raw_fd(), libc::SOL_IPV6, libc::IPV6_TRANSPARENT, 1)?;
    } else {
        sys::set_int_opt(socket.as_raw_fd(), libc::SOL_IP, libc::IP_TRANSPARENT, 1)?;
    }
    socket.bind(&from.into())?;
    Ok(socket.into())
}

/// The DNS side of the workers: the forwarder, the flow table (TCP's interface) and the answer path.
pub struct Intercept {
    /// The running forwarder; a reload that changes the `dns` section swaps in a new one.
    pub handle: arc_swap::ArcSwap<Handle>,
    /// Reply sockets and TCP clients.
    pub replies: Arc<Replies>,
    /// The flow table and its hash seed.
    pub flows: Arc<FlowTable>,
    /// The seed the kernel hashes flow keys with.
    pub seed: u64,
    /// Queries answered REFUSED because the forwarder's queue was full.
    pub refused: AtomicU64,
    /// Queries submitted.
    pub submitted: AtomicU64,
}

impl std::fmt::Debug for Intercept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intercept").field("submitted", &self.submitted).finish_non_exhaustive()
    }
}

impl Intercept {
    fn submit(&self, query: Intercepted) {
        match self.handle.load().submit(query) {
            Ok(()) => {
                self.submitted.fetch_add(1, Ordering::Relaxed);
            }
            Err(query) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let mut refused = Vec::new();
                if ::dns::wire::refused(&query.message, &mut refused) {
                    self.replies.deliver(&query.client, &refused);
                }
            }
        }
    }
}

impl Intercept {
    /// Hands one steered datagram (a query from `peer` to `server`:53) to the forwarder. `tag` is its flow's
    /// tag: the direction and the interface of that direction (LAN ingress, or WAN egress for the gateway's own
    /// queries); without one (an untagged flow), the ingress interface IP_PKTINFO gave and LAN-in.
    pub fn submit_udp(
        &self,
        peer: SocketAddr,
        server: IpAddr,
        pktinfo_ifindex: u32,
        tag: Option<&FlowTag>,
        message: &[u8],
        links: &mut LinkReader,
    ) {
        let (direction, ifindex) = direction_of(tag, pktinfo_ifindex);
        let client = ClientAddr { peer, local: Some(server), ifindex, listener: 0, tcp: None };
        self.submit(Intercepted {
            message: message.to_vec(),
            client,
            direction: Some(direction),
            interface: links.name(ifindex).map(Box::from),
            original_dst: Some(SocketAddr::new(server, DNS_PORT)),
        });
    }
}

/// The direction of a flow and the interface of that direction, from its tag (`fallback`: the LAN ingress
/// interface when there is no tag).
fn direction_of(tag: Option<&FlowTag>, fallback: u32) -> (PacketDirection, u32) {
    match tag {
        Some(tag) if tag.direction == Direction::WanOut as u8 => (PacketDirection::WanOut, tag.egress_ifindex),
        Some(tag) => (PacketDirection::LanIn, tag.ingress_ifindex),
        None => (PacketDirection::LanIn, fallback),
    }
}

/// Serves one steered TCP connection to port 53: every length-prefixed query goes to the forwarder; answers
/// come back through [`Replies`] in any order (RFC 7766 pipelining).
pub fn serve_tcp(client: TcpStream, peer: SocketAddr, intercept: &Intercept, links: &mut LinkReader) -> io::Result<()> {
    let server = client.local_addr()?;
    let key = FlowKey::new(peer.ip(), peer.port(), server.ip(), server.port(), libc::IPPROTO_TCP as u8);
    let tag = intercept.flows.lookup(&key, intercept.seed);
    let (direction, ifindex) = direction_of(tag.as_ref(), 0);
    let interface: Option<Box<str>> = links.name(ifindex).map(Box::from);
    client.set_read_timeout(Some(TCP_IDLE))?;
    client.set_write_timeout(Some(Duration::from_secs(2)))?;
    let token = intercept.replies.register_tcp(&client)?;
    let result = (|| -> io::Result<()> {
        let mut reader = &client;
        let mut message = vec![0u8; MAX_TCP_MESSAGE];
        loop {
            let mut len = [0u8; 2];
            match reader.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let len = usize::from(u16::from_be_bytes(len));
            reader.read_exact(&mut message[..len])?;
            intercept.submit(Intercepted {
                message: message[..len].to_vec(),
                client: ClientAddr { peer, local: Some(server.ip()), ifindex, listener: 0, tcp: Some(token) },
                direction: Some(direction),
                interface: interface.clone(),
                original_dst: Some(server),
            });
        }
    })();
    // Answers still in flight for this connection are dropped with it (the client retries).
    intercept.replies.forget_tcp(token);
    result
}
