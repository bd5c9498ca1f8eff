//! The edges of the forwarder: worker threads (one per core, each with its own [`Core`] and sockets), the
//! domain publisher thread, and the bootstrap resolver for upstreams given by host name.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let loaded = config::load(std::path::Path::new("/etc/dae/config.dae"))?;
//! let dns = config::dns::lower(&loaded.config, &config::rules::Assets::default_for(None))?.dns;
//! let hook: dns::DomainHook = std::sync::Arc::new(|addr, names: &[String]| {
//!     // e.g. router.set_domains(mapped(addr), names.to_vec())
//!     let _ = (addr, names);
//! });
//! let options = dns::service::Options::for_config(&loaded.config);
//! let handle = dns::Service::start(dns, options, Some(hook))?;
//! // ... later
//! handle.stop();
//! # Ok(()) }
//! ```

mod bootstrap;
mod doh;
pub mod sys;
mod worker;

pub use worker::STATS_EVERY;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use config::InterfacePattern;
use config::dns::{DnsConfig, DnsRouter, Host};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::cache::CacheStats;
use crate::core::{ClientAddr, Core, DomainUpdate, Settings, Stats};
use worker::{Listener, WorkerInit};

/// Called with an address and every name cached answers currently give it (sorted); an empty list means the
/// address left the cache. Runs on the publisher thread, never on a worker: it may block (a kernel map write).
/// For `dae run`: `router.set_domains(v4_mapped(addr), names.to_vec())`.
pub type DomainHook = Arc<dyn Fn(IpAddr, &[String]) + Send + Sync>;

/// Domain updates waiting for the publisher; workers drop (and count) updates beyond this instead of
/// blocking (seed-pr checklist 13: 1024-deep in dae; ours coalesces per address, so deeper is cheap).
pub const DOMAIN_QUEUE: usize = 16_384;
/// Debian's bundle of the system's trusted certificate authorities.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The default bound of [`Options::coalesce`]: at 50k cached queries/s it cut CPU per query to 0.57-0.75x of no
/// moderation on a loaded machine, 0.83x on an idle one, for +100-200 µs median latency (docs/dns.md, "Measured").
pub const DEFAULT_COALESCE: Duration = Duration::from_micros(100);
/// The bootstrap resolver when `global.bootstrap_resolver` is not set (dae's first default).
pub const DEFAULT_BOOTSTRAP: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(119, 29, 29, 29)), 53);

/// Why the service did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A `bind` address could not be bound.
    #[error("cannot listen on {addr} ({proto}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// `udp` or `tcp`.
        proto: &'static str,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// No usable certificate authority for DoT upstreams.
    #[error("cannot set up TLS for DoT upstreams: {0}")]
    Tls(String),
    /// A thread could not be started.
    #[error("cannot start a worker thread: {0}")]
    Thread(std::io::Error),
}

/// How to run the service besides the `dns` section.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads (each with its own sockets and cache); default: one per available core.
    pub workers: usize,
    /// Pin worker `i` to `cpus[i % len]` when not empty.
    pub cpus: Vec<usize>,
    /// Core timeouts and bounds (the cache byte bound and the in-flight bound are split between workers).
    pub settings: Settings,
    /// `global.lan_interface`: a query received on one of these is LAN-in for `interface(lan: ...)` rules.
    pub lan_interfaces: Vec<InterfacePattern>,
    /// Resolves upstream host names.
    pub bootstrap: SocketAddr,
    /// Listeners besides `dns.bind` (tests and the benchmark binary), as `(addr, udp, tcp)`.
    pub extra_binds: Vec<config::dns::Bind>,
    /// PEM files of the certificate authorities DoT upstreams are verified against.
    pub tls_roots: Vec<std::path::PathBuf>,
    /// SO_MARK on every upstream socket (UDP, TCP, DoT, DoH and the bootstrap resolver's; 0: none), so the
    /// gateway never steers its own queries. [`Options::for_config`] takes `global.so_mark_from_dae`.
    pub mark: u32,
    /// Longest pause of interrupt moderation: under load (over 5,000 queries/s) a worker that woke for fewer
    /// than 8 datagrams pauses until about 8 more have queued, at most twice this long while queries wait on an
    /// upstream (24 and three times this long when none does), plus the thread's timer slack, 50 µs; an idle
    /// worker and one whose wake-ups already bring 8 never pause; zero turns it off.
    /// Default [`DEFAULT_COALESCE`]. See docs/dns.md for the measured trade.
    pub coalesce: Duration,
    /// Send runs of same-size UDP datagrams to one destination (answers to a client, queries to an upstream)
    /// as one UDP GSO send (`UDP_SEGMENT`); a path that refuses GSO falls back by itself. Default on.
    pub gso: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            cpus: Vec::new(),
            settings: Settings::default(),
            lan_interfaces: Vec::new(),
            bootstrap: DEFAULT_BOOTSTRAP,
            extra_binds: Vec::new(),
            coalesce: DEFAULT_COALESCE,
            gso: true,
            tls_roots: vec![std::path::PathBuf::from(SYSTEM_ROOTS)],
            mark: 0,
        }
    }
}

impl Options {
    /// Defaults, with LAN interfaces and the bootstrap resolver from `config.global`.
    pub fn for_config(config: &config::Config) -> Self {
        Self {
            lan_interfaces: config.global.lan_interface.clone(),
            bootstrap: config.global.bootstrap_resolver.unwrap_or(DEFAULT_BOOTSTRAP),
            mark: config.global.so_mark_from_dae.unwrap_or(0),
            ..Self::default()
        }
    }
}

/// Counters of one worker, published every [`worker::STATS_EVERY`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// The core's counters.
    pub core: Stats,
    /// The cache's counters.
    pub cache: CacheStats,
    /// Datagrams read from listeners.
    pub datagrams_in: u64,
    /// Answers sent over UDP.
    pub answers_out: u64,
    /// Messages those answers left in (a GSO run of answers to one client is one).
    pub answer_messages_out: u64,
    /// Messages upstream UDP queries left in (a GSO run is one).
    pub upstream_messages_out: u64,
    /// Wake-ups of the worker's loop.
    pub wakeups: u64,
    /// Answers dropped because the socket buffer was full.
    pub answer_send_drops: u64,
    /// Upstream datagrams dropped because the socket buffer was full.
    pub upstream_send_drops: u64,
    /// Upstream sockets that could not be opened.
    pub socket_errors: u64,
    /// Domain updates dropped because the publisher lagged.
    pub domain_updates_dropped: u64,
    /// CPU time of the worker thread.
    pub cpu: Duration,
}

/// Where answers to intercepted queries go: called on the worker thread with the client as submitted (its
/// `listener` set to [`INTERCEPTED`]) and the DNS message; the datapath sends it from its transparent socket
/// (UDP) or frames it on the client's connection (TCP, `client.tcp`).
pub type AnswerSink = Arc<dyn Fn(ClientAddr, &[u8]) + Send + Sync>;

/// The `ClientAddr::listener` value of queries that came through [`Handle::submit`].
pub const INTERCEPTED: u32 = u32::MAX;
/// Intercepted queries queued per worker; [`Handle::submit`] refuses more (the caller answers REFUSED or drops).
pub const INTERCEPT_QUEUE: usize = 4_096;

/// A DNS query the datapath intercepted (UDP or TCP to port 53 that no `must_` rule sent direct), with the
/// context its flow tag carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intercepted {
    /// The DNS message (without the TCP length prefix).
    pub message: Vec<u8>,
    /// The client; `tcp` is the datapath's own connection token for TCP queries, returned with the answer.
    pub client: ClientAddr,
    /// LAN-in or WAN-out, from the flow tag.
    pub direction: Option<config::dns::PacketDirection>,
    /// The interface of that direction, by name.
    pub interface: Option<Box<str>>,
    /// The server the client addressed, for `asis`.
    pub original_dst: Option<SocketAddr>,
}

/// What the service calls back: the domain publisher and, for intercepted DNS, the answer sink.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Addresses and names of cached answers (see [`DomainHook`]).
    pub domains: Option<DomainHook>,
    /// Answers to [`Handle::submit`]ted queries; without it `submit` is refused.
    pub answers: Option<AnswerSink>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("domains", &self.domains.is_some())
            .field("answers", &self.answers.is_some())
            .finish()
    }
}

pub(crate) enum Control {
    SetUpstream(usize, Option<SocketAddr>),
}

/// A running forwarder. Dropping it stops it too.
#[derive(Debug)]
pub struct Handle {
    stop: Arc<AtomicBool>,
    intercept: Vec<(std::sync::mpsc::SyncSender<Intercepted>, Arc<doh::EventFd>)>,
    threads: Vec<JoinHandle<()>>,
    stats: Vec<Arc<Mutex<WorkerStats>>>,
    local_addrs: Vec<(SocketAddr, &'static str)>,
}

impl Handle {
    /// Stops every thread and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }

    /// Counters of each worker (at most [`worker::STATS_EVERY`] old).
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.stats.iter().map(|slot| *slot.lock().unwrap_or_else(|e| e.into_inner())).collect()
    }

    /// Hands an intercepted query to the worker its client hashes to (a client's queries stay on one worker).
    /// Never blocks: a full queue or a service started without an answer sink gives the query back.
    pub fn submit(&self, query: Intercepted) -> Result<(), Box<Intercepted>> {
        if self.intercept.is_empty() {
            return Err(Box::new(query));
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&query.client.peer, &mut hasher);
        let index = (std::hash::Hasher::finish(&hasher) % self.intercept.len() as u64) as usize;
        let (queue, wake) = &self.intercept[index];
        match queue.try_send(query) {
            Ok(()) => {
                wake.signal();
                Ok(())
            }
            Err(std::sync::mpsc::TrySendError::Full(query) | std::sync::mpsc::TrySendError::Disconnected(query)) => {
                Err(Box::new(query))
            }
        }
    }

    /// The addresses listened on (the real port when 0 was asked), with `udp` or `tcp`.
    pub fn local_addrs(&self) -> &[(SocketAddr, &'static str)] {
        &self.local_addrs
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The forwarder's entry point.
#[derive(Debug)]
pub struct Service;

impl Service {
    /// Binds every listener (`dns.bind` and `options.extra_binds`, once per worker with SO_REUSEPORT so the
    /// kernel spreads clients), starts the workers, the domain publisher (when `hook` is given) and the
    /// bootstrap resolver (when an upstream is a host name).
    pub fn start(dns: DnsConfig, options: Options, hook: Option<DomainHook>) -> Result<Handle, ServiceError> {
        Self::start_with(dns, options, Hooks { domains: hook, answers: None })
    }

    /// [`Service::start`] with every hook: with `hooks.answers`, [`Handle::submit`] takes intercepted DNS.
    pub fn start_with(dns: DnsConfig, options: Options, hooks: Hooks) -> Result<Handle, ServiceError> {
        let hook = hooks.domains;
        let workers = options.workers.max(1);
        let dns = Arc::new(dns);
        let router = Arc::new(DnsRouter::new(&dns));
        let stop = Arc::new(AtomicBool::new(false));
        let mut binds = dns.bind.clone();
        binds.extend(options.extra_binds.iter().copied());
        let mut per_worker: Vec<Vec<Listener>> = (0..workers).map(|_| Vec::new()).collect();
        let mut local_addrs = Vec::new();
        for bind in &binds {
            let mut addr = bind.addr;
            if bind.udp {
                for listeners in &mut per_worker {
                    let socket = udp_listener(addr, dns.uses_interface).map_err(|source| ServiceError::Bind {
                        addr,
                        proto: "udp",
                        source,
                    })?;
                    addr = socket.local_addr().unwrap_or(addr);
                    listeners.push(Listener::Udp(socket));
                }
                local_addrs.push((addr, "udp"));
            }
            if bind.tcp {
                let mut tcp_addr = addr;
                for listeners in &mut per_worker {
                    let socket = tcp_listener(tcp_addr).map_err(|source| ServiceError::Bind {
                        addr: tcp_addr,
                        proto: "tcp",
                        source,
                    })?;
                    tcp_addr = socket.local_addr().unwrap_or(tcp_addr);
                    listeners.push(Listener::Tcp(socket));
                }
                local_addrs.push((tcp_addr, "tcp"));
            }
        }
        let (domain_tx, publisher) = match hook {
            Some(hook) => {
                let (tx, rx) = sync_channel(DOMAIN_QUEUE);
                let stop = stop.clone();
                let thread = std::thread::Builder::new()
                    .name("dns-domains".into())
                    .spawn(move || publish(rx, hook, &stop))
                    .map_err(ServiceError::Thread)?;
                (Some(tx), Some(thread))
            }
            None => (None, None),
        };
        let mut settings = options.settings.clone();
        settings.cache_max_bytes = (settings.cache_max_bytes / workers).max(1 << 20);
        let mut per_worker_dns = (*dns).clone();
        per_worker_dns.max_cache_entries = dns.max_cache_entries.div_ceil(workers);
        let per_worker_dns = Arc::new(per_worker_dns);
        let lan = Arc::new(options.lan_interfaces.clone());
        let encrypted =
            |u: &config::dns::Upstream| matches!(u.addr.scheme, config::dns::Scheme::Tls | config::dns::Scheme::Https);
        let tls = tls_config(&options.tls_roots, dns.upstreams.iter().any(encrypted))?;
        let mut doh_inboxes = Vec::new();
        let mut doh_commands = None;
        let mut doh_thread = None;
        if dns.upstreams.iter().any(|u| u.addr.scheme == config::dns::Scheme::Https) {
            let (commands, inboxes, thread) =
                doh::start(workers, tls.clone(), options.mark).map_err(ServiceError::Thread)?;
            doh_commands = Some(commands);
            doh_inboxes = inboxes.into_iter().map(Some).collect();
            doh_thread = Some(thread);
        }
        let mut threads = Vec::new();
        let mut stats = Vec::new();
        let mut intercept = Vec::new();
        let mut controls: Vec<Sender<Control>> = Vec::new();
        for (index, listeners) in per_worker.into_iter().enumerate() {
            let slot = Arc::new(Mutex::new(WorkerStats::default()));
            stats.push(slot.clone());
            let (control_tx, control_rx) = std::sync::mpsc::channel();
            controls.push(control_tx);
            let core = Core::new(
                per_worker_dns.clone(),
                router.clone(),
                settings.clone(),
                crate::rng::os_seed(),
                Instant::now(),
            );
            let init = WorkerInit {
                core,
                listeners,
                lan: lan.clone(),
                stop: stop.clone(),
                stats: slot,
                domains: domain_tx.clone(),
                control: control_rx,
                cpu: (!options.cpus.is_empty()).then(|| options.cpus[index % options.cpus.len()]),
                uses_interface: dns.uses_interface,
                coalesce: options.coalesce,
                gso: options.gso,
                tls: tls.clone(),
                mark: options.mark,
                index,
                doh: doh_commands.clone().zip(doh_inboxes.get_mut(index).and_then(Option::take)),
                intercept: match &hooks.answers {
                    Some(sink) => {
                        let (tx, rx) = std::sync::mpsc::sync_channel(INTERCEPT_QUEUE);
                        let wake = Arc::new(doh::EventFd::new().map_err(ServiceError::Thread)?);
                        intercept.push((tx, wake.clone()));
                        Some((rx, wake, sink.clone()))
                    }
                    None => None,
                },
            };
            let thread = std::thread::Builder::new()
                .name(format!("dns-worker-{index}"))
                .spawn(move || {
                    if let Err(error) = worker::run(init) {
                        eprintln!("dns worker {index} stopped: {error}");
                    }
                })
                .map_err(ServiceError::Thread)?;
            threads.push(thread);
        }
        drop(domain_tx);
        drop(doh_commands);
        threads.extend(doh_thread);
        let names: Vec<(usize, String, u16)> = dns
            .upstreams
            .iter()
            .enumerate()
            .filter_map(|(id, upstream)| match &upstream.addr.host {
                Host::Name(name) => Some((id, name.clone(), upstream.addr.port)),
                Host::Ip(_) => None,
            })
            .collect();
        if !names.is_empty() {
            let stop = stop.clone();
            let (bootstrap, mark) = (options.bootstrap, options.mark);
            let thread = std::thread::Builder::new()
                .name("dns-bootstrap".into())
                .spawn(move || bootstrap::run(names, bootstrap, controls, mark, &stop))
                .map_err(ServiceError::Thread)?;
            threads.push(thread);
        }
        threads.extend(publisher);
        Ok(Handle { stop, intercept, threads, stats, local_addrs })
    }
}

/// A UDP listener. Destination and interface of each datagram (IP_PKTINFO) are asked for when the socket is
/// bound to a wildcard address (to answer from the address the client asked) or a rule needs the interface.
/// The TLS client configuration of DoT upstreams: certificate authorities from `roots` (PEM). An error only
/// when a DoT upstream is configured and no authority could be read.
fn tls_config(roots: &[std::path::PathBuf], needed: bool) -> Result<Arc<rustls::ClientConfig>, ServiceError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for path in roots {
        if let Ok(certs) = CertificateDer::pem_file_iter(path) {
            for cert in certs.flatten() {
                let _ = store.add(cert);
            }
        }
    }
    if needed && store.is_empty() {
        let paths: Vec<String> = roots.iter().map(|p| p.display().to_string()).collect();
        return Err(ServiceError::Tls(format!("no certificate authority in {}", paths.join(", "))));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServiceError::Tls(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn udp_listener(addr: SocketAddr, need_interface: bool) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    sys::size_receive_buffer(socket.as_raw_fd(), worker::SOCKET_BUFFER);
    let _ = sys::set_int_opt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, worker::SOCKET_BUFFER as i32);
    if addr.ip().is_unspecified() || need_interface {
        sys::enable_pktinfo(socket.as_raw_fd(), addr.is_ipv6())?;
    }
    socket.bind(&SockAddr::from(addr))?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The publisher: reference-counts `(address, name)` pairs across workers and calls the hook once per changed
/// address per batch (updates that cancel out within a batch call nothing).
fn publish(updates: Receiver<DomainUpdate>, hook: DomainHook, stop: &AtomicBool) {
    let mut table: HashMap<IpAddr, HashMap<Box<str>, u32>> = HashMap::new();
    let mut published: HashMap<IpAddr, BTreeSet<Box<str>>> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let first = match updates.recv_timeout(Duration::from_millis(100)) {
            Ok(update) => update,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut touched = BTreeSet::new();
        for update in std::iter::once(first).chain(updates.try_iter()) {
            match update {
                DomainUpdate::Add { addr, names } => {
                    let entry = table.entry(addr).or_default();
                    for name in names.iter() {
                        *entry.entry(name.clone()).or_default() += 1;
                    }
                    touched.insert(addr);
                }
                DomainUpdate::Remove { addr, names } => {
                    if let Some(entry) = table.get_mut(&addr) {
                        for name in names.iter() {
                            if let Some(count) = entry.get_mut(name) {
                                *count -= 1;
                                if *count == 0 {
                                    entry.remove(name);
                                }
                            }
                        }
                        if entry.is_empty() {
                            table.remove(&addr);
                        }
                    }
                    touched.insert(addr);
                }
            }
        }
        for addr in touched {
            let now: BTreeSet<Box<str>> =
                table.get(&addr).map(|names| names.keys().cloned().collect()).unwrap_or_default();
            if published.get(&addr).is_some_and(|before| *before == now)
                || (now.is_empty() && !published.contains_key(&addr))
            {
                continue;
            }
            let names: Vec<String> = now.iter().map(|name| name.to_string()).collect();
            hook(addr, &names);
            if now.is_empty() {
                published.remove(&addr);
            } else {
                published.insert(addr, now);
            }
        }
    }
}
