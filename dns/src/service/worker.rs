//! One worker thread: an epoll loop that owns its listener sockets (SO_REUSEPORT), its upstream sockets and
//! connections and its [`Core`]. Nothing on the per-query path takes a lock: the core is the thread's own,
//! counters are published every [`STATS_EVERY`], domain updates leave through a bounded channel with
//! `try_send`.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use config::InterfacePattern;
use config::dns::PacketDirection;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::doh;
use super::sys::{self, Epoll, GsoSender, Outgoing, RecvBatch};
use super::{AnswerSink, Control, INTERCEPTED, Intercepted, WorkerStats};
use crate::core::{ClientAddr, ConnId, Core, Handled, Output, QueryContext, SocketId};

mod clients;
mod moderation;
mod upstreams;

use moderation::Moderation;

/// How often a worker publishes its counters.
pub const STATS_EVERY: Duration = Duration::from_millis(200);
/// The longest a worker sleeps, so it sees `stop` promptly.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// Receive buffer of listener and upstream sockets (see [`sys::size_receive_buffer`]).
pub const SOCKET_BUFFER: usize = 8 << 20;
/// TCP clients one worker serves at once; more are closed at accept.
const MAX_TCP_CLIENTS: usize = 1024;
/// A TCP client idle this long is closed (RFC 7766 suggests seconds).
const TCP_CLIENT_IDLE: Duration = Duration::from_secs(10);
/// Unwritten answer bytes one TCP client may have before it is dropped as too slow.
const MAX_CLIENT_BACKLOG: usize = 1 << 20;
/// Recv batches per readable event before other sockets get a turn.
const MAX_BATCHES_PER_EVENT: usize = 8;
/// How long an ifindex -> name entry is trusted (links are renamed and re-created).
const IFNAME_TTL: Duration = Duration::from_secs(2);

const KIND_SHIFT: u32 = 56;
const KIND_UDP_LISTENER: u64 = 1;
const KIND_TCP_LISTENER: u64 = 2;
const KIND_TCP_CLIENT: u64 = 3;
const KIND_UP_UDP: u64 = 4;
const KIND_UP_TCP: u64 = 5;
const KIND_DOH: u64 = 6;
const KIND_INTERCEPT: u64 = 7;
/// Intercepted queries handled per wake-up before sockets get a turn.
const MAX_INTERCEPTED_PER_EVENT: usize = 256;
const SLOT_MASK: u64 = (1 << KIND_SHIFT) - 1;

fn token(kind: u64, slot: u64) -> u64 {
    kind << KIND_SHIFT | (slot & SLOT_MASK)
}

/// A listener given to a worker.
pub(crate) enum Listener {
    Udp(UdpSocket),
    Tcp(TcpListener),
}

pub(crate) struct WorkerInit {
    pub core: Core,
    pub listeners: Vec<Listener>,
    pub lan: Arc<Vec<InterfacePattern>>,
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<Mutex<WorkerStats>>,
    pub domains: Option<SyncSender<crate::core::DomainUpdate>>,
    pub control: Receiver<Control>,
    pub cpu: Option<usize>,
    pub uses_interface: bool,
    pub coalesce: Duration,
    pub gso: bool,
    pub tls: Arc<rustls::ClientConfig>,
    pub mark: u32,
    pub index: usize,
    pub doh: Option<(tokio::sync::mpsc::Sender<doh::Command>, doh::Inbox)>,
    pub intercept: Option<(std::sync::mpsc::Receiver<Intercepted>, Arc<doh::EventFd>, AnswerSink)>,
}

struct UpUdp {
    id: SocketId,
    socket: UdpSocket,
    queue: Vec<Outgoing>,
    sender: GsoSender,
}

/// A UDP listener's answers waiting for the end of the loop turn, and how they leave.
struct AnswerQueue {
    queue: Vec<Outgoing>,
    sender: GsoSender,
    v6: bool,
    /// Bound to a wildcard address: answers carry the source address the query was sent to.
    wildcard: bool,
}

struct UpTcp {
    id: ConnId,
    stream: TcpStream,
    /// TCP connect (and for TLS, the handshake) not finished yet.
    connecting: bool,
    /// Plaintext bytes not yet written (plain TCP).
    wbuf: Vec<u8>,
    /// DNS over TLS: the session; plaintext goes through it.
    tls: Option<Box<rustls::ClientConnection>>,
}

struct Client {
    generation: u32,
    stream: TcpStream,
    peer: SocketAddr,
    local: Option<IpAddr>,
    interface: Option<String>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    last: Instant,
}

struct Worker {
    core: Core,
    epoll: Epoll,
    listeners: Vec<Listener>,
    /// Per listener (TCP ones hold an unused queue).
    answers: Vec<AnswerQueue>,
    uses_interface: bool,
    coalesce: Duration,
    /// Runs of datagrams to one destination leave as UDP GSO sends.
    gso: bool,
    up_udp: HashMap<u32, UpUdp>,
    up_tcp: HashMap<u32, UpTcp>,
    clients: Vec<Option<Client>>,
    client_gens: Vec<u32>,
    lan: Arc<Vec<InterfacePattern>>,
    ifnames: HashMap<u32, (Option<String>, Instant)>,
    batch: RecvBatch,
    reply: Vec<u8>,
    pool: Vec<Vec<u8>>,
    domains: Option<SyncSender<crate::core::DomainUpdate>>,
    stats: Arc<Mutex<WorkerStats>>,
    local: WorkerStats,
    control: Receiver<Control>,
    read_buf: Vec<u8>,
    tls: Arc<rustls::ClientConfig>,
    /// SO_MARK of upstream sockets (0: none).
    mark: u32,
    index: usize,
    doh: Option<(tokio::sync::mpsc::Sender<doh::Command>, doh::Inbox)>,
    /// Queries handed over by the datapath, the eventfd that announces them, where their answers go.
    intercept: Option<(std::sync::mpsc::Receiver<Intercepted>, Arc<doh::EventFd>, AnswerSink)>,
    /// DoH sessions by connection slot (they live on the DoH thread).
    doh_conns: HashMap<u32, ConnId>,
}

pub(crate) fn run(init: WorkerInit) -> io::Result<()> {
    if let Some(cpu) = init.cpu {
        let _ = sys::pin_to_cpu(cpu);
    }
    let epoll = Epoll::new()?;
    let mut answers = Vec::new();
    for (index, listener) in init.listeners.iter().enumerate() {
        match listener {
            Listener::Udp(socket) => {
                epoll.add(socket.as_raw_fd(), token(KIND_UDP_LISTENER, index as u64), sys::IN)?;
                let local = socket.local_addr()?;
                answers.push(AnswerQueue {
                    queue: Vec::new(),
                    sender: GsoSender::new(init.gso),
                    v6: local.is_ipv6(),
                    wildcard: local.ip().is_unspecified(),
                });
            }
            Listener::Tcp(socket) => {
                epoll.add(socket.as_raw_fd(), token(KIND_TCP_LISTENER, index as u64), sys::IN)?;
                answers.push(AnswerQueue {
                    queue: Vec::new(),
                    sender: GsoSender::new(false),
                    v6: false,
                    wildcard: false,
                });
            }
        }
    }
    let mut worker = Worker {
        core: init.core,
        epoll,
        listeners: init.listeners,
        answers,
        up_udp: HashMap::new(),
        up_tcp: HashMap::new(),
        clients: Vec::new(),
        client_gens: Vec::new(),
        lan: init.lan,
        uses_interface: init.uses_interface,
        coalesce: init.coalesce,
        gso: init.gso,
        ifnames: HashMap::new(),
        batch: RecvBatch::new(),
        reply: Vec::with_capacity(512),
        pool: Vec::new(),
        domains: init.domains,
        stats: init.stats,
        local: WorkerStats::default(),
        control: init.control,
        read_buf: vec![0u8; 64 * 1024],
        tls: init.tls,
        mark: init.mark,
        index: init.index,
        doh: init.doh,
        intercept: init.intercept,
        doh_conns: HashMap::new(),
    };
    if let Some((_, wake, _)) = &worker.intercept {
        worker.epoll.add(wake.raw(), token(KIND_INTERCEPT, 0), sys::IN)?;
    }
    if let Some((_, inbox)) = &worker.doh {
        worker.epoll.add(inbox.wake.raw(), token(KIND_DOH, 0), sys::IN)?;
    }
    worker.run(&init.stop)
}

impl Worker {
    fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut last_stats = Instant::now();
        let cpu_start = sys::thread_cpu_time();
        let mut moderation = Moderation::new(self.coalesce, Instant::now());
        let mut last_in = 0;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let sleep =
                self.core.poll_timeout().map_or(MAX_SLEEP, |at| at.saturating_duration_since(now)).min(MAX_SLEEP);
            let timeout_ms = if sleep.is_zero() { 0 } else { sleep.as_millis().max(1) as i32 };
            let n = self.epoll.wait(&mut events, timeout_ms)?;
            self.local.wakeups += 1;
            let now = Instant::now();
            for event in &events[..n] {
                let (kind, slot) = (event.u64 >> KIND_SHIFT, event.u64 & SLOT_MASK);
                let flags = event.events;
                match kind {
                    KIND_UDP_LISTENER => self.listener_readable(slot as usize, now),
                    KIND_TCP_LISTENER => self.accept(slot as usize, now),
                    KIND_TCP_CLIENT => self.client_event(slot as usize, flags, now),
                    KIND_UP_UDP => self.upstream_udp_readable(slot as u32, now),
                    KIND_UP_TCP => self.upstream_tcp_event(slot as u32, flags, now),
                    KIND_DOH => self.doh_events(now),
                    KIND_INTERCEPT => self.intercepted(now),
                    _ => {}
                }
            }
            self.core.handle_timeout(now);
            self.apply_controls();
            self.drain(now);
            let arrived = self.local.datagrams_in - last_in;
            last_in = self.local.datagrams_in;
            // Interrupt moderation (worker/moderation.rs): the answers of this turn are already sent; a short
            // pause lets the next few queries queue so they share one wake-up and one send.
            if let Some(pause) = moderation.after_turn(now, arrived, self.core.in_flight() == 0) {
                std::thread::sleep(pause);
            }
            if now.duration_since(last_stats) >= STATS_EVERY {
                last_stats = now;
                self.expire_clients(now);
                self.local.core = self.core.stats();
                self.local.cache = self.core.cache_stats();
                self.local.cpu = sys::thread_cpu_time().saturating_sub(cpu_start);
                if let Ok(mut shared) = self.stats.lock() {
                    *shared = self.local;
                }
            }
        }
        Ok(())
    }

    fn apply_controls(&mut self) {
        while let Ok(control) = self.control.try_recv() {
            match control {
                Control::SetUpstream(id, addr) => self.core.set_upstream_addr(id, addr),
            }
        }
    }

    fn interface_of(&mut self, ifindex: u32, now: Instant) -> Option<String> {
        if ifindex == 0 {
            return None;
        }
        if let Some((name, at)) = self.ifnames.get(&ifindex)
            && now.duration_since(*at) < IFNAME_TTL
        {
            return name.clone();
        }
        let name = sys::if_indextoname(ifindex);
        self.ifnames.insert(ifindex, (name.clone(), now));
        name
    }

    fn direction_of(&self, interface: Option<&str>) -> Option<PacketDirection> {
        let name = interface?;
        self.lan.iter().any(|pattern| pattern.matches(name)).then_some(PacketDirection::LanIn)
    }

    fn listener_readable(&mut self, index: usize, now: Instant) {
        let Some(Listener::Udp(socket)) = self.listeners.get(index) else { return };
        let fd = socket.as_raw_fd();
        let wildcard = self.answers[index].wildcard;
        for _ in 0..MAX_BATCHES_PER_EVENT {
            let count = match self.batch.recv(fd) {
                Ok(0) | Err(_) => break,
                Ok(count) => count,
            };
            self.local.datagrams_in += count as u64;
            for i in 0..count {
                let received = self.batch.received[i];
                let Some(peer) = received.from else { continue };
                if received.len == 0 {
                    continue;
                }
                // Interfaces matter only to `interface(...)` rules: no name lookup otherwise.
                let interface = if self.uses_interface { self.interface_of(received.info.ifindex, now) } else { None };
                let direction = self.direction_of(interface.as_deref());
                let client = ClientAddr {
                    peer,
                    local: received.info.dst,
                    ifindex: received.info.ifindex,
                    listener: index as u32,
                    tcp: None,
                };
                let cx = QueryContext { client, direction, interface: interface.as_deref(), original_dst: None };
                let message = self.batch.payload(i);
                if self.core.handle_query(now, message, &cx, &mut self.reply) == Handled::Answered {
                    let payload = std::mem::replace(&mut self.reply, self.pool.pop().unwrap_or_default());
                    let from = received.info.dst.filter(|_| wildcard).map(|ip| (ip, received.info.ifindex));
                    self.answers[index].queue.push(Outgoing { payload, to: Some(peer), from });
                }
            }
            if count < sys::BATCH {
                break;
            }
        }
    }

    /// Queries the datapath intercepted (tproxy, port 53), with the interface and direction of their flow tag.
    fn intercepted(&mut self, now: Instant) {
        let Some((queue, wake, sink)) = &self.intercept else { return };
        wake.drain();
        let mut taken = 0;
        for query in queue.try_iter().take(MAX_INTERCEPTED_PER_EVENT) {
            taken += 1;
            let client = ClientAddr { listener: INTERCEPTED, ..query.client };
            let cx = QueryContext {
                client,
                direction: query.direction,
                interface: query.interface.as_deref(),
                original_dst: query.original_dst,
            };
            if self.core.handle_query(now, &query.message, &cx, &mut self.reply) == Handled::Answered {
                sink(client, &self.reply);
            }
        }
        if taken == MAX_INTERCEPTED_PER_EVENT {
            // More may be queued than one turn takes: look again on the next loop.
            wake.signal();
        }
    }

    /// Carries out the core's outputs, then flushes batched datagrams.
    fn drain(&mut self, now: Instant) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Answer { client, payload } if client.listener == INTERCEPTED => {
                    if let Some((_, _, sink)) = &self.intercept {
                        sink(client, &payload);
                    }
                }
                Output::Answer { client, payload } => match client.tcp {
                    Some(_) => self.answer_tcp(client, &payload),
                    None => {
                        if let Some(answers) = self.answers.get_mut(client.listener as usize) {
                            let from = client.local.filter(|_| answers.wildcard).map(|ip| (ip, client.ifindex));
                            answers.queue.push(Outgoing { payload, to: Some(client.peer), from });
                        }
                    }
                },
                Output::UdpOpen { socket, remote } => {
                    if let Err(error) = self.open_udp(socket, remote) {
                        self.local.socket_errors += 1;
                        let _ = error;
                    }
                }
                Output::UdpSend { socket, payload } => {
                    let slot = socket.0 as u32;
                    match self.up_udp.get_mut(&slot) {
                        Some(up) if up.id == socket => up.queue.push(Outgoing { payload, to: None, from: None }),
                        _ => self.local.socket_errors += 1,
                    }
                }
                Output::UdpClose { socket } => {
                    let slot = socket.0 as u32;
                    if self.up_udp.get(&slot).is_some_and(|up| up.id == socket)
                        && let Some(up) = self.up_udp.remove(&slot)
                    {
                        let _ = self.epoll.delete(up.socket.as_raw_fd());
                    }
                }
                Output::TcpConnect { conn, remote, tls, doh_path: Some(path) } => {
                    let command = doh::Command::Connect {
                        worker: self.index,
                        conn,
                        remote,
                        server_name: tls.unwrap_or_else(|| Arc::from(remote.ip().to_string())),
                        path,
                    };
                    match &self.doh {
                        Some((commands, _)) if commands.try_send(command).is_ok() => {
                            self.doh_conns.insert(conn.0 as u32, conn);
                        }
                        _ => self.core.tcp_closed(now, conn),
                    }
                }
                Output::TcpConnect { conn, remote, tls, doh_path: None } => {
                    if self.open_tcp(conn, remote, tls.as_deref()).is_err() {
                        self.core.tcp_closed(now, conn);
                    }
                }
                Output::TcpSend { conn, payload } if self.doh_conns.get(&(conn.0 as u32)) == Some(&conn) => {
                    let command = doh::Command::Send { worker: self.index, conn, framed: payload };
                    let sent = self.doh.as_ref().is_some_and(|(commands, _)| commands.try_send(command).is_ok());
                    if !sent {
                        self.doh_conns.remove(&(conn.0 as u32));
                        self.core.tcp_closed(now, conn);
                    }
                }
                Output::TcpClose { conn } if self.doh_conns.get(&(conn.0 as u32)) == Some(&conn) => {
                    self.doh_conns.remove(&(conn.0 as u32));
                    if let Some((commands, _)) = &self.doh {
                        let _ = commands.try_send(doh::Command::Close { worker: self.index, conn });
                    }
                }
                Output::TcpSend { conn, payload } => {
                    let slot = conn.0 as u32;
                    let Some(up) = self.up_tcp.get_mut(&slot).filter(|up| up.id == conn) else { continue };
                    if let Some(tls) = up.tls.as_mut() {
                        if tls.writer().write_all(&payload).is_err() || self.pump_tls(slot).is_err() {
                            self.broken(slot, conn, now);
                        }
                        continue;
                    }
                    up.wbuf.extend_from_slice(&payload);
                    if !up.connecting {
                        if flush(&mut up.stream, &mut up.wbuf).is_err() {
                            self.drop_up_tcp(slot);
                            self.core.tcp_closed(now, conn);
                            continue;
                        }
                        if !up.wbuf.is_empty() {
                            let fd = up.stream.as_raw_fd();
                            let _ = self.epoll.modify(fd, token(KIND_UP_TCP, u64::from(slot)), sys::IN | sys::OUT);
                        }
                    }
                }
                Output::TcpClose { conn } => {
                    let slot = conn.0 as u32;
                    if self.up_tcp.get(&slot).is_some_and(|up| up.id == conn) {
                        self.drop_up_tcp(slot);
                    }
                }
            }
        }
        for up in self.up_udp.values_mut() {
            if up.queue.is_empty() {
                continue;
            }
            let sent = up.sender.send(up.socket.as_raw_fd(), false, &up.queue);
            self.local.upstream_send_drops += (up.queue.len() - sent.datagrams) as u64;
            self.local.upstream_messages_out += sent.messages as u64;
            self.pool.extend(up.queue.drain(..).map(|o| o.payload).filter(|p| p.capacity() <= 4096).map(|mut p| {
                p.clear();
                p
            }));
        }
        for (index, answers) in self.answers.iter_mut().enumerate() {
            if answers.queue.is_empty() {
                continue;
            }
            let Some(Listener::Udp(socket)) = self.listeners.get(index) else { continue };
            let sent = answers.sender.send(socket.as_raw_fd(), answers.v6, &answers.queue);
            self.local.answers_out += sent.datagrams as u64;
            self.local.answer_messages_out += sent.messages as u64;
            self.local.answer_send_drops += (answers.queue.len() - sent.datagrams) as u64;
            for mut payload in answers.queue.drain(..).map(|o| o.payload) {
                if self.pool.len() < 1024 && payload.capacity() <= 4096 {
                    payload.clear();
                    self.pool.push(payload);
                }
            }
        }
        if let Some(domains) = &self.domains {
            while let Some(update) = self.core.poll_domain_update() {
                if let Err(TrySendError::Full(_)) = domains.try_send(update) {
                    self.local.domain_updates_dropped += 1;
                }
            }
        } else {
            while self.core.poll_domain_update().is_some() {}
        }
    }
}

fn flush(stream: &mut TcpStream, wbuf: &mut Vec<u8>) -> io::Result<()> {
    let mut written = 0;
    while written < wbuf.len() {
        match stream.write(&wbuf[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    wbuf.drain(..written);
    Ok(())
}
