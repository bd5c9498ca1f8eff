//! The maps and load-time globals. Names and value types come from `datapath-abi` (`names::*`); the loader
//! checks they exist.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, PerCpuArray},
};
use datapath_abi::{Admission, FlowBucket, counters::COUNTER_SLOTS};

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

/// Seed of `flow_hash`, random per daemon; set by the loader.
#[unsafe(no_mangle)]
static FLOW_HASH_SEED: u64 = 0;

/// Buckets in `FLOWS` (a power of two); set by the loader.
#[unsafe(no_mangle)]
static FLOW_BUCKETS: u32 = 1;

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
