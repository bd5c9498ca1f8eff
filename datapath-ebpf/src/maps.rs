//! The maps and load-time globals. Names and value types come from `datapath-abi` (`names::*`); the loader
//! checks they exist.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, SockMap},
};
use datapath_abi::{
    Admission, FlowBucket, FlowKey,
    counters::COUNTER_SLOTS,
    route::{
        BANKS, COMM_LEN, DOMAIN_ENTRIES, DomainKey, IFACE_ENTRIES, IfaceKey, LPM_DATA, LPM_ENTRIES, MAC_ENTRIES,
        MAX_CLASSES, MAX_RULES, MacKey, PNAME_ENTRIES, PORT_SLOTS, PnameKey, RouteAction, RouteConfig, RouteProbe,
        RouteSelector, RuleBits, SMALL_SLOTS, SOCK_PNAME_ENTRIES,
    },
    steer::{FRAG_ENTRIES, FragAction, FragKey, MAX_WORKERS, SOCKS_PER_WORKER, SteerConfig},
};

/// The flow table: buckets of slots, mmap-able so userspace reads and expires flows without system calls.
/// The loader sizes it (`map_max_entries`) to `FLOW_BUCKETS`.
#[map(name = "FLOWS")]
pub static FLOWS: Array<FlowBucket> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The admission gate and clock sample, one entry.
#[map(name = "ADMISSION")]
pub static ADMISSION: Array<Admission> = Array::with_max_entries(1, 0);

/// Per-CPU event counters indexed by `datapath_abi::Counter`.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Where `clock_probe` writes the tick count.
#[map(name = "CLOCK_PROBE")]
pub static CLOCK_PROBE: Array<u64> = Array::with_max_entries(1, 0);

// The bank arrays are mmap-able: a reload writes the inactive bank as memory (131,072 port slots, thousands of
// class bitmaps) instead of one system call per element, then flips ROUTE_SELECTOR with one update.

/// The active routing bank.
#[map(name = "ROUTE_SELECTOR")]
pub static ROUTE_SELECTOR: Array<RouteSelector> = Array::with_max_entries(1, 0);

/// Per-bank routing settings.
#[map(name = "ROUTE_CONFIG")]
pub static ROUTE_CONFIG: Array<RouteConfig> = Array::with_max_entries(BANKS, BPF_F_MMAPABLE);

/// Class bitmaps of every dimension, `bank * MAX_CLASSES + class`.
#[map(name = "ROUTE_CLASS_BITS")]
pub static ROUTE_CLASS_BITS: Array<RuleBits> = Array::with_max_entries(BANKS * MAX_CLASSES, BPF_F_MMAPABLE);

/// Rule decisions, `bank * MAX_RULES + rule`.
#[map(name = "ROUTE_ACTIONS")]
pub static ROUTE_ACTIONS: Array<RouteAction> = Array::with_max_entries(BANKS * MAX_RULES as u32, BPF_F_MMAPABLE);

/// Address prefix -> class (both address dimensions, both banks, in the key).
#[map(name = "ROUTE_LPM")]
pub static ROUTE_LPM: LpmTrie<[u8; LPM_DATA], u32> = LpmTrie::with_max_entries(LPM_ENTRIES, BPF_F_NO_PREALLOC);

/// Port -> class, `bank * PORT_SLOTS + (0 dst | 1 src) * 65536 + port`.
#[map(name = "ROUTE_PORT_CLASS")]
pub static ROUTE_PORT_CLASS: Array<u64> = Array::with_max_entries(BANKS * PORT_SLOTS, BPF_F_MMAPABLE);

/// Transport (4) and DSCP (64) -> class, `bank * SMALL_SLOTS + slot`.
#[map(name = "ROUTE_SMALL_CLASS")]
pub static ROUTE_SMALL_CLASS: Array<u64> = Array::with_max_entries(BANKS * SMALL_SLOTS, BPF_F_MMAPABLE);

/// Interface (bank, direction, ifindex) -> class.
#[map(name = "ROUTE_IFACE")]
pub static ROUTE_IFACE: HashMap<IfaceKey, u32> = HashMap::with_max_entries(IFACE_ENTRIES, 0);

/// Source MAC -> class.
#[map(name = "ROUTE_MAC")]
pub static ROUTE_MAC: HashMap<MacKey, u32> = HashMap::with_max_entries(MAC_ENTRIES, BPF_F_NO_PREALLOC);

/// Destination address -> domain bitmap, from DNS answers.
#[map(name = "ROUTE_DOMAIN")]
pub static ROUTE_DOMAIN: HashMap<DomainKey, RuleBits> = HashMap::with_max_entries(DOMAIN_ENTRIES, BPF_F_NO_PREALLOC);

/// Process name -> class.
#[map(name = "ROUTE_PNAME")]
pub static ROUTE_PNAME: HashMap<PnameKey, u32> = HashMap::with_max_entries(PNAME_ENTRIES, 0);

/// Socket cookie -> `comm` of its creator (LRU: old sockets fall out first, never an error for a new one).
#[map(name = "SOCK_PNAME")]
pub static SOCK_PNAME: LruHashMap<u64, [u8; COMM_LEN]> = LruHashMap::with_max_entries(SOCK_PNAME_ENTRIES, 0);

/// Per-CPU scratch for the routing accumulator: 128 bytes the 512-byte BPF stack cannot spare once the flow
/// key, the parse state and the FIB request are on it.
#[map(name = "ROUTE_SCRATCH")]
pub static ROUTE_SCRATCH: PerCpuArray<RuleBits> = PerCpuArray::with_max_entries(1, 0);

/// How proxied flows reach the workers.
#[map(name = "STEER_CONFIG")]
pub static STEER_CONFIG: Array<SteerConfig> = Array::with_max_entries(1, 0);

/// The workers' transparent sockets, at `steer_slot(worker, ipv6, udp)`.
#[map(name = "STEER_SOCKS")]
pub static STEER_SOCKS: SockMap = SockMap::with_max_entries(MAX_WORKERS * SOCKS_PER_WORKER, 0);

/// What the later fragments of a datagram do: its first fragment's decision (`datapath_abi::steer`).
#[map(name = "FRAG_TRAINS")]
pub static FRAG_TRAINS: LruHashMap<FragKey, FragAction> = LruHashMap::with_max_entries(FRAG_ENTRIES, 0);

/// The worker slot of a flow whose fragmented datagrams are steered, for `sk_lookup` after reassembly.
#[map(name = "REASM_STEER")]
pub static REASM_STEER: LruHashMap<FlowKey, u32> = LruHashMap::with_max_entries(FRAG_ENTRIES, 0);

/// In/out of `route_probe`.
#[map(name = "ROUTE_PROBE")]
pub static ROUTE_PROBE: Array<RouteProbe> = Array::with_max_entries(1, 0);

/// Seed of `flow_hash`, random per daemon; set by the loader.
#[unsafe(no_mangle)]
static FLOW_HASH_SEED: u64 = 0;

/// Buckets in `FLOWS` (a power of two); set by the loader.
#[unsafe(no_mangle)]
static FLOW_BUCKETS: u32 = 1;

/// 1: XDP leaves its parse summary in the packet's metadata (`bpf_xdp_adjust_meta`); 0 where the kernel refuses
/// that helper to XDP programs. Set by the loader; a read-only global, so the verifier drops the branch not taken
/// and never sees the helper call when it is 0.
#[unsafe(no_mangle)]
static XDP_META: u32 = 1;

/// Whether XDP writes its parse summary. Read volatile: the loader rewrites it after compilation.
#[inline(always)]
pub fn xdp_meta() -> bool {
    // SAFETY: reading our own static.
    unsafe { core::ptr::read_volatile(&XDP_META) != 0 }
}

/// The flow-hash seed. Read volatile: the loader rewrites it after compilation.
#[inline(always)]
pub fn flow_hash_seed() -> u64 {
    // SAFETY: reading our own static.
    unsafe { core::ptr::read_volatile(&FLOW_HASH_SEED) }
}

/// The bucket count. Read volatile: the loader rewrites it after compilation.
#[inline(always)]
pub fn flow_buckets() -> u32 {
    // SAFETY: reading our own static.
    unsafe { core::ptr::read_volatile(&FLOW_BUCKETS) }
}
