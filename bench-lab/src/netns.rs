//! Network namespaces as owned values.

use std::{
    io,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

/// Prefix of every namespace and link the lab creates.
pub const PREFIX: &str = "daers";
const NETNS_DIR: &str = "/run/netns";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short id unique within this machine for this process's lifetime: 6 hex digits, so link names stay within
/// IFNAMSIZ (`daers` + id + 2-4 characters <= 15).
pub fn unique_id() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mixed = (u64::from(std::process::id()) << 20 ^ u64::from(n) << 8 ^ u64::from(nanos))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{:06x}", mixed >> 40)
}

/// A network namespace `daers-<pid>-<id>-<role>`, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace for `role` (e.g. `client`) with its loopback up.
    pub fn create(id: &str, role: &str) -> io::Result<Self> {
        let name = format!("{PREFIX}-{}-{id}-{role}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mount path (`/run/netns/<name>`).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// `ip -n <name> <args>`; fails with the command's stderr.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs inside the namespace. Only the network namespace changes (`nsenter --net`), so the
    /// mount namespace — and with it bpffs and `/run` — stays the caller's.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display())).arg("--").arg(program);
        cmd
    }

    /// Runs `program args...` inside and waits; fails on a non-zero exit with its stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        run_ok(self.command(program).args(args))
    }

    /// Runs `program args...` inside and returns its output whatever the exit status.
    pub fn output(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        self.command(program).args(args).stdin(Stdio::null()).output()
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        self.run("sysctl", &["-q", "-w", &format!("{key}={value}")]).map(|_| ())
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it opens live there) and returns its result.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        let path = self.path();
        std::thread::spawn(move || -> io::Result<T> {
            enter(&path)?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("thread inside the namespace panicked"))?
    }

    /// Starts a thread inside this namespace and returns its handle.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<io::Result<T>> {
        let path = self.path();
        std::thread::spawn(move || -> io::Result<T> {
            enter(&path)?;
            Ok(f())
        })
    }

    /// Starts `cmd` (from [`Netns::command`]) as a child that is killed when the returned guard drops.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<ChildGuard> {
        Ok(ChildGuard(Some(cmd.spawn()?)))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// A child process killed (SIGKILL) and reaped on drop unless already waited for.
#[derive(Debug)]
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    /// The child.
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present until drop")
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) via kill(1).
    pub fn signal(&mut self, signal: &str) -> io::Result<()> {
        let pid = self.child().id().to_string();
        run_ok(Command::new("kill").args([&format!("-{signal}"), &pid])).map(|_| ())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a command, turning a non-zero exit into an error that carries the command line and its stderr.
pub fn run_ok(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Deletes `daers-<pid>-...` namespaces whose creating process is gone (a test run killed before its guards
/// ran), and the pinned maps and run files of `daers-<pid>-...` daemon instances of such processes. Returns the
/// namespace names removed. Never touches anything without the prefix or of a live process.
pub fn sweep_stale() -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else { return removed };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
            removed.push(name);
        }
    }
    // Daemon instances are named the same way: the pins and run files of dead creators go too.
    for dir in ["/sys/fs/bpf/dae-rs", "/run/dae-rs"] {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let instance = name.split('.').next().unwrap_or_default();
            let Some(rest) = instance.strip_prefix(&format!("{PREFIX}-")) else { continue };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                crate::daemon::remove_leftovers(instance);
            }
        }
    }
    removed
}

/// Moves the calling thread into the network namespace bound at `path` (the thread only: other threads stay).
#[allow(unsafe_code)]
pub fn enter(path: &std::path::Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    // SAFETY: setns with a valid namespace fd affects only the calling thread's network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
