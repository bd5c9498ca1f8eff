//! Per-flow QUIC sniff sessions for one worker: bounded in number, lifetime, held datagrams and held bytes,
//! with a negative cache for flows that yielded nothing. Datagrams held while sniffing go back to the caller,
//! oldest first, when the flow is decided.
//!
//! The caller owns the datagram buffers (`D`); a session only holds them. Call [`QuicSessions::on_datagram`]
//! for each client-to-server datagram of a flow that has no relay endpoint yet, and
//! [`QuicSessions::poll_expired`] whenever [`QuicSessions::next_deadline`] passes.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    time::{Duration, Instant},
};

use super::{
    initial::{InitialSniffer, Outcome},
    precheck::is_likely_initial,
};

/// Session lifetime. A client sends all Initials of its first flight together; if one is lost it resends after
/// its first PTO, about 1 s (RFC 9002: 3 x the 333 ms initial RTT). 2 s covers that once, and bounds the delay
/// a held first datagram can suffer. (dae: 3 s.)
pub const SESSION_TTL: Duration = Duration::from_secs(2);
/// Datagrams held per session. A ClientHello with post-quantum key shares spans 2 to 3 Initials; 8 leaves room
/// for retransmissions and coalesced 0-RTT.
pub const MAX_HELD_DATAGRAMS: usize = 8;
/// Bytes held per session: 8 datagrams of a 1500-byte MTU plus slack; jumbo datagrams hit this first.
pub const MAX_HELD_BYTES: usize = 16 * 1024;
/// Concurrent sessions per worker. Each costs at most [`MAX_HELD_BYTES`] plus its CRYPTO buffer (16 KiB), so
/// 4096 sessions bound a worker's sniffing memory to about 128 MiB under a flood of partial Initials.
pub const MAX_SESSIONS: usize = 4096;
/// How long a flow that yielded no name is not sniffed again: longer than a handshake's retransmissions.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// Negative-cache entries per worker; the oldest go first when it is full.
pub const MAX_NEGATIVE: usize = 16 * 1024;

/// Bounds of a session table; [`Default`] gives the named constants of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`SESSION_TTL`].
    pub ttl: Duration,
    /// See [`MAX_HELD_DATAGRAMS`].
    pub held_datagrams: usize,
    /// See [`MAX_HELD_BYTES`].
    pub held_bytes: usize,
    /// See [`MAX_SESSIONS`].
    pub sessions: usize,
    /// See [`NEGATIVE_TTL`].
    pub negative_ttl: Duration,
    /// See [`MAX_NEGATIVE`].
    pub negative_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            ttl: SESSION_TTL,
            held_datagrams: MAX_HELD_DATAGRAMS,
            held_bytes: MAX_HELD_BYTES,
            sessions: MAX_SESSIONS,
            negative_ttl: NEGATIVE_TTL,
            negative_entries: MAX_NEGATIVE,
        }
    }
}

/// Counters, for metrics. Each decided flow is counted once under its outcome, plus once under the reason when
/// a bound decided it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Flows decided with a name.
    pub named: u64,
    /// Flows decided without a name (all reasons).
    pub no_name: u64,
    /// Datagrams that passed the pre-check but did not decrypt as a client Initial.
    pub not_quic_after_precheck: u64,
    /// Sessions created (flows whose ClientHello spans datagrams).
    pub sessions_created: u64,
    /// Sessions ended by [`Limits::ttl`].
    pub expired: u64,
    /// Sessions ended by [`Limits::held_datagrams`] or [`Limits::held_bytes`].
    pub held_limit: u64,
    /// Flows not sniffed because [`Limits::sessions`] sessions were open.
    pub table_full: u64,
    /// Datagrams answered from the negative cache.
    pub negative_hits: u64,
}

/// The decision for one datagram.
#[derive(Debug)]
pub struct Verdict<D> {
    /// Where sniffing of the flow stands. `NeedMore`: the datagram is held and `release` is empty.
    pub outcome: Outcome,
    /// Datagrams to forward now, in arrival order: those held for this flow, then this one.
    pub release: Release<D>,
}

/// Datagrams handed back to the caller, oldest first.
#[derive(Debug)]
pub struct Release<D> {
    held: std::vec::IntoIter<D>,
    current: Option<D>,
}

impl<D> Release<D> {
    fn new(held: Vec<D>, current: Option<D>) -> Self {
        Self { held: held.into_iter(), current }
    }
}

impl<D> Iterator for Release<D> {
    type Item = D;
    fn next(&mut self) -> Option<D> {
        self.held.next().or_else(|| self.current.take())
    }
}

#[derive(Debug)]
struct Session<D> {
    id: u64,
    sniffer: InitialSniffer,
    held: Vec<D>,
    held_bytes: usize,
}

/// The QUIC sniff sessions of one worker, keyed by flow (`K`, e.g. the client and original destination
/// addresses), holding the caller's datagram buffers (`D`).
#[derive(Debug)]
pub struct QuicSessions<K, D> {
    limits: Limits,
    sessions: HashMap<K, Session<D>>,
    /// Sessions by expiry (creation order: the TTL is fixed). Entries of sessions already decided are skipped.
    expiry: VecDeque<(Instant, K, u64)>,
    negative: HashMap<K, Instant>,
    /// Negative entries by expiry; a key re-inserted later has a newer entry and its older one is skipped.
    negative_order: VecDeque<(Instant, K)>,
    next_id: u64,
    scratch: Vec<u8>,
    /// Sniffs each new flow's first datagram; moves into the flow's session only if the flow needs more, so
    /// that flows decided at once reuse its buffers.
    spare: InitialSniffer,
    stats: Stats,
}

impl<K: Hash + Eq + Clone, D: AsRef<[u8]>> Default for QuicSessions<K, D> {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl<K: Hash + Eq + Clone, D: AsRef<[u8]>> QuicSessions<K, D> {
    /// An empty table with these bounds.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            sessions: HashMap::new(),
            expiry: VecDeque::new(),
            negative: HashMap::new(),
            negative_order: VecDeque::new(),
            next_id: 0,
            scratch: Vec::new(),
            spare: InitialSniffer::new(),
            stats: Stats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// When the oldest open session expires: call [`Self::poll_expired`] then.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.expiry.iter().find(|(_, key, id)| self.sessions.get(key).is_some_and(|s| s.id == *id)).map(|(t, ..)| *t)
    }

    /// Sniffs one client-to-server datagram of flow `key` received at `now`.
    pub fn on_datagram(&mut self, key: K, datagram: D, now: Instant) -> Verdict<D> {
        // Fast path: no session open and not an Initial; no hashing.
        if self.sessions.is_empty() && !is_likely_initial(datagram.as_ref()) {
            return Self::pass(Outcome::NotQuic, Vec::new(), datagram);
        }
        if let Some(session) = self.sessions.get_mut(&key) {
            let outcome = session.sniffer.on_datagram(datagram.as_ref(), &mut self.scratch);
            let over_limit = session.held.len() + 1 > self.limits.held_datagrams
                || session.held_bytes + datagram.as_ref().len() > self.limits.held_bytes;
            return match outcome {
                Outcome::NeedMore if !over_limit => {
                    session.held_bytes += datagram.as_ref().len();
                    session.held.push(datagram);
                    Verdict { outcome, release: Release::new(Vec::new(), None) }
                }
                Outcome::NeedMore => {
                    self.stats.held_limit += 1;
                    self.finish(key, Outcome::NoName, Some(datagram), now)
                }
                outcome => self.finish(key, outcome, Some(datagram), now),
            };
        }
        if !is_likely_initial(datagram.as_ref()) {
            return Self::pass(Outcome::NotQuic, Vec::new(), datagram);
        }
        if self.negative.get(&key).is_some_and(|&until| now < until) {
            self.stats.negative_hits += 1;
            return Self::pass(Outcome::NoName, Vec::new(), datagram);
        }
        self.spare.reset();
        match self.spare.on_datagram(datagram.as_ref(), &mut self.scratch) {
            Outcome::NeedMore => {
                let sniffer = std::mem::take(&mut self.spare);
                self.open(key, sniffer, datagram, now)
            }
            outcome => {
                self.count(&outcome);
                if matches!(outcome, Outcome::NoName | Outcome::NotQuic) {
                    self.remember_failure(key, now);
                }
                Self::pass(outcome, Vec::new(), datagram)
            }
        }
    }

    /// Ends one session whose TTL has passed by `now`, returning its flow and held datagrams (to forward with
    /// [`Outcome::NoName`]). Call until `None`.
    pub fn poll_expired(&mut self, now: Instant) -> Option<(K, Release<D>)> {
        while let Some((deadline, key, id)) = self.expiry.front() {
            if self.sessions.get(key).is_none_or(|s| s.id != *id) {
                self.expiry.pop_front();
                continue;
            }
            if *deadline > now {
                return None;
            }
            let (_, key, _) = self.expiry.pop_front()?;
            let session = self.sessions.remove(&key)?;
            self.stats.expired += 1;
            self.stats.no_name += 1;
            self.remember_failure(key.clone(), now);
            return Some((key, Release::new(session.held, None)));
        }
        None
    }

    fn open(&mut self, key: K, sniffer: InitialSniffer, datagram: D, now: Instant) -> Verdict<D> {
        if self.sessions.len() >= self.limits.sessions {
            self.stats.table_full += 1;
            self.stats.no_name += 1;
            return Self::pass(Outcome::NoName, Vec::new(), datagram);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.stats.sessions_created += 1;
        let held_bytes = datagram.as_ref().len();
        self.sessions.insert(key.clone(), Session { id, sniffer, held: vec![datagram], held_bytes });
        self.expiry.push_back((now + self.limits.ttl, key, id));
        if self.expiry.len() > 2 * self.limits.sessions {
            // Decided sessions leave their entries behind until they reach the front; drop them in one pass.
            let sessions = &self.sessions;
            self.expiry.retain(|(_, k, id)| sessions.get(k).is_some_and(|s| s.id == *id));
        }
        Verdict { outcome: Outcome::NeedMore, release: Release::new(Vec::new(), None) }
    }

    fn finish(&mut self, key: K, outcome: Outcome, current: Option<D>, now: Instant) -> Verdict<D> {
        let held = self.sessions.remove(&key).map(|s| s.held).unwrap_or_default();
        self.count(&outcome);
        if matches!(outcome, Outcome::NoName | Outcome::NotQuic) {
            self.remember_failure(key, now);
        }
        Verdict { outcome, release: Release::new(held, current) }
    }

    fn pass(outcome: Outcome, held: Vec<D>, datagram: D) -> Verdict<D> {
        Verdict { outcome, release: Release::new(held, Some(datagram)) }
    }

    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Name { .. } => self.stats.named += 1,
            Outcome::NoName => self.stats.no_name += 1,
            Outcome::NotQuic => self.stats.not_quic_after_precheck += 1,
            Outcome::NeedMore => {}
        }
    }

    fn remember_failure(&mut self, key: K, now: Instant) {
        let until = now + self.limits.negative_ttl;
        while self.negative.len() >= self.limits.negative_entries {
            let Some((expires, old)) = self.negative_order.pop_front() else { break };
            if self.negative.get(&old) == Some(&expires) {
                self.negative.remove(&old);
            }
        }
        self.negative.insert(key.clone(), until);
        self.negative_order.push_back((until, key));
        if self.negative_order.len() > 2 * self.limits.negative_entries {
            let negative = &self.negative;
            self.negative_order.retain(|(t, k)| negative.get(k) == Some(t));
        }
    }
}
