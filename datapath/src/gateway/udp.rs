//! UDP on the workers: one transparent socket per worker and family in the steering sockmap's UDP slots,
//! drained in batches with each datagram's original destination (IP_RECVORIGDSTADDR) and ingress interface
//! (IP_PKTINFO): by a multishot `RecvMsg` on io_uring over a provided buffer ring ([`super::uring`]; about 32
//! datagrams per wake-up, its buffers handed back once the batch is relayed) where the kernel has it (6.1+,
//! io_uring enabled), by `recvmmsg` (up to 32 datagrams per call) otherwise or when `dae run --udp-recv
//! recvmmsg` (`DAE_UDP_RECV=recvmmsg`) asks. The first worker logs which one runs, once, at info.
//!
//! - DNS (port 53, decided `outbound::DNS` by the kernel) goes to the forwarder ([`super::dns`]).
//! - Proxied datagrams are relayed in full-cone sessions keyed by the client's address and the node its group
//!   picked: one upstream socket per session (the daemon's mark), directly or through a SOCKS5 UDP association.
//!   Replies from any remote address go back to the client from a transparent socket bound to that address, so
//!   the client sees the server it talks to: read up to 16 at a time (`recvmmsg`), each run from one remote
//!   sent in one `sendmmsg` on this worker's own socket for that address. A run of same-size datagrams of one session leaves in one UDP GSO
//!   send (`UDP_SEGMENT`): one trip through the stack instead of one per datagram. Session sockets ask for
//!   merged receives (`UDP_GRO`, `dae run --udp-gro off` or `DAE_UDP_GRO=off` turns it off): where the WAN
//!   device's GRO merged a remote's datagrams, they are read at once and go back to the client in one GSO send,
//!   boundaries intact ([`super::gso`]). Sessions end after dae's idle timeouts (30 s; 2 min for QUIC on
//!   port 443; 17 s for DNS) and are bounded per worker; a datagram past the bound is dropped and counted.
//!
//! A SOCKS5 UDP association is opened without blocking the worker: its control connection's connect and
//! handshake are advanced by readiness events in the worker's epoll set while the session's first datagrams wait
//! (a proxy named by host name is associated on a thread, which wakes the worker through an eventfd).
//!
//! Each core's loop ([`super::pump`]) does both directions for both families: the loop's one epoll set holds each
//! family's steering socket receiver and every session's socket (under the worker's token prefix), so sessions
//! cost no thread; idle sessions are swept every second.

use std::{
    borrow::Cow,
    cell::{Cell, RefCell},
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, TryRecvError},
    },
    time::{Duration, Instant},
};

use config::rules::L4;
use datapath_abi::{FlowKey, FlowTag, flow::flow_hash, route::outbound};
use dns::service::sys;
use relay::{
    outbound::{Dialing, Node, NodeId, Protocol, UdpAssociation, associate, socks5},
    sniff::{
        quic::{Outcome, QuicSessions},
        route::{Transport, decide, should_sniff},
    },
};
use socket2::{Domain, Socket, Type};
use tracing::{debug, info, warn};

use super::{
    dns::{DNS_PORT, Intercept, MAX_REPLY_SOCKETS, in_family_of, reply_socket},
    gso,
    uring::{self, UringReceiver},
    worker::{Choice, DIAL_TIMEOUT, RelayContext, reroute},
};
use crate::links::LinkReader;

/// Sessions one worker keeps at most.
pub const MAX_SESSIONS: usize = 16_384;
/// Idle timeout of a session (dae's default).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle timeout of a QUIC session (UDP to port 443).
pub const QUIC_TIMEOUT: Duration = Duration::from_secs(120);
/// Idle timeout of a DNS session relayed rather than forwarded (a `must_` rule to a group).
pub const DNS_TIMEOUT: Duration = Duration::from_secs(17);
/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;
/// Receive buffer of a session socket (the kernel doubles it for its accounting): the remote's datagrams wait there
/// while the worker serves other sockets or is preempted. The default (208 KiB, about 90 datagrams of 1,200 bytes)
/// overflowed in every saturated reply run of `perf --only gateway` (6,500-30,000 datagrams per 4 s run); this
/// holds about 1,700 (some 15 ms at 1 Gbit/s). It bounds, it does not allocate: an idle session costs nothing
/// more, and the kernel's `udp_mem` caps all of them together.
const SESSION_RECV_BUFFER: usize = 2 << 20;
/// Receives read from a session socket per `recvmmsg` (each buffer holds any datagram or merged run; pages
/// become resident only where replies reach).
const REPLY_BATCH: usize = 16;

/// What the UDP relay counts.
#[derive(Debug, Default)]
pub struct UdpCounters {
    /// Sessions opened.
    pub sessions: AtomicU64,
    /// Sessions open now.
    pub active: AtomicU64,
    /// Sessions ended after their idle timeout.
    pub expired: AtomicU64,
    /// Datagrams relayed client -> remote.
    pub forwarded: AtomicU64,
    /// Datagrams relayed remote -> client.
    pub replied: AtomicU64,
    /// Datagrams dropped: session bound reached, group without alive node, a node that cannot carry UDP.
    pub dropped: AtomicU64,
    /// GSO sends (each carried several datagrams of one session in one system call).
    pub gso_sends: AtomicU64,
    /// `recvmmsg` calls on session sockets that read something (replies over this: receives per call).
    pub reply_reads: AtomicU64,
    /// Session receives that the kernel's GRO merged (each carried several datagrams of one remote).
    pub gro_receives: AtomicU64,
    /// Steering socket receives that carried a merged run of one client's datagrams (GRO, or a GSO send that
    /// reached the gateway unsegmented), split back into datagrams here.
    pub steer_gro_receives: AtomicU64,
    /// Times an io_uring receiver's buffer ring ran dry (its multishot request ended and was re-armed; datagrams
    /// waited in the socket meanwhile, none was lost).
    pub recv_ring_empty: AtomicU64,
    /// SOCKS5 UDP associations that failed or timed out (their sessions' waiting datagrams are counted dropped).
    pub associations_failed: AtomicU64,
    /// QUIC flows whose Initial named the server.
    pub quic_sniffed: AtomicU64,
    /// QUIC flows the sniffed name routed elsewhere than the kernel did.
    pub quic_rerouted: AtomicU64,
}

/// How a session reaches remotes.
#[derive(Debug)]
enum Via {
    Direct,
    /// Through a SOCKS5 relay; the association lives as long as its control connection.
    Socks5 {
        relay: SocketAddr,
        _association: UdpAssociation,
    },
}

#[derive(Debug)]
struct Session {
    socket: UdpSocket,
    /// The socket's family (what `sendmmsg` needs to know), fixed at its creation.
    v6: bool,
    via: Via,
    /// Milliseconds since `epoch` of the last datagram either way.
    last: AtomicU64,
    /// The client replies go to.
    client: SocketAddr,
    /// Idle this long, the session ends.
    timeout: Duration,
}

/// Datagrams a session keeps while its SOCKS5 association is being opened; more are dropped.
const MAX_WAITING: usize = 64;

/// A session whose SOCKS5 UDP association is being opened; its datagrams wait.
#[derive(Debug)]
struct Opening {
    how: Associating,
    /// Past this the attempt fails (the dial timeout).
    deadline: Instant,
    /// The first destination (it sets the session's timeout).
    dst: SocketAddr,
    /// Datagrams (destination, payload) waiting for the session, at most [`MAX_WAITING`].
    queued: Vec<(SocketAddr, Vec<u8>)>,
}

/// How an association is being opened.
#[derive(Debug)]
enum Associating {
    /// On a non-blocking control connection in the worker's epoll set (under the token beside it).
    Dialing(Box<Dialing>, u64),
    /// On a thread (a proxy named by host name), which answers here and wakes the worker.
    Thread(Receiver<io::Result<UdpAssociation>>),
}

/// What [`UdpRelay::session`] found.
enum Lookup {
    Open(Arc<Session>),
    Opening,
}

/// Where a flow's datagrams go: through a node (`None`: from the gateway directly), or nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Via(Option<NodeId>),
    Drop,
}

/// Replies from one remote waiting to leave together.
#[derive(Default)]
struct ReplyRun<'b> {
    from: Option<SocketAddr>,
    /// The payloads (to the run's client, on a socket connected to it).
    datagrams: Vec<&'b [u8]>,
}

impl<'b> ReplyRun<'b> {
    /// Adds a datagram from `from`; a different remote sends the run so far first.
    fn push(&mut self, relay: &UdpRelay, from: SocketAddr, payload: &'b [u8], client: SocketAddr) {
        if self.from.is_some_and(|current| current != from) {
            relay.send_run(self, client);
        }
        self.from = Some(from);
        self.datagrams.push(payload);
    }
}

/// Flows decided (by the kernel's group, or by a sniffed QUIC name), so later datagrams skip routing.
const MAX_ROUTES: usize = 65_536;

/// What a session is found by: its client's address and the node carrying it (`None`: from the gateway directly).
type SessionKey = (SocketAddr, Option<NodeId>);

/// UDP epoll tokens are below this; the core's loop tells its workers' apart by the bits above
/// ([`Watch::prefix`]).
pub const TOKEN_SPACE: u64 = 1 << 56;
/// The epoll token of the steering socket; sessions use their own numbers (from 0).
const STEER_TOKEN: u64 = TOKEN_SPACE - 1;
/// The epoll token of the association threads' wake eventfd.
const WAKE_TOKEN: u64 = TOKEN_SPACE - 2;

/// A UDP worker's place in its core loop's epoll set: its descriptors are watched there under `prefix | token`.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The core loop's epoll set.
    pub epoll: Arc<sys::Epoll>,
    /// The bits above [`TOKEN_SPACE`] that name this worker.
    pub prefix: u64,
}

impl Watch {
    fn add(&self, fd: std::os::fd::RawFd, token: u64, events: u32) -> io::Result<()> {
        self.epoll.add(fd, self.prefix | token, events)
    }

    fn delete(&self, fd: std::os::fd::RawFd) -> io::Result<()> {
        self.epoll.delete(fd)
    }
}
/// How often idle sessions are looked for (and at most how long the worker sleeps).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The sessions of one worker.
#[derive(Debug)]
pub struct UdpRelay {
    cx: Arc<RelayContext>,
    /// Where the worker's steering socket and every session's socket are watched (the core loop's set).
    epoll: Watch,
    sessions: RefCell<HashMap<SessionKey, Arc<Session>>>,
    /// Session keys by epoll token.
    tokens: RefCell<HashMap<u64, SessionKey>>,
    /// Sessions whose SOCKS5 association is being opened, and their keys by the control connection's epoll token.
    opening: RefCell<HashMap<SessionKey, Opening>>,
    opening_tokens: RefCell<HashMap<u64, SessionKey>>,
    /// Written by the threads that open associations for proxies named by host name (epoll token [`WAKE_TOKEN`]).
    wake: Arc<std::os::fd::OwnedFd>,
    next_token: Cell<u64>,
    /// Where replies are read: [`REPLY_BATCH`] receives of any size (a merged run included).
    reply_batch: gso::GroBatch,
    /// Transparent sockets replies leave from, by (the remote address they carry, the client they are connected
    /// to): this worker's own. Connected, a send reuses the socket's cached route instead of a policy-routing
    /// lookup per message.
    reply_sockets: RefCell<HashMap<(SocketAddr, SocketAddr), UdpSocket>>,
    epoch: Instant,
    /// QUIC sniff sessions: the first datagrams of a proxied flow are held until its Initial names the server.
    quic: QuicSessions<(SocketAddr, SocketAddr), Vec<u8>>,
    /// Decided flows and when they were last used.
    routes: HashMap<(SocketAddr, SocketAddr), (Route, Instant)>,
    /// Sends replies on the transparent reply sockets (same-size runs in one GSO message; a run too large for
    /// the LAN path leaves datagram by datagram, a path without GSO turns it off for this worker's replies).
    reply_sender: RefCell<sys::GsoSender>,
    /// Sends the session sockets' batches (runs of one size in one GSO message; falls back by itself).
    sender: RefCell<sys::GsoSender>,
    /// Counters.
    pub counters: Arc<UdpCounters>,
}

fn ms_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// A UDP socket for the steering sockmap: bound to an ephemeral port (`bpf_sk_assign` does not care), asking for
/// each datagram's original destination and ingress interface. With `gro`, it also asks for merged receives
/// (`UDP_GRO`): a run of one client's same-size datagrams that arrives as one skb (a device's GRO with
/// `rx-udp-gro-forwarding`, or a GSO send that reached it unsegmented) is read at once and leaves again in one
/// GSO send, instead of being split into single datagrams before the socket.
pub fn steering_socket(ipv6: bool, gro: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(if ipv6 { Domain::IPV6 } else { Domain::IPV4 }, Type::DGRAM, None)?;
    let fd = socket.as_raw_fd();
    if ipv6 {
        socket.set_only_v6(true)?;
        sys::set_int_opt(fd, libc::SOL_IPV6, libc::IPV6_TRANSPARENT, 1)?;
        sys::set_int_opt(fd, libc::SOL_IPV6, libc::IPV6_RECVORIGDSTADDR, 1)?;
    } else {
        sys::set_int_opt(fd, libc::SOL_IP, libc::IP_TRANSPARENT, 1)?;
        sys::set_int_opt(fd, libc::SOL_IP, libc::IP_RECVORIGDSTADDR, 1)?;
    }
    sys::enable_pktinfo(fd, ipv6)?;
    if gro && let Err(e) = gso::enable_gro(fd) {
        debug!(error = %e, "UDP_GRO refused on the steering socket: datagrams arrive one by one");
    }
    sys::size_receive_buffer(fd, 4 << 20);
    let any = if ipv6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
    socket.bind(&SocketAddr::new(any, 0).into())?;
    Ok(socket.into())
}

/// How a worker reads its steering socket (`dae run --udp-recv`, or `DAE_UDP_RECV`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UdpRecv {
    /// A multishot `RecvMsg` on io_uring with a provided buffer ring ([`uring`]) where the kernel has it,
    /// `recvmmsg` otherwise.
    #[default]
    Auto,
    /// `recvmmsg` in batches of [`sys::BATCH`], whatever the kernel has.
    Recvmmsg,
}

/// Whether session sockets ask for merged receives (`dae run --udp-gro`, or `DAE_UDP_GRO`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UdpGro {
    /// `UDP_GRO` on every session socket and on the steering sockets: where datagrams of one remote (or one
    /// client) arrive merged, they come in one read and leave in one GSO send.
    #[default]
    On,
    /// One read per datagram.
    Off,
}

/// The steering socket's receiver: batches of datagrams with their source, original destination and pktinfo.
enum Steering {
    Uring(Box<UringReceiver>),
    Recvmmsg(sys::RecvBatch),
}

/// The receiver is logged once per process, at info.
static RECEIVER_LOGGED: std::sync::Once = std::sync::Once::new();

impl Steering {
    /// The receiver `mode` asks for, its readiness watched by `epoll` under [`STEER_TOKEN`]. Built on the
    /// worker's thread (an io_uring with `SINGLE_ISSUER` belongs to the thread that made it).
    fn open(mode: UdpRecv, fd: std::os::fd::RawFd, epoll: &Watch) -> io::Result<Self> {
        if mode == UdpRecv::Auto {
            match UringReceiver::new(fd) {
                Ok(receiver) => {
                    epoll.add(receiver.wake_fd(), STEER_TOKEN, sys::IN)?;
                    RECEIVER_LOGGED.call_once(|| {
                        info!(buffers = uring::RING_BUFS, "UDP steering receive: io_uring multishot RecvMsg");
                    });
                    return Ok(Self::Uring(Box::new(receiver)));
                }
                Err(e) => RECEIVER_LOGGED.call_once(|| {
                    info!(error = %e, batch = sys::BATCH, "UDP steering receive: recvmmsg (no io_uring multishot RecvMsg)");
                }),
            }
        }
        RECEIVER_LOGGED.call_once(|| info!(batch = sys::BATCH, "UDP steering receive: recvmmsg (as asked)"));
        epoll.add(fd, STEER_TOKEN, sys::IN)?;
        Ok(Self::Recvmmsg(sys::RecvBatch::with_datagram_size(MAX_DATAGRAM)))
    }

    /// The next batch, without blocking; `Ok(0)` when none is queued. The io_uring receiver falls back to
    /// `recvmmsg` for good if the kernel refuses its multishot request.
    fn recv(&mut self, fd: std::os::fd::RawFd, epoll: &Watch, counters: &UdpCounters) -> io::Result<usize> {
        match self {
            Self::Recvmmsg(batch) => batch.recv(fd),
            Self::Uring(receiver) => {
                let got = receiver.recv();
                counters.recv_ring_empty.fetch_add(receiver.take_ring_empty(), Ordering::Relaxed);
                match got {
                    Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                        info!(error = %e, "UDP steering receive: the kernel refused multishot RecvMsg; recvmmsg from now on");
                        epoll.delete(receiver.wake_fd())?;
                        epoll.add(fd, STEER_TOKEN, sys::IN)?;
                        *self = Self::Recvmmsg(sys::RecvBatch::with_datagram_size(MAX_DATAGRAM));
                        self.recv(fd, epoll, counters)
                    }
                    got => got,
                }
            }
        }
    }

    fn received(&self) -> &[sys::Received] {
        match self {
            Self::Uring(receiver) => &receiver.received,
            Self::Recvmmsg(batch) => &batch.received,
        }
    }

    fn payload(&self, i: usize) -> &[u8] {
        match self {
            Self::Uring(receiver) => receiver.payload(i),
            Self::Recvmmsg(batch) => batch.payload(i),
        }
    }
}

/// What a core's UDP work for one family is made of, before its loop takes it ([`UdpWorker::new`] runs on the
/// loop's thread: the io_uring receiver is set up where it is used).
#[derive(Debug)]
pub struct UdpSeed {
    /// The steering socket (in the sockmap's UDP slot of this core and family).
    pub socket: UdpSocket,
    /// Nodes, groups, sniffing and the UDP settings.
    pub cx: Arc<RelayContext>,
    /// Counters of every worker.
    pub counters: Arc<UdpCounters>,
    /// The DNS forwarder's intercept, when it runs.
    pub dns: Option<Arc<Intercept>>,
    /// Interface names.
    pub links: LinkReader,
}

/// One family's UDP work on a core, run by the core's loop ([`super::pump`]): the steering socket's receiver and
/// every session socket are watched in the loop's own epoll set under this worker's token prefix; the loop
/// hands each of their events to [`UdpWorker::on_event`] and calls [`UdpWorker::tick`] on every wake-up (idle
/// sessions are swept every second).
pub struct UdpWorker {
    socket: UdpSocket,
    batch: Steering,
    relay: UdpRelay,
    dns: Option<Arc<Intercept>>,
    links: LinkReader,
    last_sweep: Instant,
}

impl std::fmt::Debug for UdpWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpWorker").field("socket", &self.socket).finish_non_exhaustive()
    }
}

impl UdpWorker {
    /// Opens the steering socket's receiver (io_uring or recvmmsg, as `dae run --udp-recv` asks) and the session
    /// table, watched in `watch`.
    pub fn new(seed: UdpSeed, watch: Watch) -> io::Result<Self> {
        let UdpSeed { socket, cx, counters, dns, links } = seed;
        let relay = UdpRelay::new(cx, counters, watch)?;
        let batch = Steering::open(relay.cx.udp_recv, socket.as_raw_fd(), &relay.epoll)?;
        Ok(Self { socket, batch, relay, dns, links, last_sweep: Instant::now() })
    }

    /// Handles one readiness event of this worker (`token` without the prefix): steered datagrams to the
    /// forwarder or relayed, a session's replies back to its client, an association advanced.
    pub fn on_event(&mut self, token: u64) {
        match token {
            STEER_TOKEN => receive_steered(
                self.socket.as_raw_fd(),
                &mut self.batch,
                &mut self.relay,
                self.dns.as_deref(),
                &mut self.links,
            ),
            WAKE_TOKEN => sys::eventfd_read(self.relay.wake.as_raw_fd()),
            token if self.relay.opening_tokens.borrow().contains_key(&token) => self.relay.on_association_ready(token),
            token => self.relay.read_replies(token),
        }
    }

    /// Ends association attempts past their deadline; sweeps idle sessions once a second.
    pub fn tick(&mut self, now: Instant) {
        if !self.relay.opening.borrow().is_empty() {
            self.relay.check_associations(now);
        }
        if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.last_sweep = now;
            self.relay.expire();
        }
    }
}

/// One batch from the steering socket: DNS to the forwarder (when it runs), the rest relayed.
fn receive_steered(
    fd: std::os::fd::RawFd,
    batch: &mut Steering,
    relay: &mut UdpRelay,
    dns: Option<&Intercept>,
    links: &mut LinkReader,
) {
    let received = match batch.recv(fd, &relay.epoll, &relay.counters) {
        Ok(n) => n,
        Err(e) => {
            if e.kind() != io::ErrorKind::WouldBlock {
                warn!(error = %e, "receiving steered UDP");
            }
            return;
        }
    };
    let mut relayed = Vec::with_capacity(received);
    for i in 0..received {
        let got = batch.received()[i];
        let (Some(client), Some(ip)) = (got.from, got.info.dst) else { continue };
        if got.len == 0 || got.info.dst_port == 0 {
            relay.counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let dst = SocketAddr::new(ip, got.info.dst_port);
        // A merged receive is a run of one flow's datagrams: each is relayed (or forwarded) on its own.
        let datagrams = got.datagrams(batch.payload(i));
        if datagrams.len() > 1 {
            relay.counters.steer_gro_receives.fetch_add(1, Ordering::Relaxed);
        }
        // Port 53 steered without a group decision is DNS (an untagged flow included).
        match (dns, dst.port() == DNS_PORT) {
            (Some(intercept), true) => match relay.tag(client, dst) {
                (_, true) => relayed.extend(datagrams.map(|datagram| (client, dst, datagram))),
                (tag, false) => {
                    for query in datagrams {
                        intercept.submit_udp(client, ip, got.info.ifindex, tag.as_ref(), query, links);
                    }
                }
            },
            _ => relayed.extend(datagrams.map(|datagram| (client, dst, datagram))),
        }
    }
    relay.forward_batch(relayed.into_iter(), links);
}

impl UdpRelay {
    /// An empty session table for one worker.
    pub fn new(cx: Arc<RelayContext>, counters: Arc<UdpCounters>, epoll: Watch) -> io::Result<Self> {
        let wake = Arc::new(sys::eventfd()?);
        epoll.add(wake.as_raw_fd(), WAKE_TOKEN, sys::IN)?;
        Ok(Self {
            cx,
            epoll,
            sessions: RefCell::default(),
            tokens: RefCell::default(),
            opening: RefCell::default(),
            opening_tokens: RefCell::default(),
            wake,
            next_token: Cell::new(0),
            reply_batch: gso::GroBatch::new(REPLY_BATCH, MAX_DATAGRAM),
            reply_sockets: RefCell::default(),
            epoch: Instant::now(),
            quic: QuicSessions::default(),
            routes: HashMap::new(),
            reply_sender: RefCell::new(sys::GsoSender::new(true).with_max_segment(usize::from(u16::MAX))),
            sender: RefCell::new(sys::GsoSender::new(true).with_max_segment(usize::from(u16::MAX))),
            counters,
        })
    }

    /// Sends what the remotes of session `token` answered back to its client, each datagram from the remote's
    /// own address, reading up to [`REPLY_BATCH`] receives per `recvmmsg` until the socket is drained; a socket
    /// error ends the session. Runs of single datagrams from one remote leave in one `sendmmsg`; a merged (GRO)
    /// receive from a direct remote leaves in one GSO send; a SOCKS5 relay's are split and unwrapped.
    fn read_replies(&mut self, token: u64) {
        let Some(key) = self.tokens.borrow().get(&token).copied() else { return };
        let Some(session) = self.sessions.borrow().get(&key).cloned() else { return };
        let fd = session.socket.as_raw_fd();
        loop {
            let (count, bad) = match self.reply_batch.recv(fd) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(client = %session.client, error = %e, "UDP session ended");
                    self.end(token, key);
                    return;
                }
            };
            self.counters.reply_reads.fetch_add(1, Ordering::Relaxed);
            self.counters.dropped.fetch_add(bad as u64, Ordering::Relaxed);
            session.last.store(ms_since(self.epoch), Ordering::Relaxed);
            self.reply_batch_to(&session);
            if count + bad < REPLY_BATCH {
                return;
            }
        }
    }

    /// Sends the last batch read on `session`'s socket back to its client: each run of replies from one remote
    /// leaves in one `sendmmsg`, its same-size stretches (a GRO-merged receive, or single datagrams read in a
    /// row) as GSO messages.
    fn reply_batch_to(&self, session: &Session) {
        let mut run = ReplyRun::default();
        for (got, bytes) in self.reply_batch.received() {
            if got.count() > 1 {
                self.counters.gro_receives.fetch_add(1, Ordering::Relaxed);
            }
            match &session.via {
                Via::Direct => {
                    got.segments(bytes).for_each(|datagram| run.push(self, got.from, datagram, session.client))
                }
                Via::Socks5 { relay, .. } if got.from == *relay => {
                    for datagram in got.segments(bytes) {
                        match socks5::decode_udp_datagram(datagram) {
                            Ok((socks5::Address::Ip(remote), payload)) => {
                                run.push(self, remote, payload, session.client)
                            }
                            _ => self.drop_one(),
                        }
                    }
                }
                Via::Socks5 { .. } => {}
            }
        }
        self.send_run(&mut run, session.client);
    }

    /// Sends `run` to `client` from its remote's address and empties it.
    fn send_run(&self, run: &mut ReplyRun<'_>, client: SocketAddr) {
        let Some(from) = run.from else { return };
        let mut sender = self.reply_sender.borrow_mut();
        let before = sender.gso_messages();
        let sent = self
            .with_reply_socket(from, client, |fd| Ok(sender.send(fd, from.is_ipv6(), &run.datagrams).datagrams))
            .unwrap_or(0);
        self.counters.gso_sends.fetch_add(sender.gso_messages() - before, Ordering::Relaxed);
        self.counters.replied.fetch_add(sent as u64, Ordering::Relaxed);
        self.counters.dropped.fetch_add((run.datagrams.len() - sent) as u64, Ordering::Relaxed);
        run.datagrams.clear();
        run.from = None;
    }

    /// Runs `send` on this worker's transparent socket bound to `from` and connected to `to` (opened on first
    /// use; a full table closes an arbitrary half, so a working set just past the bound does not reopen all).
    fn with_reply_socket<T>(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        send: impl FnOnce(std::os::fd::RawFd) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut sockets = self.reply_sockets.borrow_mut();
        let key = (from, to);
        if !sockets.contains_key(&key) {
            if sockets.len() >= MAX_REPLY_SOCKETS {
                let mut keep = false;
                sockets.retain(|_, _| {
                    keep = !keep;
                    keep
                });
            }
            let socket = reply_socket(from)?;
            socket.set_nonblocking(true)?;
            socket.connect(in_family_of(from, to))?;
            // Nothing is read here (tc hands the client's datagrams to the steering socket), but a device's GRO
            // looks a datagram's addresses up and finds this socket, bound to the remote and connected to the
            // client; one that does not ask for merged receives stops GRO from merging the flow's train, so a
            // flow that got a reply would reach the steering socket one datagram at a time again.
            if self.cx.udp_gro == UdpGro::On
                && let Err(e) = gso::enable_gro(socket.as_raw_fd())
            {
                debug!(error = %e, "UDP_GRO refused on a reply socket: the client's datagrams arrive one by one");
            }
            sockets.insert(key, socket);
        }
        send(sockets[&key].as_raw_fd())
    }

    /// Ends every session idle for its timeout (closing its socket takes it out of the epoll set).
    fn expire(&mut self) {
        let now = ms_since(self.epoch);
        let idle: Vec<(u64, SessionKey)> = self
            .tokens
            .borrow()
            .iter()
            .filter(|(_, key)| {
                self.sessions.borrow().get(key).is_none_or(|session| {
                    now.saturating_sub(session.last.load(Ordering::Relaxed)) >= session.timeout.as_millis() as u64
                })
            })
            .map(|(&token, &key)| (token, key))
            .collect();
        self.counters.expired.fetch_add(idle.len() as u64, Ordering::Relaxed);
        for (token, key) in idle {
            self.end(token, key);
        }
    }

    fn end(&self, token: u64, key: SessionKey) {
        self.tokens.borrow_mut().remove(&token);
        if self.sessions.borrow_mut().remove(&key).is_some() {
            self.counters.active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn key(client: SocketAddr, dst: SocketAddr) -> FlowKey {
        FlowKey::new(client.ip(), client.port(), dst.ip(), dst.port(), libc::IPPROTO_UDP as u8)
    }

    /// The tag of the flow `client -> dst`, and whether the kernel routed it to a proxy group.
    fn tag(&self, client: SocketAddr, dst: SocketAddr) -> (Option<FlowTag>, bool) {
        let tag = self.cx.flows.lookup(&Self::key(client, dst), self.cx.seed);
        let proxied = tag.is_some_and(|tag| (outbound::GROUP_BASE..=outbound::GROUP_MAX).contains(&tag.outbound));
        (tag, proxied)
    }

    /// The kernel's route for `client -> dst`: the node its flow's group picks (none: from the gateway), and
    /// the flow's tag when it was routed to a group (then it may be sniffed).
    fn kernel_route(&self, client: SocketAddr, dst: SocketAddr) -> (Route, Option<FlowTag>) {
        let key = Self::key(client, dst);
        match self.cx.flows.lookup(&key, self.cx.seed) {
            Some(tag) if (outbound::GROUP_BASE..=outbound::GROUP_MAX).contains(&tag.outbound) => {
                match self.cx.group_of(&tag) {
                    Some(group) => (self.pick(group, client, dst), Some(tag)),
                    None => (Route::Drop, None),
                }
            }
            _ => (Route::Via(None), None),
        }
    }

    fn pick(&self, group: &relay::outbound::Group, client: SocketAddr, dst: SocketAddr) -> Route {
        let hash = u64::from(flow_hash(&Self::key(client, dst), self.cx.seed));
        match group.pick(self.cx.outbounds.health(), hash) {
            Ok(node) => Route::Via(Some(node)),
            Err(e) => {
                debug!(%client, %dst, "{e}: datagram dropped");
                self.cx.counters.no_alive_node.fetch_add(1, Ordering::Relaxed);
                Route::Drop
            }
        }
    }

    /// The route a sniffed QUIC `name` gives the flow (`kernel` when the name changes nothing).
    fn sniffed_route(
        &self,
        tag: &FlowTag,
        client: SocketAddr,
        dst: SocketAddr,
        name: &str,
        kernel: Route,
        links: &mut LinkReader,
    ) -> Route {
        self.counters.quic_sniffed.fetch_add(1, Ordering::Relaxed);
        let sniffing = self.cx.sniffing.load();
        let verified = self.cx.name_verified(dst.ip(), name);
        // QUIC keeps the IP as the dial target; only the route can change.
        let decision = decide(sniffing.dial_mode, Transport::Udp, dst, Some(name), verified);
        let Some(name) = decision.reroute else { return kernel };
        let route = match reroute(&self.cx, &sniffing.rules, tag, client, dst, name, L4::Udp, links) {
            Some(Choice::Group(group)) => self.pick(group, client, dst),
            Some(Choice::Direct) => Route::Via(None),
            Some(Choice::Block) => Route::Drop,
            None => kernel,
        };
        if route != kernel {
            self.counters.quic_rerouted.fetch_add(1, Ordering::Relaxed);
            debug!(%client, %dst, name, "QUIC flow re-routed by its sniffed name");
        }
        route
    }

    fn remember(&mut self, flow: (SocketAddr, SocketAddr), route: Route, now: Instant) {
        if self.routes.len() >= MAX_ROUTES {
            self.routes.retain(|_, (_, used)| now.duration_since(*used) < SESSION_TIMEOUT);
            if self.routes.len() >= MAX_ROUTES {
                self.routes.clear();
            }
        }
        self.routes.insert(flow, (route, now));
    }

    /// Relays one batch of datagrams (client, destination, payload). A new proxied flow is first offered to the
    /// QUIC sniffer, which holds its datagrams until the Initial names the server (or gives up, or 2 s pass);
    /// the name may route the flow elsewhere (`dial_mode`, the userspace matcher). Each run of datagrams on one
    /// session leaves in one `sendmmsg`.
    pub fn forward_batch<'p>(
        &mut self,
        datagrams: impl Iterator<Item = (SocketAddr, SocketAddr, &'p [u8])>,
        links: &mut LinkReader,
    ) {
        let now = Instant::now();
        // Payloads stay borrowed from the receive buffers unless the sniffer held them.
        let mut ready: Vec<(SocketAddr, SocketAddr, Cow<'p, [u8]>)> = Vec::new();
        while let Some(((client, dst), release)) = self.quic.poll_expired(now) {
            let (route, _) = self.kernel_route(client, dst);
            self.remember((client, dst), route, now);
            ready.extend(release.map(|datagram| (client, dst, Cow::Owned(datagram))));
        }
        let sniffing = self.cx.sniffing.load();
        let sniff_udp = should_sniff(sniffing.dial_mode, Transport::Udp, 0, false, sniffing.timeout);
        for (client, dst, payload) in datagrams {
            let flow = (client, dst);
            if let Some((_, used)) = self.routes.get_mut(&flow) {
                *used = now;
                ready.push((client, dst, Cow::Borrowed(payload)));
                continue;
            }
            let (kernel, tag) = self.kernel_route(client, dst);
            let Some(tag) = tag.filter(|_| sniff_udp) else {
                self.remember(flow, kernel, now);
                ready.push((client, dst, Cow::Borrowed(payload)));
                continue;
            };
            let verdict = self.quic.on_datagram(flow, payload.to_vec(), now);
            let route = match &verdict.outcome {
                Outcome::NeedMore => continue,
                Outcome::Name { sni, .. } => self.sniffed_route(&tag, client, dst, sni, kernel, links),
                Outcome::NotQuic | Outcome::NoName => kernel,
            };
            self.remember(flow, route, now);
            ready.extend(verdict.release.map(|datagram| (client, dst, Cow::Owned(datagram))));
        }
        self.send(ready);
    }

    /// Sends datagrams on their flows' routes, each run on one session in one `sendmmsg`.
    fn send(&self, datagrams: Vec<(SocketAddr, SocketAddr, Cow<'_, [u8]>)>) {
        let now = ms_since(self.epoch);
        let mut run: Option<Arc<Session>> = None;
        let mut pending: Vec<(SocketAddr, Cow<'_, [u8]>)> = Vec::new();
        for (client, dst, payload) in datagrams {
            let node = match self.routes.get(&(client, dst)) {
                Some((Route::Via(node), _)) => *node,
                _ => {
                    self.drop_one();
                    continue;
                }
            };
            let session = match self.session(client, dst, node) {
                Ok(Lookup::Open(session)) => session,
                Ok(Lookup::Opening) => {
                    match self.opening.borrow_mut().get_mut(&(client, node)) {
                        Some(opening) if opening.queued.len() < MAX_WAITING => {
                            opening.queued.push((dst, payload.into_owned()))
                        }
                        _ => self.drop_one(),
                    }
                    continue;
                }
                Err(e) => {
                    debug!(%client, %dst, error = %e, "no UDP session");
                    self.drop_one();
                    continue;
                }
            };
            if run.as_ref().is_some_and(|current| !Arc::ptr_eq(current, &session)) {
                self.flush(run.take(), &mut pending);
            }
            session.last.store(now, Ordering::Relaxed);
            pending.push(match &session.via {
                Via::Direct => (dst, payload),
                Via::Socks5 { relay, .. } => {
                    let mut datagram = Vec::with_capacity(payload.len() + 22);
                    socks5::encode_udp_header(dst, &mut datagram);
                    datagram.extend_from_slice(&payload);
                    (*relay, Cow::Owned(datagram))
                }
            });
            run = Some(session);
        }
        self.flush(run, &mut pending);
    }

    /// Sends what `pending` holds for `session`: runs of same-size datagrams to one destination in one GSO
    /// message each, the rest datagram by datagram, all in as few `sendmmsg` calls as the kernel takes
    /// ([`sys::GsoSender`], shared with the DNS forwarder).
    fn flush(&self, session: Option<Arc<Session>>, pending: &mut Vec<(SocketAddr, Cow<'_, [u8]>)>) {
        let Some(session) = session else { return };
        let mut sender = self.sender.borrow_mut();
        let before = sender.gso_messages();
        let sent = sender.send(session.socket.as_raw_fd(), session.v6, pending).datagrams;
        self.counters.gso_sends.fetch_add(sender.gso_messages() - before, Ordering::Relaxed);
        self.counters.forwarded.fetch_add(sent as u64, Ordering::Relaxed);
        self.counters.dropped.fetch_add((pending.len() - sent) as u64, Ordering::Relaxed);
        pending.clear();
    }

    fn drop_one(&self) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The session of (`client`, `node`): open, being opened (its SOCKS5 association is on its way: the datagram
    /// waits), or opened now (directly, or through a node whose association starts here).
    fn session(&self, client: SocketAddr, dst: SocketAddr, node: Option<NodeId>) -> io::Result<Lookup> {
        if let Some(session) = self.sessions.borrow().get(&(client, node)) {
            return Ok(Lookup::Open(Arc::clone(session)));
        }
        if self.opening.borrow().contains_key(&(client, node)) {
            return Ok(Lookup::Opening);
        }
        if self.sessions.borrow().len() + self.opening.borrow().len() >= MAX_SESSIONS {
            return Err(io::Error::other("session bound reached"));
        }
        let proxy = match node.map(|id| self.cx.outbounds.node(id)) {
            None | Some(Node::Direct) => return self.open_session(client, dst, node, Via::Direct).map(Lookup::Open),
            Some(Node::Block) => return Err(io::Error::other("blocked")),
            Some(Node::Proxy(proxy)) if proxy.protocol == Protocol::Socks5 => proxy,
            Some(Node::Proxy(_)) => return Err(io::Error::other("an HTTP CONNECT node cannot carry UDP")),
        };
        let mark = self.cx.outbounds.mark();
        let how = match Dialing::associate(proxy, mark)? {
            Some(dialing) => {
                let token = self.next_token();
                self.epoll.add(dialing.stream().as_raw_fd(), token, sys::IN | sys::OUT | libc::EPOLLET as u32)?;
                self.opening_tokens.borrow_mut().insert(token, (client, node));
                Associating::Dialing(Box::new(dialing), token)
            }
            // A proxy named by host name: the system resolver blocks, so the association is opened on a thread.
            None => {
                let (tx, rx) = std::sync::mpsc::channel();
                let (proxy, wake) = (proxy.clone(), Arc::clone(&self.wake));
                std::thread::Builder::new().name("dae-associate".into()).spawn(move || {
                    let _ = tx.send(associate(&proxy, mark, DIAL_TIMEOUT));
                    sys::eventfd_write(wake.as_raw_fd());
                })?;
                Associating::Thread(rx)
            }
        };
        let opening = Opening { how, deadline: Instant::now() + DIAL_TIMEOUT, dst, queued: Vec::new() };
        self.opening.borrow_mut().insert((client, node), opening);
        Ok(Lookup::Opening)
    }

    /// Opens the session of (`client`, `node`) to `dst` (its first destination, which sets its timeout) via `via`.
    fn open_session(
        &self,
        client: SocketAddr,
        dst: SocketAddr,
        node: Option<NodeId>,
        via: Via,
    ) -> io::Result<Arc<Session>> {
        let mark = self.cx.daemon_mark;
        let toward = match &via {
            Via::Direct => dst,
            Via::Socks5 { relay, .. } => *relay,
        };
        let socket = Socket::new(if toward.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 }, Type::DGRAM, None)?;
        if mark != 0 {
            socket.set_mark(mark)?;
        }
        let any = if toward.is_ipv6() { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
        socket.bind(&SocketAddr::new(any, 0).into())?;
        socket.set_nonblocking(true)?;
        sys::size_receive_buffer(socket.as_raw_fd(), SESSION_RECV_BUFFER);
        if self.cx.udp_gro == UdpGro::On
            && let Err(e) = gso::enable_gro(socket.as_raw_fd())
        {
            debug!(error = %e, "UDP_GRO refused: replies read one datagram at a time");
        }
        let socket: UdpSocket = socket.into();
        let timeout = match dst.port() {
            443 => QUIC_TIMEOUT,
            DNS_PORT => DNS_TIMEOUT,
            _ => SESSION_TIMEOUT,
        };
        let token = self.next_token();
        self.epoll.add(socket.as_raw_fd(), token, sys::IN)?;
        let last = AtomicU64::new(ms_since(self.epoch));
        let session = Arc::new(Session { socket, v6: toward.is_ipv6(), via, last, client, timeout });
        self.sessions.borrow_mut().insert((client, node), Arc::clone(&session));
        self.tokens.borrow_mut().insert(token, (client, node));
        self.counters.sessions.fetch_add(1, Ordering::Relaxed);
        self.counters.active.fetch_add(1, Ordering::Relaxed);
        Ok(session)
    }

    fn next_token(&self) -> u64 {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        token
    }

    /// Advances the association being opened under epoll `token` (its control connection is ready).
    fn on_association_ready(&self, token: u64) {
        let Some(key) = self.opening_tokens.borrow().get(&token).copied() else { return };
        let done = match self.opening.borrow_mut().get_mut(&key).map(|opening| &mut opening.how) {
            Some(Associating::Dialing(dialing, _)) => match dialing.poll() {
                Ok(false) => return,
                Ok(true) => Ok(()),
                Err(e) => Err(e),
            },
            _ => return,
        };
        let Some(opening) = self.opening.borrow_mut().remove(&key) else { return };
        self.opening_tokens.borrow_mut().remove(&token);
        let Associating::Dialing(dialing, _) = opening.how else { return };
        let association = done.and_then(|()| dialing.into_association());
        self.opened(key, opening.dst, opening.queued, association);
    }

    /// Looks at the associations opened on threads (the wake eventfd fired) and at every association's deadline.
    fn check_associations(&self, now: Instant) {
        let mut ended: Vec<(SessionKey, io::Result<UdpAssociation>)> = Vec::new();
        for (&key, opening) in self.opening.borrow().iter() {
            let answer = match &opening.how {
                Associating::Thread(rx) => match rx.try_recv() {
                    Ok(answer) => Some(answer),
                    Err(TryRecvError::Disconnected) => Some(Err(io::Error::other("the association thread died"))),
                    Err(TryRecvError::Empty) => None,
                },
                Associating::Dialing(..) => None,
            };
            match answer {
                Some(answer) => ended.push((key, answer)),
                None if now >= opening.deadline => ended.push((
                    key,
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the SOCKS5 proxy did not open the association in time",
                    )),
                )),
                None => {}
            }
        }
        for (key, answer) in ended {
            let Some(opening) = self.opening.borrow_mut().remove(&key) else { continue };
            if let Associating::Dialing(_, token) = opening.how {
                self.opening_tokens.borrow_mut().remove(&token);
            }
            self.opened(key, opening.dst, opening.queued, answer);
        }
    }

    /// An association attempt for `key` ended: the session opens and its waiting datagrams leave, or they are
    /// dropped.
    fn opened(
        &self,
        (client, node): SessionKey,
        dst: SocketAddr,
        queued: Vec<(SocketAddr, Vec<u8>)>,
        association: io::Result<UdpAssociation>,
    ) {
        let session = association.and_then(|association| {
            association.control().set_nonblocking(false)?;
            let via = Via::Socks5 { relay: association.relay(), _association: association };
            self.open_session(client, dst, node, via)
        });
        match session {
            Ok(_) => self.send(queued.into_iter().map(|(dst, payload)| (client, dst, Cow::Owned(payload))).collect()),
            Err(e) => {
                debug!(%client, error = %e, "no SOCKS5 UDP association: the session's datagrams are dropped");
                self.counters.associations_failed.fetch_add(1, Ordering::Relaxed);
                self.counters.dropped.fetch_add(queued.len() as u64, Ordering::Relaxed);
            }
        }
    }
}
