//! The admission gate (DESIGN.md invariant 2, fail-open admission), and the clock the datapath keeps time by.
//!
//! Until userspace opens the gate, and again once it is gone, every program passes traffic untouched and records
//! nothing. "Gone" is detected two ways: links made by the loader (XDP links, TCX links) die with the process,
//! and for attachments that outlive it (classic clsact filters) the gate carries a lease that userspace renews;
//! a lease that runs out closes the gate in the kernel without any help from userspace.
//!
//! Kernel time is ticks (jiffies): the verifier inlines `bpf_jiffies64`, while every nanosecond clock is a
//! helper call (measured here: `bpf_ktime_get_coarse_ns` costs ~25 ns per packet, a third of the budget). The
//! daemon learns the tick rate at start and writes it, with a fresh (ticks, ns) sample, into the gate on every
//! renewal; userspace readers convert ticks with [`Admission::ticks_to_mono_ns`].

use crate::{assert_layout, assert_offset};

/// [`Admission::state`]: closed, the programs pass everything and record nothing.
pub const GATE_CLOSED: u32 = 0;
/// [`Admission::state`]: open while the lease holds.
pub const GATE_OPEN: u32 = 1;

/// How long one renewal keeps the gate open, in seconds. Three renewal periods, so one late renewal never
/// closes it.
pub const GATE_LEASE_SECS: u64 = 3;
/// How often the daemon renews the lease, in ns.
pub const GATE_RENEW_NS: u64 = 1_000_000_000;

/// The single value of the `ADMISSION` array map (index 0).
///
/// Layout (40 bytes, align 8):
/// ```text
///  0..4   state           u32  GATE_CLOSED or GATE_OPEN
///  4..8   owner_pid       u32  pid of the daemon that opened it (diagnostics)
///  8..16  lease_until     u64  ticks after which the gate counts as closed
/// 16..24  ticks_per_sec   u64  the kernel's tick rate (HZ); also the flows' last-seen refresh interval
/// 24..32  sample_ticks    u64  ticks at the moment of ...
/// 32..40  sample_mono_ns  u64  ... this CLOCK_MONOTONIC_COARSE time
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Admission {
    /// `GATE_CLOSED` or `GATE_OPEN`.
    pub state: u32,
    /// The daemon's pid.
    pub owner_pid: u32,
    /// Lease deadline in ticks.
    pub lease_until: u64,
    /// Ticks per second (HZ).
    pub ticks_per_sec: u64,
    /// A tick count ...
    pub sample_ticks: u64,
    /// ... and the monotonic time it was read at.
    pub sample_mono_ns: u64,
}
assert_layout!(Admission, size = 40, align = 8);
assert_offset!(Admission, state, 0);
assert_offset!(Admission, owner_pid, 4);
assert_offset!(Admission, lease_until, 8);
assert_offset!(Admission, ticks_per_sec, 16);
assert_offset!(Admission, sample_ticks, 24);
assert_offset!(Admission, sample_mono_ns, 32);

impl Admission {
    /// A gate opened by `pid` at (`now_ticks`, `now_mono_ns`) for [`GATE_LEASE_SECS`].
    pub const fn open(pid: u32, hz: u64, now_ticks: u64, now_mono_ns: u64) -> Self {
        Self {
            state: GATE_OPEN,
            owner_pid: pid,
            lease_until: now_ticks + GATE_LEASE_SECS * hz,
            ticks_per_sec: hz,
            sample_ticks: now_ticks,
            sample_mono_ns: now_mono_ns,
        }
    }

    /// The same clock sample, gate closed.
    pub const fn closed(self) -> Self {
        Self { state: GATE_CLOSED, lease_until: 0, ..self }
    }

    /// Whether traffic may be recorded at `now_ticks`. The one definition both sides use.
    #[inline(always)]
    pub const fn is_open(&self, now_ticks: u64) -> bool {
        self.state == GATE_OPEN && now_ticks < self.lease_until
    }

    /// The CLOCK_MONOTONIC_COARSE time of tick count `ticks`, from the sample. Zero without a sample.
    pub const fn ticks_to_mono_ns(&self, ticks: u64) -> u64 {
        if self.ticks_per_sec == 0 {
            return 0;
        }
        let per_tick = 1_000_000_000 / self.ticks_per_sec;
        if ticks >= self.sample_ticks {
            self.sample_mono_ns + (ticks - self.sample_ticks) * per_tick
        } else {
            self.sample_mono_ns.saturating_sub((self.sample_ticks - ticks) * per_tick)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_is_open_only_inside_its_lease() {
        let g = Admission::open(7, 250, 1_000, 5);
        assert!(g.is_open(1_000));
        assert!(g.is_open(1_000 + 3 * 250 - 1));
        assert!(!g.is_open(1_000 + 3 * 250));
        assert!(!g.closed().is_open(1_000));
    }

    #[test]
    fn ticks_convert_through_the_sample() {
        let g = Admission::open(1, 250, 10_000, 80_000_000_000);
        assert_eq!(g.ticks_to_mono_ns(10_000), 80_000_000_000);
        assert_eq!(g.ticks_to_mono_ns(10_250), 81_000_000_000);
        assert_eq!(g.ticks_to_mono_ns(9_750), 79_000_000_000);
        assert_eq!(Admission::default().ticks_to_mono_ns(5), 0);
    }
}
