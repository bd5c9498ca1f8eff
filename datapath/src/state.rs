//! One daemon instance's footprint outside the process: a lock and a directory of pinned maps.
//!
//! The lock (`/run/dae-rs/<instance>.lock`, `flock`) says whether a daemon of that name is alive. A daemon that
//! takes the lock and finds a pin directory knows its predecessor died without cleaning up (SIGKILL, OOM) and
//! removes what it left. The pin directory lives on bpffs (`/sys/fs/bpf/dae-rs/<instance>/`) so `dae flows`
//! can read the live maps from another process.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use tracing::{debug, info, warn};

/// Where locks live (tmpfs: gone after reboot, like the kernel objects they guard).
pub const RUN_DIR: &str = "/run/dae-rs";
/// The bpffs mount the daemon pins under.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xCAFE_4A11;
const PIN_SUBDIR: &str = "dae-rs";
/// Instance names become file names: keep them short and plain.
const MAX_INSTANCE_NAME: usize = 64;

/// Why an instance could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The name has characters that do not belong in a file name.
    #[error("instance name {0:?} must be 1-64 characters of [A-Za-z0-9_-]")]
    BadName(String),
    /// Another daemon holds the lock.
    #[error("instance {name:?} is already running (pid {pid}); stop it or choose another --instance")]
    Running {
        /// Instance.
        name: String,
        /// Its pid as recorded in the lock file.
        pid: String,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { what, path, source }
}

/// Validates an instance name.
pub fn check_name(name: &str) -> Result<(), StateError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_INSTANCE_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(StateError::BadName(name.into())) }
}

/// The pin directory of `instance` under the bpffs mount `bpffs`.
pub fn pin_dir(bpffs: &Path, instance: &str) -> PathBuf {
    bpffs.join(PIN_SUBDIR).join(instance)
}

/// A held instance: the lock plus a clean pin directory. Dropping it removes the pins.
#[derive(Debug)]
pub struct Instance {
    name: String,
    pin_dir: PathBuf,
    _lock: File,
}

impl Instance {
    /// Takes the instance lock and prepares an empty pin directory, removing pins a dead daemon left.
    pub fn acquire(name: &str, bpffs: &Path) -> Result<Self, StateError> {
        check_name(name)?;
        fs::create_dir_all(RUN_DIR).map_err(io("creating", Path::new(RUN_DIR)))?;
        let lock_path = Path::new(RUN_DIR).join(format!("{name}.lock"));
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io("opening", &lock_path))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut pid = String::new();
            let _ = lock.read_to_string(&mut pid);
            return Err(StateError::Running { name: name.into(), pid: pid.trim().to_string() });
        }
        lock.set_len(0).map_err(io("truncating", &lock_path))?;
        lock.rewind().map_err(io("rewinding", &lock_path))?;
        write!(lock, "{}", std::process::id()).map_err(io("writing", &lock_path))?;

        ensure_bpffs(bpffs)?;
        let pin_dir = pin_dir(bpffs, name);
        if pin_dir.exists() {
            let removed = remove_pins(&pin_dir)?;
            info!(instance = name, removed, "removed pins left by a daemon that did not exit cleanly");
        }
        fs::create_dir_all(&pin_dir).map_err(io("creating", &pin_dir))?;
        Ok(Self { name: name.into(), pin_dir, _lock: lock })
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where this instance pins its maps.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Err(e) = remove_pins(&self.pin_dir) {
            warn!(error = %e, "removing pins");
        }
    }
}

/// Removes a pin directory and what is in it; returns how many pins went.
fn remove_pins(dir: &Path) -> Result<usize, StateError> {
    let mut removed = 0;
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            fs::remove_file(entry.path()).map_err(io("removing pin", &entry.path()))?;
            removed += 1;
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(removed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(removed),
        Err(e) => Err(StateError::Io { what: "removing", path: dir.into(), source: e }),
    }
}

/// Mounts bpffs at `path` unless one is there already.
fn ensure_bpffs(path: &Path) -> Result<(), StateError> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| StateError::Io {
        what: "bpffs path",
        path: path.into(),
        source: e.into(),
    })?;
    // SAFETY: statfs with a valid C string and out-pointer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } == 0 && st.f_type == BPF_FS_MAGIC {
        return Ok(());
    }
    fs::create_dir_all(path).map_err(io("creating", path))?;
    // SAFETY: mount(2) with valid C strings; a null data pointer is allowed.
    let rc = unsafe { libc::mount(c"bpf".as_ptr(), c_path.as_ptr(), c"bpf".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(StateError::Io {
            what: "mounting bpffs at",
            path: path.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    info!(path = %path.display(), "mounted bpffs");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_plain() {
        assert!(check_name("default").is_ok());
        assert!(check_name("daers-1_a").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("../etc").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }
}

/// `/run/dae-rs/<instance>.status`: the running daemon's pid, rule-set generation and the outcome of the last
/// reload, so `dae reload` can say whether it took and why not.
#[derive(Debug, Clone)]
pub struct StatusFile {
    path: PathBuf,
}

/// What the status file says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// Daemon pid.
    pub pid: u32,
    /// Rule-set generations published (1 after start).
    pub generation: u64,
    /// The last reload's error, if it failed.
    pub last_error: Option<String>,
    /// Bumped on every write, so a reader can tell a fresh outcome from an old one.
    pub writes: u64,
}

impl StatusFile {
    /// The status file of `instance`.
    pub fn new(instance: &str) -> Self {
        Self { path: Path::new(RUN_DIR).join(format!("{instance}.status")) }
    }

    /// Replaces the file (write to a temporary name, rename).
    pub fn write(&self, generation: u64, last_error: Option<&str>) {
        let writes = self.read().map_or(0, |s| s.writes) + 1;
        let status = Status { pid: std::process::id(), generation, last_error: last_error.map(str::to_string), writes };
        let tmp = self.path.with_extension("status.tmp");
        let ok = serde_json::to_vec(&status).map_err(std::io::Error::other).and_then(|bytes| fs::write(&tmp, bytes));
        if let Err(e) = ok.and_then(|()| fs::rename(&tmp, &self.path)) {
            warn!(error = %e, path = %self.path.display(), "writing the status file");
        }
    }

    /// The current status, if a daemon wrote one.
    pub fn read(&self) -> Option<Status> {
        serde_json::from_slice(&fs::read(&self.path).ok()?).ok()
    }

    /// Removes the file (clean exit).
    pub fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// `/run/dae-rs/<instance>.counters`: the userspace counters (relay, UDP sessions, DNS) as one JSON object,
/// rewritten about once a second by the daemon and merged into `dae stats`.
#[derive(Debug, Clone)]
pub struct CountersFile {
    path: PathBuf,
}

impl CountersFile {
    /// The counters file of `instance`.
    pub fn new(instance: &str) -> Self {
        Self { path: Path::new(RUN_DIR).join(format!("{instance}.counters")) }
    }

    /// Replaces the file with `counters` (write to a temporary name, rename).
    pub fn write(&self, counters: &[(&'static str, u64)]) {
        let object: serde_json::Map<String, serde_json::Value> =
            counters.iter().map(|(name, value)| ((*name).to_owned(), (*value).into())).collect();
        let tmp = self.path.with_extension("counters.tmp");
        let ok = serde_json::to_vec(&object).map_err(std::io::Error::other).and_then(|bytes| fs::write(&tmp, bytes));
        if let Err(e) = ok.and_then(|()| fs::rename(&tmp, &self.path)) {
            debug!(error = %e, path = %self.path.display(), "writing the counters file");
        }
    }

    /// The counters, in the order written, if a daemon wrote them.
    pub fn read(&self) -> Vec<(String, u64)> {
        let Some(object) = fs::read(&self.path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).ok())
        else {
            return Vec::new();
        };
        object.into_iter().filter_map(|(name, value)| value.as_u64().map(|v| (name, v))).collect()
    }

    /// Removes the file (clean exit).
    pub fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }
}
