//! CPU time: process and thread time from getrusage(2), per-core busy and softirq time from `/proc/stat`.

use std::{io, mem};

use anyhow::{Context, ensure};

fn rusage_secs(who: libc::c_int) -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it for RUSAGE_SELF or RUSAGE_THREAD.
    let usage = unsafe {
        let mut usage: libc::rusage = mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// User plus system time of the calling thread.
pub(super) fn thread_secs() -> f64 {
    rusage_secs(libc::RUSAGE_THREAD)
}

/// Pins the calling thread to `cpu`.
pub(super) fn pin_to(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET stays inside it for cpu < CPU_SETSIZE (checked by
    // the caller's core count); pid 0 is the calling thread and `set` outlives the call.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set)
    };
    ensure!(rc == 0, "sched_setaffinity(cpu {cpu}): {}", io::Error::last_os_error());
    Ok(())
}

/// (softirq, busy) seconds of `cpu` so far; busy is user + nice + system + irq + softirq.
fn core_secs(cpu: usize) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let label = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(label.as_str()))
        .with_context(|| format!("no {label} in /proc/stat"))?;
    let ticks: Vec<f64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    ensure!(ticks.len() >= 7, "short {label} line in /proc/stat");
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let [user, nice, system, _idle, _iowait, irq, softirq] = ticks[..7] else { unreachable!("length checked") };
    Ok((softirq / hz, (user + nice + system + irq + softirq) / hz))
}

/// CPU counters at the start of a measured run.
#[derive(Debug)]
pub(super) struct Window {
    cpu: usize,
    process: f64,
    core: (f64, f64),
}

impl Window {
    /// Starts counting this process and core `cpu`.
    pub(super) fn open(cpu: usize) -> anyhow::Result<Self> {
        Ok(Self { cpu, process: rusage_secs(libc::RUSAGE_SELF), core: core_secs(cpu)? })
    }

    /// (process seconds, core softirq seconds, core busy seconds) since [`Self::open`].
    pub(super) fn close(self) -> anyhow::Result<(f64, f64, f64)> {
        let (softirq, busy) = core_secs(self.cpu)?;
        Ok((rusage_secs(libc::RUSAGE_SELF) - self.process, softirq - self.core.0, busy - self.core.1))
    }
}
