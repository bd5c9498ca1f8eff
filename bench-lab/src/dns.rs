//! DNS parts of the lab: `nsd` serving a zone inside a namespace, `kdig`, a scratch folder removed on drop, and
//! the skip rule of tests that need these tools. Every wait is bounded and waits on an event (an answer), never
//! a sleep.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{ChildGuard, Netns, unique_id};

/// How long a daemon may take to say it is ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

/// True (after printing why) when a privileged test must be skipped.
pub fn skip(test: &str, tools: &[&str]) -> bool {
    if crate::skip_unless_root(test) {
        return true;
    }
    for tool in tools {
        if !have(tool) {
            eprintln!("SKIP {test}: `{tool}` is not installed (scripts/setup.sh installs it)");
            return true;
        }
    }
    false
}

/// A scratch folder `daers-dns-<pid>-<id>` removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new empty folder.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("daers-dns-{}-{}", std::process::id(), unique_id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes `text` to `name` in the folder with permissions `mode`; its path.
    pub fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `nsd` inside a namespace with one zone; killed on drop.
#[derive(Debug)]
pub struct Nsd {
    _child: ChildGuard,
    _scratch: Scratch,
}

impl Nsd {
    /// Serves `zone_text` for `origin` on `ip@port` inside `ns` and waits until it answers `probe`.
    pub fn start(ns: &Netns, ip: &str, port: u16, origin: &str, zone_text: &str, probe: &str) -> Self {
        let scratch = Scratch::new();
        scratch.write("zone", zone_text, 0o644);
        let dir = scratch.0.display().to_string();
        let conf = format!(
            "server:\n  ip-address: {ip}@{port}\n  server-count: 1\n  username: \"\"\n  zonesdir: \"{dir}\"\n  database: \"\"\n  \
             pidfile: \"{dir}/nsd.pid\"\n  xfrdfile: \"{dir}/xfrd.state\"\n  zonelistfile: \"{dir}/zone.list\"\n  \
             rrl-ratelimit: 0\n  verbosity: 0\nremote-control:\n  control-enable: no\nzone:\n  name: {origin}\n  zonefile: zone\n"
        );
        let conf_path = scratch.write("nsd.conf", &conf, 0o644);
        let mut cmd = ns.command("nsd");
        cmd.arg("-d").arg("-c").arg(&conf_path).stdout(Stdio::null()).stderr(Stdio::null());
        let child = ns.spawn(&mut cmd).unwrap();
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            // kdig's own 1 s timeout is the wait between probes.
            let out = kdig(ns, ip, port, probe, "A", &["+timeout=1", "+retry=0"]);
            if out.contains("NOERROR") {
                return Self { _child: child, _scratch: scratch };
            }
        }
        panic!("nsd on {ip}@{port} did not answer {probe}");
    }
}

/// `kdig @server -p port name type args...` inside `ns`; its stdout.
pub fn kdig(ns: &Netns, server: &str, port: u16, name: &str, qtype: &str, args: &[&str]) -> String {
    let out = ns
        .output(
            "kdig",
            &[&format!("@{server}"), "-p", &port.to_string(), name, qtype]
                .iter()
                .copied()
                .chain(args.iter().copied())
                .collect::<Vec<_>>(),
        )
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The addresses of a `kdig +short` answer.
pub fn short(ns: &Netns, server: &str, port: u16, name: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec!["+short", "+timeout=3", "+retry=0"];
    all.extend_from_slice(args);
    kdig(ns, server, port, name, "A", &all).lines().map(str::to_owned).collect()
}
