//! Per-dimension lookup tables: a packet's value in one dimension (destination address, source port, ...) maps
//! to one precomputed bitset over rules, "the rules none of whose terms of this dimension fail for this value".
//!
//! Value spaces are cut into classes within which every term of the dimension answers the same: elementary
//! intervals for addresses and ports (a sweep over the prefix and range bounds), the listed values plus "any
//! other" for MACs, process names and interface names, every value for the small spaces. Finite classes are
//! evaluated with [`reference::term_matches`] on a representative packet, so they agree with the reference by
//! construction; intervals are swept, and the differential test holds them to the reference.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::rules::ir::{L4, Matcher, Packet, PacketDirection, Term};
use crate::rules::reference::term_matches;

/// Distinct bitsets over rules, `words` u64 each, shared by every dimension.
pub(super) struct SetTable {
    pub words: usize,
    pub data: Vec<u64>,
    index: HashMap<Box<[u64]>, u32>,
}

impl SetTable {
    pub fn new(words: usize) -> Self {
        Self { words, data: Vec::new(), index: HashMap::new() }
    }

    /// The id of `bits`, adding it if new.
    pub fn intern(&mut self, bits: &[u64]) -> u32 {
        if let Some(&id) = self.index.get(bits) {
            return id;
        }
        let id = u32::try_from(self.data.len() / self.words.max(1)).expect("fewer than 2^32 distinct rule sets");
        self.data.extend_from_slice(bits);
        self.index.insert(bits.into(), id);
        id
    }
}

/// A term of one dimension and the rule it belongs to.
#[derive(Clone, Copy)]
pub(super) struct DimTerm<'r> {
    pub rule: usize,
    pub term: &'r Term,
}

fn clear(bits: &mut [u64], rule: usize) {
    bits[rule / 64] &= !(1u64 << (rule % 64));
}

fn set(bits: &mut [u64], rule: usize) {
    bits[rule / 64] |= 1u64 << (rule % 64);
}

/// The pass set of one class: every rule, minus the rules with a term that fails on `packet`.
fn pass_set(all: &[u64], terms: &[DimTerm<'_>], packet: &Packet<'_>, sets: &mut SetTable) -> u32 {
    let mut bits = all.to_vec();
    for dim_term in terms {
        if !term_matches(dim_term.term, packet) {
            clear(&mut bits, dim_term.rule);
        }
    }
    sets.intern(&bits)
}

/// A packet with every field at a neutral value; each dimension changes only its own field.
pub(super) fn neutral_packet() -> Packet<'static> {
    Packet {
        direction: PacketDirection::LanIn,
        interface: None,
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        sport: 0,
        dport: 0,
        l4: L4::Tcp,
        dscp: 0,
        mac: None,
        pname: None,
        domains: &[],
    }
}

/// Sorted interval starts (the first is zero) and the set id of each interval.
pub(super) struct Intervals<K> {
    starts: Vec<K>,
    ids: Vec<u32>,
}

impl<K: Copy + Ord> Intervals<K> {
    #[inline]
    pub fn get(&self, key: K) -> u32 {
        let index = self.starts.partition_point(|&start| start <= key);
        self.ids[index - 1]
    }
}

/// IPv4 intervals with a direct index on the upper 16 address bits, so a lookup binary-searches only the
/// starts inside one /16 (a country list of 8,000 prefixes leaves a handful per /16) instead of all of them.
pub(super) struct V4Intervals {
    intervals: Intervals<u32>,
    /// `buckets[h]`: how many starts lie below `h << 16`; `BUCKETS + 1` entries. Empty for small tables.
    buckets: Box<[u32]>,
}

/// One bucket per value of the upper 16 bits of an IPv4 address.
const BUCKETS: usize = 1 << 16;
/// Below this many intervals a plain binary search stays in a few cache lines; the index (256 KiB) is not
/// worth it.
const MIN_INDEXED: usize = 64;

impl V4Intervals {
    fn new(intervals: Intervals<u32>) -> Self {
        if intervals.starts.len() < MIN_INDEXED {
            return Self { intervals, buckets: Box::default() };
        }
        let buckets = (0..=BUCKETS as u64)
            .map(|bucket| intervals.starts.partition_point(|&start| u64::from(start) < bucket << 16) as u32)
            .collect();
        Self { intervals, buckets }
    }

    #[inline]
    pub fn get(&self, key: u32) -> u32 {
        if self.buckets.is_empty() {
            return self.intervals.get(key);
        }
        let bucket = (key >> 16) as usize;
        let (low, high) = (self.buckets[bucket] as usize, self.buckets[bucket + 1] as usize);
        let index = low + self.intervals.starts[low..high].partition_point(|&start| start <= key);
        self.intervals.ids[index - 1]
    }
}

/// Interval keys: addresses and ports as unsigned integers.
pub(super) trait Key: Copy + Ord {
    const ZERO: Self;
    fn successor(self) -> Option<Self>;
}

impl Key for u16 {
    const ZERO: Self = 0;
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Key for u32 {
    const ZERO: Self = 0;
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Key for u128 {
    const ZERO: Self = 0;
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

/// Sweeps the inclusive `ranges` of each term (`ranges[i]` belongs to `terms[i]`) into intervals of equal pass
/// sets. A term is "covered" where any of its ranges lies; it is ok where covered differs from negated.
pub(super) fn sweep<K: Key>(
    all: &[u64],
    terms: &[DimTerm<'_>],
    ranges: &[Vec<(K, K)>],
    sets: &mut SetTable,
) -> Intervals<K> {
    let mut events: Vec<(K, usize, i32)> = Vec::new();
    for (index, term_ranges) in ranges.iter().enumerate() {
        for &(start, end) in term_ranges {
            events.push((start, index, 1));
            if let Some(after) = end.successor() {
                events.push((after, index, -1));
            }
        }
    }
    events.sort_unstable_by_key(|event| event.0);
    let rules = all.len() * 64;
    let mut covered = vec![0i32; terms.len()];
    let mut failing = vec![0u32; rules];
    let mut bits = all.to_vec();
    for dim_term in terms {
        if !dim_term.term.negated {
            failing[dim_term.rule] += 1;
            clear(&mut bits, dim_term.rule);
        }
    }
    let mut out = Intervals { starts: Vec::new(), ids: Vec::new() };
    let mut at = K::ZERO;
    let mut next = 0;
    loop {
        while next < events.len() && events[next].0 == at {
            let (_, index, delta) = events[next];
            next += 1;
            let before = covered[index] > 0;
            covered[index] += delta;
            let after = covered[index] > 0;
            if before == after {
                continue;
            }
            let dim_term = terms[index];
            let now_ok = after != dim_term.term.negated;
            if now_ok {
                failing[dim_term.rule] -= 1;
                if failing[dim_term.rule] == 0 {
                    set(&mut bits, dim_term.rule);
                }
            } else {
                failing[dim_term.rule] += 1;
                clear(&mut bits, dim_term.rule);
            }
        }
        let id = sets.intern(&bits);
        if out.ids.last() != Some(&id) {
            out.starts.push(at);
            out.ids.push(id);
        }
        match events.get(next) {
            Some(&(position, _, _)) => at = position,
            None => break,
        }
    }
    out
}

fn v4_range(addr: Ipv4Addr, prefix: u8) -> (u32, u32) {
    let host = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    let start = u32::from(addr) & !host;
    (start, start | host)
}

fn v6_range(addr: Ipv6Addr, prefix: u8) -> (u128, u128) {
    let host = u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    let start = u128::from(addr) & !host;
    (start, start | host)
}

/// Destination or source addresses: one interval table per family.
pub(super) struct IpTable {
    pub v4: V4Intervals,
    pub v6: Intervals<u128>,
}

pub(super) fn ip_table(all: &[u64], terms: &[DimTerm<'_>], sets: &mut SetTable) -> IpTable {
    let nets = |term: &Term| match &term.matcher {
        Matcher::DstIp(nets) | Matcher::SrcIp(nets) => nets.clone(),
        _ => unreachable!("only address terms are swept as addresses"),
    };
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for dim_term in terms {
        let (mut four, mut six) = (Vec::new(), Vec::new());
        for net in nets(dim_term.term) {
            match net.addr {
                IpAddr::V4(addr) => four.push(v4_range(addr, net.prefix)),
                IpAddr::V6(addr) => six.push(v6_range(addr, net.prefix)),
            }
        }
        v4.push(four);
        v6.push(six);
    }
    IpTable { v4: V4Intervals::new(sweep(all, terms, &v4, sets)), v6: sweep(all, terms, &v6, sets) }
}

pub(super) fn port_table(all: &[u64], terms: &[DimTerm<'_>], sets: &mut SetTable) -> Intervals<u16> {
    let ranges: Vec<Vec<(u16, u16)>> = terms
        .iter()
        .map(|dim_term| match &dim_term.term.matcher {
            // An empty range (start > end, only from IR built in code) covers nothing, as in `PortRange::contains`.
            Matcher::DstPort(ranges) | Matcher::SrcPort(ranges) => {
                ranges.iter().filter(|r| r.start <= r.end).map(|r| (r.start, r.end)).collect()
            }
            _ => unreachable!("only port terms are swept as ports"),
        })
        .collect();
    sweep(all, terms, &ranges, sets)
}

/// A finite dimension: one set per representative packet.
pub(super) fn finite<'p>(
    all: &[u64],
    terms: &[DimTerm<'_>],
    packets: impl IntoIterator<Item = Packet<'p>>,
    sets: &mut SetTable,
) -> Vec<u32> {
    packets.into_iter().map(|packet| pass_set(all, terms, &packet, sets)).collect()
}

/// Listed keys (sorted) with their set ids, and the id for any key not listed (or none).
pub(super) struct Listed<T> {
    pub keys: Vec<T>,
    pub ids: Vec<u32>,
    pub unlisted: u32,
}

impl<T: Ord> Listed<T> {
    #[inline]
    pub fn get<Q: Ord + ?Sized>(&self, key: Option<&Q>) -> u32
    where
        T: std::borrow::Borrow<Q>,
    {
        key.and_then(|key| self.keys.binary_search_by(|probe| probe.borrow().cmp(key)).ok())
            .map_or(self.unlisted, |index| self.ids[index])
    }
}
