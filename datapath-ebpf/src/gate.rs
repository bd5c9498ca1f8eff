//! The admission gate: nothing is recorded unless userspace holds an open lease.

use aya_ebpf::helpers::bpf_jiffies64;
use datapath_abi::Admission;

use crate::maps::ADMISSION;

/// Ticks now (jiffies): the verifier inlines this read, where every nanosecond clock is a helper call.
#[inline(always)]
pub fn now_ticks() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_jiffies64() }
}

/// The gate if it is open at `now`.
#[inline(always)]
pub fn open_at(now: u64) -> Option<&'static Admission> {
    ADMISSION.get(0).filter(|gate| gate.is_open(now))
}

/// Whether userspace has opened the gate, without the lease check: for XDP, which records nothing in maps
/// and whose links die with the daemon, so it needs no clock.
#[inline(always)]
pub fn is_opened() -> bool {
    ADMISSION.get(0).is_some_and(|gate| gate.state == datapath_abi::gate::GATE_OPEN)
}
