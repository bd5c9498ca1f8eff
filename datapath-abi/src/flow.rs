//! The flow table: one slot per TCP/UDP 5-tuple seen on a LAN ingress or a WAN egress hook.
//!
//! The table is a set-associative hash table laid over an mmap-able BPF array: each array element is a
//! [`FlowBucket`] of [`BUCKET_WAYS`] [`FlowSlot`]s, and a flow lives in the bucket its [`flow_hash`] selects.
//! The kernel finds a flow with one array lookup (which the verifier inlines: no helper call) and a few
//! compares; userspace copies one bucket with `BPF_MAP_LOOKUP_ELEM` to look a flow up, and walks the table
//! through a small moving `mmap` window of the array to expire slots in place.
//!
//! Slot states move EMPTY -> BUSY -> VALID in the kernel (compare-and-swap claims, an atomic exchange
//! publishes) and VALID -> EMPTY in userspace (the janitor owns eviction). A bucket with no EMPTY slot cannot
//! take a new flow: the packet passes untouched and [`crate::Counter::FlowTableFull`] counts it.

use core::net::{IpAddr, Ipv6Addr};

use crate::{assert_layout, assert_offset};

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// Slots per bucket. Four ways keep the chance that a bucket overflows below 1 in 10,000 while the table is
/// under half full, and one bucket (384 bytes) spans six cache lines that the lookup reads front to back.
pub const BUCKET_WAYS: usize = 4;

/// Default capacity of the flow table, in flows (slots). 131,072 slots = 32,768 buckets = 12 MiB.
pub const FLOW_TABLE_DEFAULT_ENTRIES: u32 = 131_072;

/// [`FlowSlot::state`]: free.
pub const SLOT_EMPTY: u32 = 0;
/// [`FlowSlot::state`]: claimed by a CPU that is writing it; not yet visible to lookups.
pub const SLOT_BUSY: u32 = 1;
/// [`FlowSlot::state`]: holds a flow.
pub const SLOT_VALID: u32 = 2;

/// A flow's identity: the 5-tuple as the hook saw it.
///
/// Layout (40 bytes, align 8, so the hash and the compare read it as five `u64` words):
/// ```text
///  0..16  src_addr   [u8; 16]  network byte order, IPv4 as ::ffff:a.b.c.d
/// 16..32  dst_addr   [u8; 16]  network byte order
/// 32..34  src_port   u16       network byte order
/// 34..36  dst_port   u16       network byte order
/// 36      l4_proto   u8        IPPROTO_TCP or IPPROTO_UDP
/// 37..40  _pad       [u8; 3]   zero (hashed and compared like every other byte)
/// ```
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address, 16 bytes in network order.
    pub src_addr: [u8; 16],
    /// Destination address, 16 bytes in network order.
    pub dst_addr: [u8; 16],
    /// Source port in network byte order.
    pub src_port: u16,
    /// Destination port in network byte order.
    pub dst_port: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub l4_proto: u8,
    /// Always zero.
    pub _pad: [u8; 3],
}
assert_layout!(FlowKey, size = 40, align = 8);
assert_offset!(FlowKey, src_addr, 0);
assert_offset!(FlowKey, dst_addr, 16);
assert_offset!(FlowKey, src_port, 32);
assert_offset!(FlowKey, dst_port, 34);
assert_offset!(FlowKey, l4_proto, 36);

// The kernel builds keys as little-endian words (`FlowKey::from_words`); both sides must agree on byte order.
const _: () = assert!(cfg!(target_endian = "little"), "the flow-key ABI is little-endian (bpfel)");

/// The first 12 bytes of an IPv4-mapped IPv6 address (`::ffff:0:0/96`).
pub const V4_MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

impl FlowKey {
    /// Builds a key from addresses and host-order ports.
    pub fn new(src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16, l4_proto: u8) -> Self {
        Self {
            src_addr: mapped(src),
            dst_addr: mapped(dst),
            src_port: src_port.to_be(),
            dst_port: dst_port.to_be(),
            l4_proto,
            _pad: [0; 3],
        }
    }

    /// The source address; IPv4-mapped addresses come back as IPv4.
    pub fn src_ip(&self) -> IpAddr {
        unmapped(self.src_addr)
    }

    /// The destination address; IPv4-mapped addresses come back as IPv4.
    pub fn dst_ip(&self) -> IpAddr {
        unmapped(self.dst_addr)
    }

    /// The source port in host byte order.
    pub fn src_port(&self) -> u16 {
        u16::from_be(self.src_port)
    }

    /// The destination port in host byte order.
    pub fn dst_port(&self) -> u16 {
        u16::from_be(self.dst_port)
    }

    /// Whether two keys are equal, as one OR of word differences: written this way because LLVM turns a chain
    /// of compares (and `==` on arrays) into a `bcmp` call, which in BPF is a byte loop behind a call.
    #[inline(always)]
    pub fn same(&self, other: &FlowKey) -> bool {
        let (a, b) = (self.words(), other.words());
        ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0
    }

    /// The key from its five words (the inverse of [`FlowKey::words`]).
    #[inline(always)]
    pub fn from_words(words: [u64; 5]) -> Self {
        // SAFETY: every bit pattern is a valid FlowKey (integers and byte arrays, 40 bytes, align 8).
        unsafe { core::mem::transmute(words) }
    }

    /// The key as five words, the unit of [`flow_hash`] and of key compares.
    #[inline(always)]
    pub fn words(&self) -> [u64; 5] {
        // SAFETY: FlowKey is 40 bytes, 8-aligned, without padding the compiler adds (asserted above).
        unsafe { core::mem::transmute_copy(self) }
    }
}

/// `ip` as 16 bytes, IPv4 as `::ffff:a.b.c.d`: the address form of flow keys and the routing maps.
pub fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn unmapped(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The bucket-selecting hash of a key under `seed` (random per daemon, so flows an outsider picks cannot be
/// aimed at one bucket without knowing it). Multiply-xorshift over the five key words: no helper call, a few
/// dozen instructions in the kernel. Never 0, so 0 can mean "no hash" in a slot.
#[inline(always)]
pub fn flow_hash(key: &FlowKey, seed: u64) -> u32 {
    const MUL: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = seed;
    for w in key.words() {
        h = (h ^ w).wrapping_mul(MUL);
        h ^= h >> 29;
    }
    let folded = (h ^ (h >> 32)) as u32;
    if folded == 0 { 1 } else { folded }
}

/// Which hook saw a flow first, and so which way it travels through the gateway.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Forwarded client traffic, tagged at tc ingress of a LAN interface.
    LanIn = 1,
    /// Traffic originated on the gateway itself, tagged at tc egress of a WAN interface.
    WanOut = 2,
}

impl Direction {
    /// Decodes the byte stored in [`FlowTag::direction`].
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::LanIn),
            2 => Some(Self::WanOut),
            _ => None,
        }
    }

    /// The name operators see: `lan-in` or `wan-out`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LanIn => "lan-in",
            Self::WanOut => "wan-out",
        }
    }
}

/// [`FlowTag::flags`]: the kernel saw a TCP FIN or RST on this flow; userspace may evict it sooner.
pub const FLOW_F_TCP_CLOSING: u8 = 1 << 0;
/// [`FlowTag::flags`]: the flow's first packet was a TCP SYN, so a worker accepted it if it was steered; later
/// segments of a proxied flow are marked for local delivery only then (a flow seen mid-stream cannot be).
pub const FLOW_F_TCP_SYN: u8 = 1 << 1;

/// What the datapath knows about a flow.
///
/// Layout (48 bytes, align 8):
/// ```text
///  0..8   first_seen       u64  kernel ticks (jiffies) of the first packet
///  8..16  last_seen        u64  ticks; refreshed at most once per second of ticks
/// 16..24  packets          u64  packets seen by the tagging hook
/// 24..32  bytes            u64  bytes (skb->len) seen by the tagging hook
/// 32..36  ingress_ifindex  u32  LAN interface for lan-in; 0 (none) for wan-out
/// 36..40  egress_ifindex   u32  WAN interface for wan-out; the FIB's choice for lan-in (0: no route)
/// 40..44  mark             u32  firewall mark the routing decision sets on every packet (0: none)
/// 44      direction        u8   Direction
/// 45      flags            u8   FLOW_F_*
/// 46      outbound         u8   route::outbound::* decided on the first packet
/// 47      route_flags      u8   route::ACTION_* of that decision
/// ```
/// Times are kernel ticks because reading jiffies costs the kernel nothing (the verifier inlines it) while a
/// nanosecond clock is a helper call; [`crate::gate::Admission`] carries the tick rate and a tick/ns sample
/// so userspace converts. `packets` and `bytes` are plain adds: exact while one CPU serves a flow, which
/// receive-side steering arranges for a 5-tuple; a packet may be missed when two CPUs update one flow at once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTag {
    /// First packet, in ticks.
    pub first_seen: u64,
    /// Last refresh, in ticks.
    pub last_seen: u64,
    /// Packet count.
    pub packets: u64,
    /// Byte count.
    pub bytes: u64,
    /// Interface the flow entered on (0: originated on the gateway).
    pub ingress_ifindex: u32,
    /// Interface the flow leaves by (0: not known).
    pub egress_ifindex: u32,
    /// Firewall mark the decision sets (0: none).
    pub mark: u32,
    /// A [`Direction`] as `u8`.
    pub direction: u8,
    /// `FLOW_F_*` bits.
    pub flags: u8,
    /// `route::outbound::*`.
    pub outbound: u8,
    /// `route::ACTION_*`.
    pub route_flags: u8,
}
assert_layout!(FlowTag, size = 48, align = 8);
assert_offset!(FlowTag, first_seen, 0);
assert_offset!(FlowTag, last_seen, 8);
assert_offset!(FlowTag, packets, 16);
assert_offset!(FlowTag, bytes, 24);
assert_offset!(FlowTag, ingress_ifindex, 32);
assert_offset!(FlowTag, egress_ifindex, 36);
assert_offset!(FlowTag, mark, 40);
assert_offset!(FlowTag, direction, 44);
assert_offset!(FlowTag, flags, 45);
assert_offset!(FlowTag, outbound, 46);
assert_offset!(FlowTag, route_flags, 47);

/// One slot of a bucket.
///
/// Layout (96 bytes, align 8):
/// ```text
///  0..4   state  u32      SLOT_EMPTY / SLOT_BUSY / SLOT_VALID (atomic)
///  4..8   hash   u32      flow_hash of the key: compared before the key
///  8..48  key    FlowKey
/// 48..96  tag    FlowTag
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSlot {
    /// `SLOT_*`, only ever changed atomically.
    pub state: u32,
    /// The key's hash.
    pub hash: u32,
    /// The flow.
    pub key: FlowKey,
    /// What is known about it.
    pub tag: FlowTag,
}
assert_layout!(FlowSlot, size = 96, align = 8);
assert_offset!(FlowSlot, state, 0);
assert_offset!(FlowSlot, hash, 4);
assert_offset!(FlowSlot, key, 8);
assert_offset!(FlowSlot, tag, 48);

/// One element of the `FLOWS` array: [`BUCKET_WAYS`] slots (384 bytes, align 8).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowBucket {
    /// The ways.
    pub slots: [FlowSlot; BUCKET_WAYS],
}
assert_layout!(FlowBucket, size = 384, align = 8);

/// Buckets for a table of `entries` flows: `entries / BUCKET_WAYS` rounded up to a power of two, so the bucket
/// index is a mask of the hash.
pub const fn buckets_for(entries: u32) -> u32 {
    let want = entries.div_ceil(BUCKET_WAYS as u32);
    if want <= 1 { 1 } else { want.next_power_of_two() }
}

/// The bucket of `hash` in a table of `buckets` (a power of two).
#[inline(always)]
pub const fn bucket_of(hash: u32, buckets: u32) -> u32 {
    hash & (buckets - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_keys_round_trip_through_mapped_form() {
        let k = FlowKey::new("10.0.0.1".parse().unwrap(), 1234, "192.0.2.7".parse().unwrap(), 53, IPPROTO_UDP);
        assert_eq!(k.src_addr[..12], V4_MAPPED_PREFIX);
        assert_eq!(k.src_ip(), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(k.dst_ip(), "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!((k.src_port(), k.dst_port()), (1234, 53));
        assert_eq!(k.dst_port.to_ne_bytes(), 53u16.to_be_bytes());
    }

    #[test]
    fn ipv6_keys_round_trip() {
        let k = FlowKey::new("fd00::1".parse().unwrap(), 1, "2001:db8::2".parse().unwrap(), 2, IPPROTO_TCP);
        assert_eq!(k.src_ip(), "fd00::1".parse::<IpAddr>().unwrap());
        assert_eq!(k.dst_ip(), "2001:db8::2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn hash_depends_on_every_field_and_the_seed() {
        let k = FlowKey::new("10.0.0.1".parse().unwrap(), 1, "10.0.0.2".parse().unwrap(), 2, IPPROTO_UDP);
        let base = flow_hash(&k, 7);
        assert_ne!(base, 0);
        assert_ne!(flow_hash(&k, 8), base);
        for variant in [
            FlowKey { src_port: 3u16.to_be(), ..k },
            FlowKey { dst_port: 3u16.to_be(), ..k },
            FlowKey { l4_proto: IPPROTO_TCP, ..k },
            FlowKey::new("10.0.0.3".parse().unwrap(), 1, "10.0.0.2".parse().unwrap(), 2, IPPROTO_UDP),
        ] {
            assert_ne!(flow_hash(&variant, 7), base, "{variant:?}");
        }
    }

    #[test]
    fn hash_spreads_sequential_ports_over_buckets() {
        let buckets = buckets_for(4096);
        let mut load = [0u32; 1024];
        for port in 0..4096u16 {
            let k = FlowKey::new("10.0.0.1".parse().unwrap(), port, "10.0.0.2".parse().unwrap(), 443, IPPROTO_TCP);
            load[bucket_of(flow_hash(&k, 0x1234_5678), buckets) as usize] += 1;
        }
        let max = *load.iter().max().unwrap();
        assert!(max <= 12, "4096 flows over 1024 buckets put {max} in one");
    }

    #[test]
    fn bucket_count_is_a_power_of_two_covering_the_entries() {
        assert_eq!(buckets_for(FLOW_TABLE_DEFAULT_ENTRIES), 32_768);
        assert_eq!(buckets_for(10), 4);
        assert_eq!(buckets_for(1), 1);
        assert_eq!(bucket_of(0xFFFF_FFFF, 8), 7);
    }

    #[test]
    fn direction_decodes_only_known_values() {
        assert_eq!(Direction::from_u8(1), Some(Direction::LanIn));
        assert_eq!(Direction::from_u8(2), Some(Direction::WanOut));
        assert_eq!(Direction::from_u8(0), None);
        assert_eq!(Direction::WanOut.as_str(), "wan-out");
    }
}
