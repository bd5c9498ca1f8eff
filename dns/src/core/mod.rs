//! The sans-IO forwarder core of one worker (quinn-proto's shape): client queries, upstream datagrams, stream
//! bytes, connection events and `Instant`s go in; answers, socket and connection commands, timers and domain
//! updates come out. Nothing here touches a socket or reads a clock.
//!
//! A query walks: parse -> request routing (qname, qtype, interface + direction, client source) -> admission
//! (at most `max_in_flight` waiting; more answer REFUSED) -> cache, scoped by upstream (and interface when a
//! rule uses it) -> singleflight on the same key -> an upstream attempt (UDP socket pool or pipelined TCP/TLS
//! connections) -> response routing (accept, reject, re-query up to [`MAX_LOOKUP_DEPTH`]) -> cache -> every
//! waiting client.
#![forbid(unsafe_code)]

mod answer;
mod prefer;
mod tcp;
mod types;
mod udp;
mod upstream;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::dns::{
    DnsConfig, DnsRouter, IpVersionPrefer, MAX_LOOKUP_DEPTH, PacketDirection, QueryFacts, RequestAction,
    ResponseAction, ResponseFacts, Scheme,
};

pub use types::{ClientAddr, ConnId, DomainUpdate, Handled, Output, QueryContext, Settings, SocketId, Stats};

use crate::cache::{Cache, DomainFacts, Hit, MAX_CACHE_TTL, MAX_NEGATIVE_TTL, NewEntry};
use crate::hash::{FxBuild, FxMap};
use crate::rng::Rng;
use crate::wire::{self, Query, Section, rcode};
use tcp::{ConnState, MAX_QUEUED_BYTES, TcpConn, frame};
use udp::UdpSock;

/// Domain updates kept for the edge between polls; more are dropped and counted.
const MAX_DOMAIN_UPDATES: usize = 65_536;
/// `asis` targets (servers clients addressed) a core keeps upstream state for.
const MAX_ASIS_UPSTREAMS: usize = 256;
/// How often idle sockets and connections are looked for.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Cache slots inspected per housekeeping tick for entries past their serve-stale window.
const SWEEP_BUDGET: usize = 4_096;

/// A flight by slot and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FlightRef {
    slot: u32,
    generation: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Attempt(FlightRef, u32),
    Housekeeping,
}

/// Pending timers. Most are UDP attempts, each due `udp_attempt_timeout` after it was sent, so they come due in
/// the order they were set: those wait in a FIFO (set and fired in O(1)); the rest (TCP attempts, attempts cut
/// short by their query's deadline, housekeeping) in a heap. Timers are never cancelled: one whose attempt was
/// answered fires and finds nothing to do, so at 10,000 misses a second some 12,000 are pending, and a heap of
/// all of them cost a sift of ~14 levels per pop (2% of a worker's time, profiled).
#[derive(Debug, Default)]
struct Timers {
    in_order: VecDeque<(Instant, Timer)>,
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    /// A timer that may come due before timers already set.
    fn push(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// A timer expected to come due no earlier than every one set this way before it (a heap timer otherwise).
    fn push_in_order(&mut self, at: Instant, timer: Timer) {
        if self.in_order.back().is_none_or(|&(last, _)| last <= at) {
            self.in_order.push_back((at, timer));
        } else {
            self.push(at, timer);
        }
    }

    fn next_at(&self) -> Option<Instant> {
        let queued = self.in_order.front().map(|&(at, _)| at);
        queued.into_iter().chain(self.heap.peek().map(|Reverse((at, _))| *at)).min()
    }

    /// The earliest timer due at `now`, removed.
    fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let queued = self.in_order.front().map(|&(at, _)| at).filter(|&at| at <= now);
        let heaped = self.heap.peek().map(|Reverse((at, _))| *at).filter(|&at| at <= now);
        match (queued, heaped) {
            (Some(a), Some(b)) if b < a => self.heap.pop().map(|Reverse((_, timer))| timer),
            (Some(_), _) => self.in_order.pop_front().map(|(_, timer)| timer),
            (None, Some(_)) => self.heap.pop().map(|Reverse((_, timer))| timer),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    None,
    Udp { slot: u32, id: u16 },
    Tcp { slot: u32, id: u16 },
}

struct Waiter {
    client: ClientAddr,
    /// The client's header and question.
    head: Box<[u8]>,
    query: Query,
    /// Set when the client asked for the non-preferred address family and waits on the preferred one.
    gate: Option<Box<Gate>>,
}

/// A non-preferred A/AAAA query (`ipversion_prefer`) waiting on the preferred family's flight: answered empty
/// when that one has addresses, else sent on as asked.
struct Gate {
    message: Box<[u8]>,
    upstream: usize,
    direction: Option<PacketDirection>,
    interface: Option<Box<str>>,
}

struct Flight {
    key: Box<[u8]>,
    /// The query sent upstream (the first client's, ID overwritten per attempt).
    template: Box<[u8]>,
    question_end: usize,
    qname: Box<str>,
    qtype: u16,
    direction: Option<PacketDirection>,
    interface: Option<Box<str>>,
    src: Option<IpAddr>,
    waiters: Vec<Waiter>,
    upstream: usize,
    depth: usize,
    deadline: Instant,
    attempt: u32,
    tries: u8,
    use_tcp: bool,
    via: Via,
    refresh: bool,
}

struct UpstreamRt {
    scheme: Scheme,
    addr: Option<SocketAddr>,
    tls_name: Option<Arc<str>>,
    doh_path: Option<Arc<str>>,
    udp: Vec<u32>,
    tcp: Vec<u32>,
}

/// A slab whose slots carry generations.
struct Slab<T> {
    items: Vec<Option<T>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Self { items: Vec::new(), generations: Vec::new(), free: Vec::new(), len: 0 }
    }

    fn insert(&mut self, make: impl FnOnce(u32) -> T) -> (u32, u32) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.items.push(None);
                self.generations.push(0);
                (self.items.len() - 1) as u32
            }
        };
        let generation = self.generations[slot as usize].wrapping_add(1);
        self.generations[slot as usize] = generation;
        self.items[slot as usize] = Some(make(generation));
        self.len += 1;
        (slot, generation)
    }

    fn get(&self, slot: u32, generation: u32) -> Option<&T> {
        (self.generations.get(slot as usize) == Some(&generation)).then(|| self.items[slot as usize].as_ref()).flatten()
    }

    fn get_mut(&mut self, slot: u32, generation: u32) -> Option<&mut T> {
        if self.generations.get(slot as usize) != Some(&generation) {
            return None;
        }
        self.items[slot as usize].as_mut()
    }

    fn at(&self, slot: u32) -> Option<&T> {
        self.items.get(slot as usize).and_then(Option::as_ref)
    }

    fn at_mut(&mut self, slot: u32) -> Option<&mut T> {
        self.items.get_mut(slot as usize).and_then(Option::as_mut)
    }

    fn remove(&mut self, slot: u32) -> Option<T> {
        let item = self.items.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        self.len -= 1;
        Some(item)
    }
}

fn pack(slot: u32, generation: u32) -> u64 {
    u64::from(generation) << 32 | u64::from(slot)
}

fn unpack(id: u64) -> (u32, u32) {
    (id as u32, (id >> 32) as u32)
}

/// One worker's forwarder. Not shared: each worker owns one (DESIGN.md invariant 6).
pub struct Core {
    dns: Arc<DnsConfig>,
    router: Arc<DnsRouter>,
    settings: Settings,
    upstreams: Vec<UpstreamRt>,
    asis: FxMap<SocketAddr, usize>,
    cache: Cache,
    flights: Slab<Flight>,
    flight_index: FxMap<Box<[u8]>, FlightRef>,
    udp: Slab<UdpSock>,
    tcp: Slab<TcpConn>,
    timers: Timers,
    outputs: VecDeque<Output>,
    domain_updates: VecDeque<DomainUpdate>,
    in_flight: usize,
    stats: Stats,
    rng: Rng,
    name: String,
    key: Vec<u8>,
    frames: Vec<Vec<u8>>,
    answer_ips: Vec<IpAddr>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl Core {
    /// A core for `dns` (rules compiled into `router`), with `settings`, random numbers from `seed`, started at
    /// `now`. Upstreams given by host name start without an address: see [`Core::set_upstream_addr`].
    pub fn new(dns: Arc<DnsConfig>, router: Arc<DnsRouter>, settings: Settings, seed: u64, now: Instant) -> Self {
        let mut rng = Rng::new(seed);
        let upstreams = dns
            .upstreams
            .iter()
            .map(|upstream| UpstreamRt {
                scheme: upstream.addr.scheme,
                addr: upstream.addr.socket_addr(),
                tls_name: matches!(upstream.addr.scheme, Scheme::Tls | Scheme::Https)
                    .then(|| Arc::from(upstream.addr.host.to_string())),
                doh_path: (upstream.addr.scheme == Scheme::Https).then(|| Arc::from(upstream.addr.path.as_str())),
                udp: Vec::new(),
                tcp: Vec::new(),
            })
            .collect();
        let cache = Cache::new(dns.max_cache_entries, settings.cache_max_bytes, stale_window(&dns), rng.next_u64());
        let mut core = Self {
            upstreams,
            asis: FxMap::with_hasher(FxBuild(rng.next_u64())),
            cache,
            flights: Slab::new(),
            flight_index: FxMap::with_capacity_and_hasher(1024, FxBuild(rng.next_u64())),
            udp: Slab::new(),
            tcp: Slab::new(),
            timers: Timers::default(),
            outputs: VecDeque::new(),
            domain_updates: VecDeque::new(),
            in_flight: 0,
            stats: Stats::default(),
            rng,
            name: String::with_capacity(256),
            key: Vec::with_capacity(320),
            frames: Vec::new(),
            answer_ips: Vec::new(),
            dns,
            router,
            settings,
        };
        core.timers.push(now + HOUSEKEEPING, Timer::Housekeeping);
        core
    }

    /// Sets (or clears) the address of upstream `id` (a host name resolved by the bootstrap resolver). New
    /// sockets and connections use it; open ones keep theirs until they close.
    pub fn set_upstream_addr(&mut self, id: usize, addr: Option<SocketAddr>) {
        if let Some(upstream) = self.upstreams.get_mut(id) {
            upstream.addr = addr;
        }
    }

    /// Client queries waiting for an upstream answer.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        stats.in_flight = self.in_flight as u64;
        stats.udp_sockets = self.udp.len as u64;
        stats.tcp_conns = self.tcp.len as u64;
        stats.upstream_pending = self.upstream_pending() as u64;
        stats.flights_now = self.flights.len as u64;
        stats
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> crate::cache::CacheStats {
        self.cache.stats()
    }

    /// The cache, for tests.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Flights (distinct questions) in progress.
    pub fn flights(&self) -> usize {
        self.flights.len
    }

    /// Queries pending on upstream UDP sockets and TCP connections (for leak checks).
    pub fn upstream_pending(&self) -> usize {
        let udp: usize = self.udp.items.iter().flatten().map(|s| s.pending.len()).sum();
        let tcp: usize = self.tcp.items.iter().flatten().map(|c| c.pending.len()).sum();
        udp + tcp
    }

    /// The next thing for the edge to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next change to the domain routing table.
    pub fn poll_domain_update(&mut self) -> Option<DomainUpdate> {
        self.domain_updates.pop_front()
    }

    /// When [`Core::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_at()
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Attempt(flight, attempt) => self.attempt_timed_out(flight, attempt, now),
                Timer::Housekeeping => {
                    self.housekeeping(now);
                    self.timers.push(now + HOUSEKEEPING, Timer::Housekeeping);
                }
            }
        }
    }

    /// Handles one client query. On [`Handled::Answered`] `reply` holds the answer to send now.
    pub fn handle_query(
        &mut self,
        now: Instant,
        message: &[u8],
        cx: &QueryContext<'_>,
        reply: &mut Vec<u8>,
    ) -> Handled {
        let mut name = std::mem::take(&mut self.name);
        let handled = self.query(now, message, cx, reply, &mut name);
        self.name = name;
        handled
    }

    fn query(
        &mut self,
        now: Instant,
        message: &[u8],
        cx: &QueryContext<'_>,
        reply: &mut Vec<u8>,
        name: &mut String,
    ) -> Handled {
        let query = match Query::parse(message, name) {
            Ok(query) => query,
            Err(_) => {
                self.stats.malformed += 1;
                return formerr(message, reply);
            }
        };
        if query.opcode() != 0 {
            wire::empty_response(message, &query, rcode::NOTIMP, reply);
            return Handled::Answered;
        }
        self.stats.queries += 1;
        let facts = QueryFacts {
            qname: name,
            qtype: query.qtype,
            direction: cx.direction,
            interface: cx.interface,
            src: Some(cx.client.peer.ip()),
        };
        let upstream = match self.router.request(&facts) {
            RequestAction::Reject => {
                self.stats.rejected += 1;
                wire::empty_response(message, &query, rcode::NOERROR, reply);
                return Handled::Answered;
            }
            RequestAction::Upstream(id) => id,
            RequestAction::AsIs => match cx.original_dst.and_then(|dst| self.asis_upstream(dst)) {
                Some(id) => id,
                None => {
                    self.stats.servfail += 1;
                    wire::empty_response(message, &query, rcode::SERVFAIL, reply);
                    return Handled::Answered;
                }
            },
        };
        if self.in_flight >= self.settings.max_in_flight {
            self.stats.refused_overload += 1;
            wire::empty_response(message, &query, rcode::REFUSED, reply);
            return Handled::Answered;
        }
        if let Some(preferred) = self.preferred_instead_of(query.qtype)
            && let Some(handled) = self.prefer_gate(now, message, &query, name, cx, upstream, preferred, reply)
        {
            return handled;
        }
        let mut key = std::mem::take(&mut self.key);
        self.build_key(&mut key, upstream, &query, name, cx);
        if let Some(other) = self.warm_instead_of(query.qtype) {
            self.warm(now, message, &query, name, cx, upstream, other);
        }
        let handled = match self.cache.lookup(&key, now, message, reply) {
            Hit::Fresh => {
                self.stats.cache_hits += 1;
                truncate_for_client(reply, &query, &cx.client);
                Handled::Answered
            }
            Hit::Stale { refresh } => {
                self.stats.stale_hits += 1;
                truncate_for_client(reply, &query, &cx.client);
                if refresh && self.flights.len < self.settings.max_flights && !self.flight_index.contains_key(&*key) {
                    self.stats.refreshes += 1;
                    self.start_flight(now, &key, message, &query, name, cx, upstream, None);
                }
                Handled::Answered
            }
            Hit::Miss => self.join_or_start(now, &key, message, &query, name, cx, upstream, reply),
        };
        self.key = key;
        self.drain_cache_removals();
        handled
    }

    /// Cache and singleflight key: everything that can change the answer.
    fn build_key(&self, key: &mut Vec<u8>, upstream: usize, query: &Query, name: &str, cx: &QueryContext<'_>) {
        key.clear();
        key.extend_from_slice(&(upstream as u32).to_le_bytes());
        key.extend_from_slice(&query.qtype.to_le_bytes());
        key.extend_from_slice(&query.qclass.to_le_bytes());
        key.push(u8::from(query.dnssec_ok) | u8::from(query.checking_disabled()) << 1);
        if self.dns.uses_interface {
            key.push(match cx.direction {
                None => 0,
                Some(PacketDirection::LanIn) => 1,
                Some(PacketDirection::WanOut) => 2,
            });
            key.extend_from_slice(cx.interface.unwrap_or("").as_bytes());
            key.push(0);
        }
        key.extend_from_slice(name.as_bytes());
    }

    #[allow(clippy::too_many_arguments)]
    fn join_or_start(
        &mut self,
        now: Instant,
        key: &[u8],
        message: &[u8],
        query: &Query,
        name: &str,
        cx: &QueryContext<'_>,
        upstream: usize,
        reply: &mut Vec<u8>,
    ) -> Handled {
        let waiter = Waiter {
            client: cx.client,
            head: message[..query.question_end()].into(),
            query: query.clone(),
            gate: None,
        };
        if let Some(&flight) = self.flight_index.get(key) {
            let max_waiters = self.settings.max_waiters;
            if let Some(f) = self.flights.get_mut(flight.slot, flight.generation) {
                if f.waiters.len() >= max_waiters {
                    self.stats.refused_flight_limit += 1;
                    wire::empty_response(message, query, rcode::REFUSED, reply);
                    return Handled::Answered;
                }
                f.waiters.push(waiter);
                self.in_flight += 1;
                self.stats.joined += 1;
                return Handled::Pending;
            }
        }
        if self.flights.len >= self.settings.max_flights {
            self.stats.refused_flight_limit += 1;
            wire::empty_response(message, query, rcode::REFUSED, reply);
            return Handled::Answered;
        }
        self.in_flight += 1;
        self.start_flight(now, key, message, query, name, cx, upstream, Some(waiter));
        Handled::Pending
    }

    #[allow(clippy::too_many_arguments)]
    fn start_flight(
        &mut self,
        now: Instant,
        key: &[u8],
        message: &[u8],
        query: &Query,
        name: &str,
        cx: &QueryContext<'_>,
        upstream: usize,
        waiter: Option<Waiter>,
    ) {
        self.stats.flights += 1;
        let refresh = waiter.is_none();
        let flight = Flight {
            key: key.into(),
            template: message.into(),
            question_end: query.question_end(),
            qname: name.into(),
            qtype: query.qtype,
            direction: cx.direction,
            interface: cx.interface.map(Into::into),
            src: Some(cx.client.peer.ip()),
            waiters: waiter.into_iter().collect(),
            upstream,
            depth: 1,
            deadline: now + self.settings.query_timeout,
            attempt: 0,
            tries: 0,
            use_tcp: false,
            via: Via::None,
            refresh,
        };
        let (slot, generation) = self.flights.insert(|_| flight);
        let flight = FlightRef { slot, generation };
        self.flight_index.insert(key.into(), flight);
        self.send_attempt(flight, now);
    }

    fn asis_upstream(&mut self, dst: SocketAddr) -> Option<usize> {
        if let Some(&id) = self.asis.get(&dst) {
            return Some(id);
        }
        if self.asis.len() >= MAX_ASIS_UPSTREAMS {
            return None;
        }
        self.upstreams.push(UpstreamRt {
            scheme: Scheme::TcpUdp,
            addr: Some(dst),
            tls_name: None,
            doh_path: None,
            udp: Vec::new(),
            tcp: Vec::new(),
        });
        let id = self.upstreams.len() - 1;
        self.asis.insert(dst, id);
        Some(id)
    }

    fn housekeeping(&mut self, now: Instant) {
        let idle = self.settings.idle_timeout;
        let idle_udp: Vec<u32> = self
            .udp
            .items
            .iter()
            .enumerate()
            .filter_map(|(slot, sock)| sock.as_ref().map(|s| (slot as u32, s)))
            .filter(|(_, sock)| sock.pending.is_empty() && now.saturating_duration_since(sock.last_used) >= idle)
            .map(|(slot, _)| slot)
            .collect();
        for slot in idle_udp {
            self.close_udp(slot);
        }
        let idle_tcp: Vec<(u32, u32)> = self
            .tcp
            .items
            .iter()
            .enumerate()
            .filter_map(|(slot, conn)| conn.as_ref().map(|c| (slot as u32, c)))
            .filter(|(_, c)| c.pending.is_empty() && now.saturating_duration_since(c.last_used) >= idle)
            .map(|(slot, c)| (slot, c.generation))
            .collect();
        for (slot, generation) in idle_tcp {
            if let Some(conn) = self.tcp.remove(slot) {
                self.upstreams[conn.upstream].tcp.retain(|&s| s != slot);
                self.outputs.push_back(Output::TcpClose { conn: ConnId(pack(slot, generation)) });
            }
        }
        self.cache.sweep(now, SWEEP_BUDGET);
        self.drain_cache_removals();
    }
}

fn stale_window(dns: &DnsConfig) -> Option<Duration> {
    if dns.optimistic_cache { dns.optimistic_cache_ttl } else { Some(Duration::ZERO) }
}

/// FORMERR for a message with a readable query header; nothing for anything else.
fn formerr(message: &[u8], reply: &mut Vec<u8>) -> Handled {
    if message.len() < wire::HEADER_LEN || wire::flags_of(message) & wire::flags::QR != 0 {
        return Handled::Dropped;
    }
    reply.clear();
    reply.extend_from_slice(&message[..wire::HEADER_LEN]);
    let flags = wire::flags::QR | (wire::flags_of(message) & wire::flags::RD) | u16::from(rcode::FORMERR);
    reply[2..4].copy_from_slice(&flags.to_be_bytes());
    reply[4..12].fill(0);
    Handled::Answered
}

/// Cuts an answer that exceeds a UDP client's payload size down to header and question with TC set.
fn truncate_for_client(reply: &mut Vec<u8>, query: &Query, client: &ClientAddr) {
    if client.tcp.is_none() && reply.len() > usize::from(query.udp_payload) {
        let full = std::mem::take(reply);
        wire::truncated_copy(&full, query.question_end(), reply);
    }
}

#[cfg(test)]
mod tests;
