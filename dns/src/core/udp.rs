//! Upstream UDP sockets: many queries per socket under random IDs, demultiplexed by ID and question; answered
//! and timed-out IDs quarantined; sockets that receive too many unexpected or mismatched datagrams retired.

use std::collections::VecDeque;
use std::time::Instant;

use super::FlightRef;
use crate::hash::{FxBuild, FxMap};
use crate::rng::Rng;

/// Random draws for a free ID before the socket counts as full.
const ID_DRAWS: usize = 32;

/// One upstream UDP socket.
pub(super) struct UdpSock {
    pub generation: u32,
    pub upstream: usize,
    /// ID -> the flight and attempt it carries.
    pub pending: FxMap<u16, (FlightRef, u32)>,
    /// IDs not to reuse before the instant, oldest first.
    quarantine: VecDeque<(Instant, u16)>,
    /// Bit per ID: in `quarantine`.
    quarantined: Box<[u64; 1024]>,
    pub suspicious: u32,
    pub retiring: bool,
    pub last_used: Instant,
}

impl UdpSock {
    pub fn new(generation: u32, upstream: usize, now: Instant, seed: u64) -> Self {
        Self {
            generation,
            upstream,
            pending: FxMap::with_capacity_and_hasher(64, FxBuild(seed)),
            quarantine: VecDeque::new(),
            quarantined: Box::new([0; 1024]),
            suspicious: 0,
            retiring: false,
            last_used: now,
        }
    }

    pub fn is_quarantined(&self, id: u16) -> bool {
        self.quarantined[usize::from(id) / 64] & (1 << (id % 64)) != 0
    }

    fn set_quarantined(&mut self, id: u16, on: bool) {
        let word = &mut self.quarantined[usize::from(id) / 64];
        if on {
            *word |= 1 << (id % 64);
        } else {
            *word &= !(1 << (id % 64));
        }
    }

    /// Releases quarantined IDs whose time is up.
    pub fn expire_quarantine(&mut self, now: Instant) {
        while let Some(&(until, id)) = self.quarantine.front() {
            if until > now {
                break;
            }
            self.quarantine.pop_front();
            self.set_quarantined(id, false);
        }
    }

    /// A random ID neither pending nor quarantined, registered for `flight`; `None` when none was found.
    pub fn allocate(&mut self, rng: &mut Rng, flight: FlightRef, attempt: u32) -> Option<u16> {
        for _ in 0..ID_DRAWS {
            let id = rng.next_u16();
            if self.is_quarantined(id) || self.pending.contains_key(&id) {
                continue;
            }
            self.pending.insert(id, (flight, attempt));
            return Some(id);
        }
        None
    }

    /// Ends `id`'s use (answered or given up) and quarantines it until `until`.
    pub fn release(&mut self, id: u16, until: Instant) {
        if self.pending.remove(&id).is_some() && !self.is_quarantined(id) {
            self.quarantine.push_back((until, id));
            self.set_quarantined(id, true);
        }
    }
}
