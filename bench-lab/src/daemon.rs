//! A `dae` process running inside a namespace, seen from outside.

use std::{
    fs,
    io::{self, BufRead, BufReader},
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use crate::netns::{ChildGuard, Netns, PREFIX, unique_id};

/// CPU time (user + system, all threads) of process `pid`; zero once it is gone.
pub fn process_cpu(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // After the command: state is not numeric, so fields[11] and [12] are utime and stime (stat fields 14, 15).
    ticks_to_duration(fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0))
}

/// `/proc` clock ticks as time: Linux reports them in USER_HZ, which is 100 on every architecture it supports.
pub fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 10)
}

/// How long `dae run` may take to load, attach and open its gate.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The log line `dae run` prints once the gate is open.
pub const READY_LINE: &str = "datapath ready";

#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

/// A fresh instance name `daers-<pid>-<id>`.
pub fn new_instance_name() -> String {
    format!("{PREFIX}-{}-{}", std::process::id(), unique_id())
}

/// A running `dae run`; killed on drop if still running, its scratch directory removed.
pub struct Daemon {
    bin: PathBuf,
    netns_path: PathBuf,
    instance: String,
    dir: PathBuf,
    config_path: PathBuf,
    child: ChildGuard,
    log: Arc<Log>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("instance", &self.instance).finish_non_exhaustive()
    }
}

impl Daemon {
    /// Writes `config` to a private file (mode 0600, as dae requires) and starts `bin run -c <file>` inside `ns`
    /// under a unique instance name, then waits for [`READY_LINE`].
    pub fn start(bin: &Path, ns: &Netns, config: &str, extra_args: &[&str]) -> io::Result<Self> {
        Self::start_instance(bin, ns, config, &new_instance_name(), extra_args)
    }

    /// As [`Daemon::start`], under a given instance name (to restart after a crash, say).
    pub fn start_instance(
        bin: &Path,
        ns: &Netns,
        config: &str,
        instance: &str,
        extra_args: &[&str],
    ) -> io::Result<Self> {
        Self::launch(bin, ns, Some(config), instance, extra_args)
    }

    /// Starts `bin run` without `-c` (the embedded default configuration) inside `ns`.
    pub fn start_default(bin: &Path, ns: &Netns, extra_args: &[&str]) -> io::Result<Self> {
        Self::launch(bin, ns, None, &new_instance_name(), extra_args)
    }

    fn launch(bin: &Path, ns: &Netns, config: Option<&str>, instance: &str, extra_args: &[&str]) -> io::Result<Self> {
        // Once per process: what killed test runs left (namespaces, pinned maps, run files) goes first.
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(|| {
            crate::netns::sweep_stale();
        });
        let instance = instance.to_string();
        let dir = std::env::temp_dir().join(format!("{instance}-{}", unique_id()));
        fs::DirBuilder::new().mode(0o700).recursive(true).create(&dir)?;
        let config_path = dir.join("config.dae");
        let mut cmd = ns.command(&bin.display().to_string());
        cmd.arg("run");
        if let Some(config) = config {
            fs::write(&config_path, config)?;
            fs::set_permissions(&config_path, fs::Permissions::from_mode(0o600))?;
            cmd.arg("-c").arg(&config_path);
        }
        cmd.args(["--instance", &instance]).args(extra_args);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped()).env("RUST_LOG", "info,datapath=debug");
        let mut child = ns.spawn(&mut cmd)?;
        let stderr = child.child().stderr.take().ok_or_else(|| io::Error::other("no stderr"))?;
        let log = Arc::new(Log::default());
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                sink.grew.notify_all();
            }
        });
        let mut daemon = Self { bin: bin.to_path_buf(), netns_path: ns.path(), instance, dir, config_path, child, log };
        if !daemon.wait_for_log(READY_LINE, READY_TIMEOUT) {
            let status = daemon.child.child().try_wait()?;
            return Err(io::Error::other(format!(
                "dae did not become ready within {READY_TIMEOUT:?} (exit: {status:?}); log:\n{}",
                daemon.log()
            )));
        }
        Ok(daemon)
    }

    /// The instance name (`--instance`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The daemon's pid.
    pub fn pid(&mut self) -> u32 {
        self.child.child().id()
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lines.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }

    /// Waits until a log line contains `needle`, at most `timeout`. Event-driven: woken by each new line.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_count(needle, 1, timeout)
    }

    /// Waits until `count` log lines contain `needle`.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut lines = self.log.lines.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if lines.iter().filter(|l| l.contains(needle)).count() >= count {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            lines = self.log.grew.wait_timeout(lines, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// The configuration file the daemon was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Replaces the configuration file (for a reload), keeping mode 0600.
    pub fn rewrite_config(&self, config: &str) -> io::Result<()> {
        fs::write(&self.config_path, config)?;
        fs::set_permissions(&self.config_path, fs::Permissions::from_mode(0o600))
    }

    /// `dae <args> --instance <ours>` inside the namespace; the whole output, whatever the exit status.
    pub fn cli_output(&self, args: &[&str]) -> io::Result<std::process::Output> {
        std::process::Command::new("nsenter")
            .arg(format!("--net={}", self.netns_path.display()))
            .arg("--")
            .arg(&self.bin)
            .args(args)
            .args(["--instance", &self.instance])
            .stdin(Stdio::null())
            .output()
    }

    fn cli(&self, args: &[&str]) -> io::Result<String> {
        let out = self.cli_output(args)?;
        if !out.status.success() {
            return Err(io::Error::other(format!("dae {args:?}: {}", String::from_utf8_lossy(&out.stderr))));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `dae flows --json`: one object per flow.
    pub fn flows(&self) -> io::Result<Vec<serde_json::Value>> {
        self.cli(&["flows", "--json"])?.lines().map(|l| serde_json::from_str(l).map_err(io::Error::other)).collect()
    }

    /// `dae flows` as the table an operator sees.
    pub fn flows_table(&self) -> io::Result<String> {
        self.cli(&["flows"])
    }

    /// `dae stats --json`.
    pub fn stats(&self) -> io::Result<serde_json::Value> {
        serde_json::from_str(&self.cli(&["stats", "--json"])?).map_err(io::Error::other)
    }

    /// SIGTERM, then waits up to 10 s for the exit.
    pub fn stop(&mut self) -> io::Result<ExitStatus> {
        self.child.signal("TERM")?;
        self.wait_exit(Duration::from_secs(10))
    }

    /// SIGKILL, then waits for the exit.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        self.child.signal("KILL")?;
        self.wait_exit(Duration::from_secs(10))
    }

    fn wait_exit(&mut self, timeout: Duration) -> io::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.child().try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!("dae did not exit within {timeout:?}; log:\n{}", self.log())));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Where `dae` pins an instance's maps and keeps its run files (datapath's `state` module).
const PIN_ROOT: &str = "/sys/fs/bpf/dae-rs";
const RUN_DIR: &str = "/run/dae-rs";

/// Removes what a killed `dae` of `instance` left: its pinned maps (kernel memory that outlives every process)
/// and its run files. A test instance never starts again under its name to clean up after itself.
pub fn remove_leftovers(instance: &str) {
    if !instance.starts_with(PREFIX) {
        return;
    }
    let _ = fs::remove_dir_all(Path::new(PIN_ROOT).join(instance));
    for suffix in ["lock", "status", "counters", "status.tmp", "counters.tmp"] {
        let _ = fs::remove_file(Path::new(RUN_DIR).join(format!("{instance}.{suffix}")));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Still running: SIGTERM and a few seconds to take down what it set up; the guard SIGKILLs it after.
        if matches!(self.child.child().try_wait(), Ok(None)) {
            let _ = self.child.signal("TERM");
            let _ = self.wait_exit(Duration::from_secs(5));
        }
        remove_leftovers(&self.instance);
        let _ = fs::remove_dir_all(&self.dir);
    }
}
