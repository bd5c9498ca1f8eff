//! The answer cache of one worker: pre-packed responses keyed by everything that can change them, bounded by
//! entries and by bytes, evicted by CLOCK (second chance), with RFC 8767 serve-stale and exactly one background
//! refresh per stale entry.
//!
//! An entry keeps the upstream's response bytes (ID zero) and the offset of every TTL field, so a hit is a copy,
//! an ID write, the client's question case written back, and one TTL write per record: no decode, no encode.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hash::{FxBuild, FxMap};
use crate::wire::{self, HEADER_LEN};

/// The TTL written into answers served stale (RFC 8767 section 4 recommends 30 s).
pub const STALE_ANSWER_TTL: u32 = 30;
/// The longest an answer is kept fresh, whatever the upstream says (one week).
pub const MAX_CACHE_TTL: u32 = 7 * 24 * 3600;
/// RFC 2308 section 5: negative answers are cached for at most this long by default resolvers (3 hours).
pub const MAX_NEGATIVE_TTL: u32 = 3 * 3600;
/// Byte bound of one worker's cache when the caller does not set one.
pub const DEFAULT_MAX_BYTES: usize = 128 << 20;
/// Per-entry bookkeeping counted against the byte bound on top of key and response (map slot, offsets, names).
const ENTRY_OVERHEAD: usize = 96;

/// Addresses and the names that led to them, published to the kernel's domain routing while the entry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainFacts {
    /// A and AAAA addresses of the answer.
    pub addrs: Box<[IpAddr]>,
    /// The question name and every owner name of the answer section (the CNAME chain), lower-case.
    pub names: Arc<[Box<str>]>,
}

/// What to store.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// The response, ID zero.
    pub packed: Box<[u8]>,
    /// Offsets of the TTL fields to rewrite (every record but OPT).
    pub ttl_offsets: Box<[u32]>,
    /// The TTLs as received, one per offset.
    pub ttls: Box<[u32]>,
    /// Where the question ends in `packed`.
    pub question_end: usize,
    /// How long the entry is fresh.
    pub lifetime: Duration,
    /// Domain routing facts, if the answer has addresses.
    pub domains: Option<DomainFacts>,
}

struct Entry {
    key: Box<[u8]>,
    new: NewEntry,
    stored_at: Instant,
    expires_at: Instant,
    referenced: bool,
    refreshing: bool,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.key.len() + self.new.packed.len() + self.new.ttl_offsets.len() * 8 + ENTRY_OVERHEAD
    }
}

/// How a lookup went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    /// Not cached, or too old to serve.
    Miss,
    /// Fresh: the answer was written.
    Fresh,
    /// Expired but within the serve-stale window: the answer was written with [`STALE_ANSWER_TTL`];
    /// `refresh` is true for exactly one lookup per stale period (the caller starts the refresh).
    Stale {
        /// Start a background refresh.
        refresh: bool,
    },
}

/// Cache counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries now.
    pub entries: usize,
    /// Bytes now (keys, responses, bookkeeping).
    pub bytes: usize,
    /// Evicted to stay within the bounds.
    pub evicted: u64,
    /// Removed because they were past the serve-stale window.
    pub expired: u64,
    /// Fresh hits.
    pub hits: u64,
    /// Stale hits.
    pub stale_hits: u64,
    /// Misses.
    pub misses: u64,
}

/// One worker's cache.
pub struct Cache {
    map: FxMap<Box<[u8]>, u32>,
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    hand: usize,
    sweep_at: usize,
    max_entries: usize,
    max_bytes: usize,
    /// `None`: stale answers are served forever; `Some(0)`: never.
    stale_window: Option<Duration>,
    stats: CacheStats,
    removed: Vec<DomainFacts>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl Cache {
    /// A cache of at most `max_entries` entries and `max_bytes` bytes; `stale_window` as above.
    pub fn new(max_entries: usize, max_bytes: usize, stale_window: Option<Duration>, seed: u64) -> Self {
        Self {
            map: FxMap::with_capacity_and_hasher(max_entries.min(1 << 16), FxBuild(seed)),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            sweep_at: 0,
            max_entries: max_entries.max(1),
            max_bytes,
            stale_window,
            stats: CacheStats::default(),
            removed: Vec::new(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Domain facts of entries removed since the last call (for withdrawing them from the kernel).
    pub fn take_removed(&mut self) -> impl Iterator<Item = DomainFacts> + '_ {
        self.removed.drain(..)
    }

    /// Looks `key` up and, on a hit, writes the answer for the client query `query` (its ID and question case
    /// are used) into `out`.
    pub fn lookup(&mut self, key: &[u8], now: Instant, query: &[u8], out: &mut Vec<u8>) -> Hit {
        let Some(&slot) = self.map.get(key) else {
            self.stats.misses += 1;
            return Hit::Miss;
        };
        let entry = self.slots[slot as usize].as_mut().expect("mapped slots hold entries");
        let stale = now >= entry.expires_at;
        if stale {
            let servable = match self.stale_window {
                None => true,
                Some(window) => now < entry.expires_at + window,
            };
            if !servable {
                self.remove_slot(slot);
                self.stats.expired += 1;
                self.stats.misses += 1;
                return Hit::Miss;
            }
        }
        entry.referenced = true;
        write_answer(entry, now, stale, query, out);
        if stale {
            self.stats.stale_hits += 1;
            let refresh = !entry.refreshing;
            entry.refreshing = true;
            Hit::Stale { refresh }
        } else {
            self.stats.hits += 1;
            Hit::Fresh
        }
    }

    /// A background refresh of `key` failed: the next stale hit starts another (the re-arm RFC 8767 needs).
    pub fn refresh_failed(&mut self, key: &[u8]) {
        if let Some(&slot) = self.map.get(key)
            && let Some(entry) = self.slots[slot as usize].as_mut()
        {
            entry.refreshing = false;
        }
    }

    /// Stores `new` under `key`, replacing what was there, then evicts until within both bounds. An entry with
    /// a zero lifetime is not stored (and removes the old one).
    pub fn insert(&mut self, key: &[u8], new: NewEntry, now: Instant) {
        if let Some(&slot) = self.map.get(key) {
            self.remove_slot(slot);
        }
        if new.lifetime.is_zero() {
            return;
        }
        let entry = Entry {
            key: key.into(),
            expires_at: now + new.lifetime,
            new,
            stored_at: now,
            referenced: false,
            refreshing: false,
        };
        let bytes = entry.bytes();
        if bytes > self.max_bytes {
            return;
        }
        while self.stats.entries + 1 > self.max_entries || self.stats.bytes + bytes > self.max_bytes {
            if !self.evict_one() {
                break;
            }
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(entry);
                slot
            }
            None => {
                self.slots.push(Some(entry));
                (self.slots.len() - 1) as u32
            }
        };
        self.map.insert(key.into(), slot);
        self.stats.entries += 1;
        self.stats.bytes += bytes;
    }

    /// CLOCK: sweep from the hand, giving referenced entries a second chance; an entry past its stale window
    /// goes first. Returns false when the cache is empty.
    fn evict_one(&mut self) -> bool {
        if self.stats.entries == 0 {
            return false;
        }
        loop {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let slot = self.hand;
            self.hand += 1;
            let Some(entry) = self.slots[slot].as_mut() else { continue };
            if entry.referenced {
                entry.referenced = false;
                continue;
            }
            self.remove_slot(slot as u32);
            self.stats.evicted += 1;
            return true;
        }
    }

    fn remove_slot(&mut self, slot: u32) {
        let Some(entry) = self.slots[slot as usize].take() else { return };
        self.map.remove(&entry.key);
        self.free.push(slot);
        self.stats.entries -= 1;
        self.stats.bytes -= entry.bytes();
        if let Some(domains) = entry.new.domains {
            self.removed.push(domains);
        }
    }

    /// Removes entries past their serve-stale window among the next `budget` slots after the sweep position
    /// (so their addresses leave the domain routing table even if nobody asks for them again).
    pub fn sweep(&mut self, now: Instant, budget: usize) {
        let Some(window) = self.stale_window else { return };
        for _ in 0..budget.min(self.slots.len()) {
            if self.sweep_at >= self.slots.len() {
                self.sweep_at = 0;
            }
            let slot = self.sweep_at;
            self.sweep_at += 1;
            if self.slots[slot].as_ref().is_some_and(|entry| now >= entry.expires_at + window) {
                self.remove_slot(slot as u32);
                self.stats.expired += 1;
            }
        }
    }

    /// Whether the servable entry of `key` has A/AAAA addresses; `None` when nothing servable is cached.
    pub fn has_addresses(&self, key: &[u8], now: Instant) -> Option<bool> {
        let slot = *self.map.get(key)?;
        let entry = self.slots[slot as usize].as_ref()?;
        let servable = now < entry.expires_at
            || match self.stale_window {
                None => true,
                Some(window) => now < entry.expires_at + window,
            };
        servable.then_some(entry.new.domains.is_some())
    }

    /// Whether `key` is cached (fresh or stale), for tests.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    /// The stored response bytes of `key` (ID zero), for tests and diagnostics.
    pub fn packed(&self, key: &[u8]) -> Option<&[u8]> {
        let slot = *self.map.get(key)?;
        self.slots[slot as usize].as_ref().map(|entry| &*entry.new.packed)
    }
}

fn write_answer(entry: &Entry, now: Instant, stale: bool, query: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&entry.new.packed);
    wire::set_id(out, wire::id(query));
    // The client's question case (0x20 randomisation, RFC draft-vixie-dnsext-dns0x20) goes back as it came.
    let question_end = entry.new.question_end;
    if query.len() >= question_end && out.len() >= question_end {
        out[HEADER_LEN..question_end].copy_from_slice(&query[HEADER_LEN..question_end]);
    }
    let age = now.saturating_duration_since(entry.stored_at).as_secs().min(u64::from(u32::MAX)) as u32;
    let lifetime = entry.new.lifetime.as_secs().min(u64::from(u32::MAX)) as u32;
    for (&offset, &ttl) in entry.new.ttl_offsets.iter().zip(entry.new.ttls.iter()) {
        let value = if stale { STALE_ANSWER_TTL } else { ttl.min(lifetime).saturating_sub(age) };
        let at = offset as usize;
        if let Some(field) = out.get_mut(at..at + 4) {
            field.copy_from_slice(&value.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests;
