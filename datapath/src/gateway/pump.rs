//! Per-core loops: one pinned thread per core does all of that core's work. It accepts the steered TCP
//! connections of its transparent listeners (the kernel picked the core by flow hash), sets each up — sniff,
//! route, dial ([`super::setup`]) — and then moves bytes both ways until both directions end; and it runs the
//! core's UDP workers ([`super::udp::UdpWorker`]: steering receive, sessions, replies), whose sockets sit in the
//! loop's one epoll set. No thread per connection, per direction, per family or per role.
//!
//! Each loop is an edge-triggered epoll set over non-blocking sockets. A direction moves bytes socket -> socket
//! in one of two ways ([`TcpRelay`], `dae run --tcp-relay`):
//! - `copy` (the default): `read` into the loop's one buffer ([`COPY_BYTES`]), `write` straight on. Where the
//!   write does not take it all (the receiver is behind) the rest moves to a buffer of the direction's own, which
//!   it then reads into until the receiver takes a whole read at once, or lets go of after a quiet second. Measured
//!   faster than splice through the gateway (docs/gateway.md, "Copy against splice"): the upstream socket builds
//!   full-size segments of its own pages (twice splice's bytes per skb, where splice passes on the received
//!   MTU-sized fragments), and presumably the received pages go back to the receiving device at once.
//! - `splice`: socket -> pipe -> socket with splice(2), zero-copy; a direction the kernel refuses to splice
//!   (EINVAL) copies instead.
//!
//! Neither sets `SPLICE_F_MORE` or `MSG_MORE`, so a short write leaves at once (dae's relay adds ~200 ms per short
//! write that way). Back-pressure: a direction reads again only once what it holds (the unwritten rest, or the
//! pipe) is written, so a slow receiver stops reading from a fast sender.
//!
//! Ends: EOF on one side half-closes the other (`shutdown(SHUT_WR)`), so the server may still answer; a reset
//! from a sender is treated the same way once what it sent before is delivered (as dae's relay does: the client
//! gets the server's last bytes and a FIN); a write that fails (the receiver is gone) closes both. A connection
//! with no byte moved for [`IDLE`] is reset, and one with a direction already ended for [`HALF_CLOSED_IDLE`]
//! too, so a peer that vanished holds nothing for ever.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use dns::service::sys::{self, Epoll};
use tracing::warn;

use super::dns::Intercept;
use super::setup::{Advance, Setup};
use super::udp::{self, UdpSeed, UdpWorker};
use super::worker::RelayContext;
use crate::links::{LinkCache, LinkReader};

/// A connection with no byte moved in either direction this long is reset (Xray's `connIdle` default).
pub const IDLE: Duration = Duration::from_secs(300);
/// A connection one of whose directions has ended is reset after this long without a byte moved.
pub const HALF_CLOSED_IDLE: Duration = Duration::from_secs(60);
/// Bytes a direction's pipe holds (the kernel's default is 64 KiB; larger pipes mean fewer system calls per MB).
const PIPE_BYTES: usize = 1 << 20;
/// Each loop's read buffer, and so the most a copying direction holds unwritten. 64 KiB relayed 0.84-1.14x the
/// direct path, 256 KiB 0.92-1.28x, 1 MiB 1.13-1.15x (docs/gateway.md): 256 KiB, the bound on what a connection
/// behind a slow receiver keeps in userspace.
pub const COPY_BYTES: usize = 256 * 1024;

/// How often a loop looks for idle connections (and at most how long it sleeps).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How a loop moves a connection's bytes (`dae run --tcp-relay`, or `DAE_TCP_RELAY`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TcpRelay {
    /// `read` into the loop's buffer and `write` on: one copy each way, no pipe per connection.
    #[default]
    Copy,
    /// splice(2) through a pipe per direction: zero-copy.
    Splice,
}

impl TcpRelay {
    /// The name `--tcp-relay` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Copy => "copy",
            Self::Splice => "splice",
        }
    }
}

/// Counters of every loop.
#[derive(Debug, Default)]
pub struct PumpCounters {
    /// Connections relayed now.
    pub active: AtomicU64,
    /// Bytes moved, both directions.
    pub bytes: AtomicU64,
    /// Connections reset for idleness.
    pub idle_closed: AtomicU64,
    /// Connections that ended with a reset or a failed write on either side.
    pub errors: AtomicU64,
}

/// What a loop is handed.
enum Handoff {
    /// A connection dialled on a thread (see [`super::setup`]): the client's socket and the upstream's.
    Relay(TcpStream, TcpStream),
}

/// What one core's loop serves besides the connections handed to it: the core's transparent listeners (one per
/// family) and its UDP work (one per family).
#[derive(Debug, Default)]
pub struct CoreSockets {
    /// Listeners in the steering sockmap's TCP slots of this core.
    pub listeners: Vec<TcpListener>,
    /// Steering sockets and session tables of this core.
    pub udp: Vec<UdpSeed>,
}

/// How loops that set connections up are made: the relay context, interface names, each core's sockets, the DNS
/// intercept.
type Setting<'a> = (Arc<RelayContext>, &'a LinkCache, Vec<CoreSockets>, Option<Arc<Intercept>>);

/// Connections a listener's readiness accepts at most before the loop turns to other work.
const ACCEPT_BATCH: usize = 64;

/// The loops, one per core.
#[derive(Debug)]
pub struct Pumps {
    /// Per loop: where connections go and the eventfd that wakes it.
    loops: Vec<(Sender<Handoff>, Arc<OwnedFd>)>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Shared by every loop.
    pub counters: Arc<PumpCounters>,
}

impl Pumps {
    /// Starts `count` loops that relay connections dialled elsewhere ([`Pumps::relay`]; the benchmarks and
    /// tests use them so) in `mode`, loop `i` pinned to CPU `i` (when the machine has it).
    pub fn start(count: usize, mode: TcpRelay) -> io::Result<Self> {
        Self::start_with(count, mode, None)
    }

    /// Starts one loop per entry of `cores`, which also accepts from that core's transparent listeners, sets the
    /// connections up with `cx` (reading interface names from `links`; port 53 to `dns` when it runs) and runs
    /// the core's UDP workers: one thread per core does all of that core's work.
    pub fn with_setup(
        cx: Arc<RelayContext>,
        links: &LinkCache,
        cores: Vec<CoreSockets>,
        dns: Option<Arc<Intercept>>,
    ) -> io::Result<Self> {
        let (count, mode) = (cores.len(), cx.tcp_relay);
        tracing::info!("TCP relay: {} ({count} core loops)", mode.name());
        Self::start_with(count, mode, Some((cx, links, cores, dns)))
    }

    fn start_with(count: usize, mode: TcpRelay, setup: Option<Setting<'_>>) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(PumpCounters::default());
        let mut loops = Vec::new();
        let mut threads = Vec::new();
        let (env, cores, dns) = match setup {
            Some((cx, links, cores, dns)) => (Some((cx, links)), cores, dns),
            None => (None, Vec::new(), None),
        };
        let mut cores = cores.into_iter();
        for core in 0..count.max(1) {
            let (tx, rx) = channel();
            let wake = Arc::new(sys::eventfd()?);
            let back = Back { inbox: tx.clone(), wake: Arc::clone(&wake) };
            let env = env.as_ref().map(|(cx, links)| (Arc::clone(cx), links.reader()));
            let CoreSockets { listeners, udp } = cores.next().unwrap_or_default();
            let epoll = Arc::new(Epoll::new()?);
            epoll.add(back.wake.as_raw_fd(), WAKE, sys::IN)?;
            for (i, listener) in listeners.iter().enumerate() {
                listener.set_nonblocking(true)?;
                epoll.add(listener.as_raw_fd(), LISTEN_BASE + i as u64, sys::IN)?;
            }
            let (counters, dns, stop) = (Arc::clone(&counters), dns.clone(), Arc::clone(&stop));
            threads.push(std::thread::Builder::new().name(format!("dae-core-{core}")).spawn(move || {
                let _ = sys::pin_to_cpu(core);
                // The epoll set already watches the wake eventfd and the listeners (under their tokens).
                let mut pump = Pump {
                    epoll,
                    inbox: rx,
                    back,
                    pairs: HashMap::new(),
                    setups: HashMap::new(),
                    deadlines: BinaryHeap::new(),
                    next: 0,
                    counters,
                    env,
                    listeners,
                    udp: Vec::new(),
                    dns,
                    mode,
                    buf: vec![0; COPY_BYTES].into_boxed_slice(),
                };
                // The UDP workers are made here: their io_uring receivers stay on the thread that uses them.
                for seed in udp {
                    if let Err(e) = pump.take_udp(seed) {
                        warn!(error = %e, "UDP worker cannot watch its steering socket");
                    }
                }
                pump.run(&stop);
            })?);
            loops.push((tx, wake));
        }
        Ok(Self { loops, stop, threads, counters })
    }

    /// Relays `client` <-> `upstream`, both connected, on the loop `hash` picks.
    pub fn relay(&self, hash: u64, client: TcpStream, upstream: TcpStream) {
        self.send(hash, Handoff::Relay(client, upstream));
    }

    fn send(&self, hash: u64, handoff: Handoff) {
        let (tx, wake) = &self.loops[(hash % self.loops.len() as u64) as usize];
        if tx.send(handoff).is_ok() {
            sys::eventfd_write(wake.as_raw_fd());
        }
    }
}

impl Drop for Pumps {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (_, wake) in &self.loops {
            sys::eventfd_write(wake.as_raw_fd());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Moves up to `len` bytes from `from` to `to` with splice(2) (one of them a pipe), without blocking.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice between descriptors the caller holds open, no offsets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// Where a direction's bytes wait between its read and its write.
enum Carrier {
    /// A pipe (read end, write end) for splice.
    Pipe(OwnedFd, OwnedFd),
    /// Copying. The buffer is the direction's own while its receiver is behind ([`COPY_BYTES`]; empty, with no
    /// allocation, otherwise): it reads into it, and `held` bytes from `.1` on wait in it.
    Copy(Vec<u8>, usize),
}

/// One direction: bytes read from `from` go to `to`.
struct Direction {
    carrier: Carrier,
    /// Bytes read and not yet written.
    held: usize,
    /// `from` reached EOF.
    eof: bool,
    /// `to` was shut for writing after EOF and everything was written.
    done: bool,
    /// `from` ended with an error (a reset) rather than a FIN.
    reset: bool,
}

/// The two sockets of a connection; direction 0 is client -> upstream, 1 upstream -> client.
struct Pair {
    sockets: [TcpStream; 2],
    directions: [Direction; 2],
    last_moved: Instant,
}

enum Step {
    /// Nothing more can move until the next readiness event.
    Wait,
    /// The connection failed: reset both sides.
    Fail,
}

impl Direction {
    fn new(mode: TcpRelay) -> Self {
        let carrier = match mode {
            TcpRelay::Copy => Carrier::Copy(Vec::new(), 0),
            TcpRelay::Splice => pipe().unwrap_or(Carrier::Copy(Vec::new(), 0)),
        };
        Self { carrier, held: 0, eof: false, done: false, reset: false }
    }

    /// Moves what it can from `from` to `to` without blocking, adding the bytes written to `moved`; a copying
    /// direction reads into `buf`, the loop's buffer.
    fn pump(&mut self, from: &TcpStream, to: &TcpStream, moved: &mut u64, buf: &mut [u8]) -> Step {
        loop {
            if self.held > 0 {
                match self.write(to) {
                    Ok(n) => {
                        self.held -= n;
                        *moved += n as u64;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Step::Fail,
                }
            }
            if self.eof {
                if !self.done {
                    // Half-close: this side finished sending; the other may still answer.
                    let _ = to.shutdown(std::net::Shutdown::Write);
                    self.done = true;
                }
                return Step::Wait;
            }
            let read = match &mut self.carrier {
                Carrier::Pipe(_, w) => splice(from.as_raw_fd(), w.as_raw_fd(), PIPE_BYTES),
                Carrier::Copy(own, _) if !own.is_empty() => io::Read::read(&mut &*from, own),
                Carrier::Copy(..) => io::Read::read(&mut &*from, buf),
            };
            match read {
                Ok(0) => self.eof = true,
                Ok(n) => match &mut self.carrier {
                    Carrier::Pipe(..) => self.held = n,
                    Carrier::Copy(own, at) => {
                        let behind = !own.is_empty();
                        let written = match write_now(to, if behind { &own[..n] } else { &buf[..n] }) {
                            Ok(written) => written,
                            Err(_) => return Step::Fail,
                        };
                        *moved += written as u64;
                        if written < n {
                            // The receiver is behind: keep the rest (in a buffer of the direction's own, which
                            // it reads into until the receiver takes a whole read at once), read no more until
                            // it is written.
                            if !behind {
                                let mut mine = vec![0; COPY_BYTES];
                                mine[written..n].copy_from_slice(&buf[written..n]);
                                *own = mine;
                            }
                            (*at, self.held) = (written, n - written);
                            return Step::Wait;
                        }
                        if behind {
                            // Caught up: the loop's buffer serves again.
                            *own = Vec::new();
                        }
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && matches!(self.carrier, Carrier::Pipe(..)) => {
                    // These sockets cannot splice: copy through userspace from now on (nothing is held).
                    self.carrier = Carrier::Copy(Vec::new(), 0);
                }
                Err(_) => {
                    // The sender reset: what it sent before is delivered, then a FIN (as dae's relay does).
                    self.eof = true;
                    self.reset = true;
                }
            }
        }
    }

    /// Frees a copying direction's own buffer if nothing waits in it.
    fn release(&mut self) {
        if self.held == 0
            && let Carrier::Copy(own, at) = &mut self.carrier
        {
            (*own, *at) = (Vec::new(), 0);
        }
    }

    /// Writes some of what the direction holds.
    fn write(&mut self, to: &TcpStream) -> io::Result<usize> {
        match &mut self.carrier {
            Carrier::Pipe(r, _) => splice(r.as_raw_fd(), to.as_raw_fd(), self.held),
            Carrier::Copy(own, at) => {
                let n = io::Write::write(&mut &*to, &own[*at..*at + self.held])?;
                *at += n;
                Ok(n)
            }
        }
    }
}

/// A pipe of [`PIPE_BYTES`] for a splicing direction; `None` if the process has no descriptors left.
fn pipe() -> Option<Carrier> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return None;
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on our pipe; failure only leaves the default size.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES as libc::c_int) };
    Some(Carrier::Pipe(r, w))
}

/// Writes as much of `bytes` to `to` as it takes now: the count written (short when its buffer is full).
fn write_now(to: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match io::Write::write(&mut &*to, &bytes[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// The way back into a loop, for a dial that ran on a thread.
#[derive(Clone)]
struct Back {
    inbox: Sender<Handoff>,
    wake: Arc<OwnedFd>,
}

/// One core's loop.
struct Pump {
    /// The loop's one epoll set (its UDP workers watch their sockets here too).
    epoll: Arc<Epoll>,
    inbox: Receiver<Handoff>,
    back: Back,
    pairs: HashMap<u64, Pair>,
    /// Connections being set up.
    setups: HashMap<u64, Setup>,
    /// Set-up deadlines (stale entries are skipped: a set-up's deadline moves, or it ends).
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    next: u64,
    counters: Arc<PumpCounters>,
    /// What sets connections up; none in loops that only relay.
    env: Option<(Arc<RelayContext>, LinkReader)>,
    /// The core's transparent listeners (epoll token `LISTEN_BASE + i`).
    listeners: Vec<TcpListener>,
    /// The core's UDP work (epoll tokens `UDP_BIT | i << 56 | token`).
    udp: Vec<UdpWorker>,
    /// Where DNS over TCP goes, when the forwarder runs.
    dns: Option<Arc<Intercept>>,
    /// How connections' bytes move.
    mode: TcpRelay,
    /// What copying directions read into ([`COPY_BYTES`]; its pages are touched only once used).
    buf: Box<[u8]>,
}

/// The epoll token of the eventfd; pairs and set-ups use `id << 1 | side` (0 the client, 1 the upstream).
const WAKE: u64 = u64::MAX;
/// The epoll tokens of the listeners (`LISTEN_BASE + i`, a few).
const LISTEN_BASE: u64 = u64::MAX - 16;
/// The epoll tokens of UDP worker `i`'s descriptors: `UDP_BIT | i << 56 | token` (token below
/// [`udp::TOKEN_SPACE`]); pair and set-up ids never reach bit 62.
const UDP_BIT: u64 = 1 << 62;

impl Pump {
    /// Runs a UDP worker made of `seed` from now on (on this loop's thread), its descriptors in this loop's set.
    fn take_udp(&mut self, seed: UdpSeed) -> io::Result<()> {
        let prefix = UDP_BIT | ((self.udp.len() as u64) * udp::TOKEN_SPACE);
        let worker = UdpWorker::new(seed, udp::Watch { epoll: Arc::clone(&self.epoll), prefix })?;
        self.udp.push(worker);
        Ok(())
    }

    /// Accepts what listener `i` has queued (at most [`ACCEPT_BATCH`]; the rest on the next turn) and sets each
    /// connection up here.
    fn accept_ready(&mut self, i: usize, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            let Some(listener) = self.listeners.get(i) else { return };
            match listener.accept() {
                Ok((client, peer)) => {
                    let links = self.env.as_ref().map(|(_, links)| links);
                    let taken = match links {
                        Some(links) => super::worker::accepted(client, peer, self.dns.as_ref(), links),
                        None => Some((client, peer)),
                    };
                    if let Some((client, peer)) = taken {
                        self.begin(client, peer, now);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, say: the connection stays queued; try again on the next turn.
                    warn!(error = %e, "accept");
                    return;
                }
            }
        }
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut last_sweep = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let n = self.epoll.wait(&mut events, self.timeout_ms(Instant::now())).unwrap_or(0);
            let now = Instant::now();
            for event in &events[..n] {
                // A copy: epoll_event is packed.
                let token = event.u64;
                match token {
                    WAKE => self.take_new(now),
                    LISTEN_BASE.. => self.accept_ready((token - LISTEN_BASE) as usize, now),
                    _ if token & UDP_BIT != 0 => {
                        let worker = ((token & !UDP_BIT) / udp::TOKEN_SPACE) as usize;
                        if let Some(udp) = self.udp.get_mut(worker) {
                            udp.on_event(token % udp::TOKEN_SPACE);
                        }
                    }
                    _ if self.pairs.contains_key(&(token >> 1)) => self.progress(token >> 1, now),
                    _ => self.set_up(token >> 1, now),
                }
            }
            for udp in &mut self.udp {
                udp.tick(now);
            }
            self.expire_setups(now);
            if now.duration_since(last_sweep) >= SWEEP_EVERY {
                last_sweep = now;
                self.sweep(now);
            }
        }
        for (_, pair) in self.pairs.drain() {
            reset(&pair);
            self.counters.active.fetch_sub(1, Ordering::Relaxed);
        }
        for (_, setup) in self.setups.drain() {
            super::worker::refuse(setup.client());
        }
    }

    /// How long to sleep: until the next set-up deadline, at most [`SWEEP_EVERY`].
    fn timeout_ms(&self, now: Instant) -> i32 {
        let next = self.deadlines.peek().map_or(SWEEP_EVERY, |Reverse((at, _))| at.saturating_duration_since(now));
        // Rounded up, so that a wake-up finds the deadline passed.
        next.min(SWEEP_EVERY).as_micros().div_ceil(1000) as i32
    }

    /// Advances every set-up whose deadline has passed.
    fn expire_setups(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if self.setups.get(&id).is_some_and(|setup| setup.deadline() <= now) {
                self.set_up(id, now);
            }
        }
    }

    /// Starts setting up a steered connection.
    fn begin(&mut self, client: TcpStream, peer: SocketAddr, now: Instant) {
        let Some((cx, links)) = &mut self.env else {
            warn!(%peer, "a relay-only loop was handed a connection to set up");
            return;
        };
        let id = self.next;
        self.next += 1;
        match Setup::begin(cx, client, peer, links, now) {
            Ok((setup, advance)) => {
                // Edge-triggered: every new segment from the client is an event (the sniffer only peeks).
                if let Err(e) = self.epoll.add(setup.client().as_raw_fd(), id << 1, sys::IN | libc::EPOLLET as u32) {
                    warn!(error = %e, "relay loop could not watch a connection");
                    super::worker::refuse(setup.client());
                    return;
                }
                self.setups.insert(id, setup);
                self.after(id, advance, now);
            }
            Err(e) => warn!(error = %e, "relay loop could not take a connection"),
        }
    }

    /// Advances set-up `id` on an event or at its deadline.
    fn set_up(&mut self, id: u64, now: Instant) {
        let (Some(setup), Some((cx, links))) = (self.setups.get_mut(&id), &mut self.env) else { return };
        let advance = setup.advance(cx, links, now);
        self.after(id, advance, now);
    }

    /// Acts on what a set-up step came to: keep waiting (watching a new upstream socket, re-arming the
    /// deadline), forget it, relay it, or dial it on a thread.
    fn after(&mut self, id: u64, advance: Advance, now: Instant) {
        match advance {
            Advance::Wait => {
                let Some(setup) = self.setups.get(&id) else { return };
                if let Some(upstream) = setup.upstream() {
                    // Watch the socket being dialled: modify re-arms one already in the set (harmless: at worst
                    // one more event), add covers a new one (the first, or a new socket for the next address).
                    let (fd, events) = (upstream.as_raw_fd(), sys::IN | sys::OUT | libc::EPOLLET as u32);
                    if self.epoll.modify(fd, id << 1 | 1, events).is_err()
                        && self.epoll.add(fd, id << 1 | 1, events).is_err()
                    {
                        warn!("relay loop could not watch a dial");
                    }
                }
                self.deadlines.push(Reverse((setup.deadline(), id)));
            }
            Advance::Ended => {
                self.setups.remove(&id);
            }
            Advance::Relay(upstream) => {
                let Some(setup) = self.setups.remove(&id) else { return };
                let client = setup.into_client();
                // Both join the set again under the pair's token (the upstream may not be in it yet: a dial that
                // finished at once).
                let _ = self.epoll.delete(client.as_raw_fd());
                let _ = self.epoll.delete(upstream.as_raw_fd());
                if let Err(e) = self.adopt(client, upstream, now) {
                    warn!(error = %e, "relay loop could not take a connection");
                }
            }
            Advance::Blocking(dial) => {
                let Some(setup) = self.setups.remove(&id) else { return };
                let client = setup.into_client();
                let _ = self.epoll.delete(client.as_raw_fd());
                let Some((cx, _)) = &self.env else { return };
                let (cx, back) = (Arc::clone(cx), self.back.clone());
                let spawned = std::thread::Builder::new().name("dae-dial".into()).spawn(move || {
                    if let Some(upstream) = dial.run(&cx, &client)
                        && back.inbox.send(Handoff::Relay(client, upstream)).is_ok()
                    {
                        sys::eventfd_write(back.wake.as_raw_fd());
                    }
                });
                if let Err(e) = spawned {
                    warn!(error = %e, "cannot start a thread for a dial");
                }
            }
        }
    }

    fn take_new(&mut self, now: Instant) {
        sys::eventfd_read(self.back.wake.as_raw_fd());
        while let Ok(handoff) = self.inbox.try_recv() {
            match handoff {
                Handoff::Relay(client, upstream) => {
                    if let Err(e) = self.adopt(client, upstream, now) {
                        warn!(error = %e, "relay loop could not take a connection");
                    }
                }
            }
        }
    }

    fn adopt(&mut self, client: TcpStream, upstream: TcpStream, now: Instant) -> io::Result<()> {
        client.set_nonblocking(true)?;
        upstream.set_nonblocking(true)?;
        let id = self.next;
        self.next += 1;
        let events = sys::IN | sys::OUT | libc::EPOLLET as u32;
        self.epoll.add(client.as_raw_fd(), id << 1, events)?;
        self.epoll.add(upstream.as_raw_fd(), id << 1 | 1, events)?;
        let pair = Pair {
            sockets: [client, upstream],
            directions: [Direction::new(self.mode), Direction::new(self.mode)],
            last_moved: now,
        };
        self.pairs.insert(id, pair);
        self.counters.active.fetch_add(1, Ordering::Relaxed);
        // Bytes may have arrived before the sockets joined the set (and the sniffer only peeked).
        self.progress(id, now);
        Ok(())
    }

    /// Moves what both directions of pair `id` can move; ends the pair when both are done or one failed.
    fn progress(&mut self, id: u64, now: Instant) {
        let Some(pair) = self.pairs.get_mut(&id) else { return };
        let buf = &mut self.buf;
        let mut moved = 0;
        let mut failed = false;
        for d in 0..2 {
            let (from, to) = (&pair.sockets[d], &pair.sockets[1 - d]);
            if let Step::Fail = pair.directions[d].pump(from, to, &mut moved, buf) {
                failed = true;
                break;
            }
        }
        if moved > 0 {
            pair.last_moved = now;
            self.counters.bytes.fetch_add(moved, Ordering::Relaxed);
        }
        let finished = pair.directions.iter().all(|d| d.done);
        if failed || finished {
            if failed || pair.directions.iter().any(|d| d.reset) {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            self.end(id, false);
        }
    }

    /// Removes pair `id` and closes both sockets: after an orderly end every FIN was already sent; after a write
    /// failed (its receiver is gone) the kernel resets whatever still holds unread bytes. `reset_both` resets
    /// both (idleness, shutdown).
    fn end(&mut self, id: u64, reset_both: bool) {
        if let Some(pair) = self.pairs.remove(&id) {
            if reset_both {
                reset(&pair);
            }
            self.counters.active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn sweep(&mut self, now: Instant) {
        let mut idle = Vec::new();
        for (&id, pair) in &mut self.pairs {
            let quiet = now.duration_since(pair.last_moved);
            if quiet >= SWEEP_EVERY {
                // A direction whose receiver was behind keeps its buffer while bytes flow; one gone quiet lets go.
                pair.directions.iter_mut().for_each(Direction::release);
            }
            let limit = if pair.directions.iter().any(|d| d.eof) { HALF_CLOSED_IDLE } else { IDLE };
            if quiet >= limit {
                idle.push(id);
            }
        }
        for id in idle {
            self.counters.idle_closed.fetch_add(1, Ordering::Relaxed);
            self.end(id, true);
        }
    }
}

/// Closes both sockets of `pair` with an RST rather than a FIN (SO_LINGER 0), so neither peer waits for data
/// that will never come.
fn reset(pair: &Pair) {
    for socket in &pair.sockets {
        let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use bench_lab::traffic::pattern;

    use super::{Pumps, TcpRelay};

    const MODES: [TcpRelay; 2] = [TcpRelay::Copy, TcpRelay::Splice];

    /// A client and a server on loopback, the connection between them relayed by `pumps`.
    fn relayed(pumps: &Pumps) -> (TcpStream, TcpStream) {
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let back = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(front.local_addr().unwrap()).unwrap();
        let (accepted, _) = front.accept().unwrap();
        let upstream = TcpStream::connect(back.local_addr().unwrap()).unwrap();
        let (server, _) = back.accept().unwrap();
        pumps.relay(0, accepted, upstream);
        (client, server)
    }

    #[test]
    fn every_byte_arrives_in_order_both_ways_and_a_half_close_carries_the_answer_back() {
        for mode in MODES {
            let pumps = Pumps::start(1, mode).unwrap();
            let (mut client, mut server) = relayed(&pumps);
            let (request, answer) = (pattern(8 << 20, 1), pattern(3 << 20, 2));
            let sent = request.clone();
            let writer = std::thread::spawn(move || {
                client.write_all(&sent).unwrap();
                client.shutdown(Shutdown::Write).unwrap();
                let mut back = Vec::new();
                client.read_to_end(&mut back).unwrap();
                back
            });
            let mut got = Vec::new();
            server.read_to_end(&mut got).unwrap();
            assert!(got == request, "{mode:?}: {} of {} bytes, or not in order", got.len(), request.len());
            // The client's EOF arrived; the server answers over the half-closed connection, then closes.
            server.write_all(&answer).unwrap();
            drop(server);
            let back = writer.join().unwrap();
            assert!(
                back == answer,
                "{mode:?}: the answer after the half-close: {} of {} bytes",
                back.len(),
                answer.len()
            );
        }
    }

    #[test]
    fn a_receiver_that_reads_nothing_stops_the_sender_and_then_gets_every_byte() {
        let sysctl_max = |name: &str| -> usize {
            let text = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).unwrap();
            text.split_whitespace().last().unwrap().parse().unwrap()
        };
        // Without back-pressure the relay would take all of it; with it the sender stops once the socket
        // buffers on the way (the client's send buffer, the relay's two sockets, the server's receive buffer,
        // each at most its sysctl maximum) and what the relay holds (its pipe or read buffer) are full.
        const OFFERED: usize = 1 << 30;
        let bound = 2 * (sysctl_max("tcp_rmem") + sysctl_max("tcp_wmem")) + super::PIPE_BYTES + super::COPY_BYTES;
        assert!(bound < OFFERED / 4, "sysctl buffers too large for this test: {bound}");
        for mode in MODES {
            let pumps = Pumps::start(1, mode).unwrap();
            let (mut client, mut server) = relayed(&pumps);
            client.set_nonblocking(true).unwrap();
            let chunk = pattern(64 << 10, 3);
            let (mut sent, mut progress) = (0, Instant::now());
            while sent < OFFERED && progress.elapsed() < Duration::from_millis(500) {
                match client.write(&chunk[sent % chunk.len()..]) {
                    Ok(n) => {
                        sent += n;
                        progress = Instant::now();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("{mode:?}: {e}"),
                }
            }
            assert!(sent <= bound, "{mode:?}: the sender got {sent} bytes away with nobody reading (bound {bound})");
            assert!(sent >= chunk.len(), "{mode:?}: the sender could not send at all");
            // Now the receiver reads: every byte the sender got away arrives, none lost while held.
            client.shutdown(Shutdown::Write).unwrap();
            let mut got = Vec::new();
            server.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            server.read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), sent, "{mode:?}");
            assert!(got.chunks(chunk.len()).all(|c| c == &chunk[..c.len()]), "{mode:?}: bytes out of order");
        }
    }

    #[test]
    fn short_writes_are_relayed_at_once() {
        // A request / answer exchange of small writes: a relay that held a short write back for more (as
        // `SPLICE_F_MORE` or `MSG_MORE` make the kernel do, ~200 ms each) would take seconds.
        const ROUNDS: usize = 20;
        for mode in MODES {
            let pumps = Pumps::start(1, mode).unwrap();
            let (mut client, mut server) = relayed(&pumps);
            let echo = std::thread::spawn(move || {
                let mut buf = [0u8; 100];
                for _ in 0..ROUNDS {
                    server.read_exact(&mut buf).unwrap();
                    server.write_all(&buf).unwrap();
                }
            });
            let start = Instant::now();
            let mut buf = [0u8; 100];
            for round in 0..ROUNDS {
                client.write_all(&[round as u8; 100]).unwrap();
                client.read_exact(&mut buf).unwrap();
                assert_eq!(buf, [round as u8; 100], "{mode:?}");
            }
            let took = start.elapsed();
            echo.join().unwrap();
            assert!(took < Duration::from_secs(2), "{mode:?}: {ROUNDS} round trips of 100 bytes took {took:?}");
        }
    }
}
