//! Time: the daemon's `CLOCK_MONOTONIC_COARSE`, and the kernel's ticks (jiffies) that the programs stamp flows
//! with. Userspace cannot read jiffies directly, so it test-runs `clock_probe`, which writes them into a map.

use std::time::Duration;

use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{Program, TestRun, TestRunOptions, Xdp},
};
use datapath_abi::names::PROG_CLOCK_PROBE;

/// Tick rates Linux is built with (`CONFIG_HZ`).
const KNOWN_HZ: [u64; 5] = [100, 250, 300, 1000, 1200];
/// How far apart the two samples that measure the tick rate are taken.
const HZ_PROBE_GAP: Duration = Duration::from_millis(100);

/// Now, in ns of `CLOCK_MONOTONIC_COARSE`.
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer; CLOCK_MONOTONIC_COARSE exists on every kernel this runs on.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Reading the tick count failed.
#[derive(Debug, thiserror::Error)]
#[error("sampling kernel ticks with {PROG_CLOCK_PROBE}: {0}")]
pub struct ClockError(String);

/// A (ticks, monotonic ns) pair taken back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Kernel ticks.
    pub ticks: u64,
    /// `CLOCK_MONOTONIC_COARSE` ns right after.
    pub mono_ns: u64,
}

/// Test-runs the probe and reads the ticks it wrote.
pub fn sample(ebpf: &mut Ebpf, probe_map: &Array<MapData, u64>) -> Result<Sample, ClockError> {
    let Some(Program::Xdp(probe)) = ebpf.program_mut(PROG_CLOCK_PROBE) else {
        return Err(ClockError("program missing".into()));
    };
    let frame = [0u8; 64];
    let opts = TestRunOptions { data_in: Some(&frame), ..Default::default() };
    <Xdp as TestRun>::test_run(probe, opts).map_err(|e| ClockError(e.to_string()))?;
    let ticks = probe_map.get(&0, 0).map_err(|e| ClockError(e.to_string()))?;
    Ok(Sample { ticks, mono_ns: monotonic_coarse_ns() })
}

/// The kernel's tick rate, from two samples [`HZ_PROBE_GAP`] apart, snapped to a known `CONFIG_HZ`.
pub fn measure_hz(ebpf: &mut Ebpf, probe_map: &Array<MapData, u64>) -> Result<u64, ClockError> {
    let a = sample(ebpf, probe_map)?;
    std::thread::sleep(HZ_PROBE_GAP);
    let b = sample(ebpf, probe_map)?;
    Ok(snap_hz(b.ticks.saturating_sub(a.ticks), b.mono_ns.saturating_sub(a.mono_ns)))
}

/// The known rate closest to `ticks` per `ns`, or the raw estimate when none is within 15 %.
pub fn snap_hz(ticks: u64, ns: u64) -> u64 {
    if ns == 0 {
        return KNOWN_HZ[1];
    }
    let estimate = ticks as f64 * 1e9 / ns as f64;
    KNOWN_HZ
        .iter()
        .copied()
        .min_by(|a, b| (*a as f64 - estimate).abs().total_cmp(&(*b as f64 - estimate).abs()))
        .filter(|hz| (*hz as f64 - estimate).abs() <= *hz as f64 * 0.15)
        .unwrap_or(estimate.round().max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_rates_snap_to_config_hz() {
        assert_eq!(snap_hz(25, 100_000_000), 250);
        assert_eq!(snap_hz(26, 100_000_000), 250);
        assert_eq!(snap_hz(30, 100_000_000), 300);
        assert_eq!(snap_hz(99, 100_000_000), 1000);
        assert_eq!(snap_hz(10, 100_000_000), 100);
        assert_eq!(snap_hz(50, 100_000_000), 500, "an unknown rate stays as measured");
    }
}
