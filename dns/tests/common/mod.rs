//! Real parts for the privileged tests: `dae-dns` and `nsd` started inside lab namespaces, `kdig`, a scratch
//! folder removed on drop. Every wait is bounded and waits on an event (a log line, an answer), never a sleep.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use bench_lab::netns::{ChildGuard, Netns, unique_id};

/// How long a daemon may take to say it is ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

/// True (after printing why) when a privileged test must be skipped.
pub fn skip(test: &str, tools: &[&str]) -> bool {
    if bench_lab::skip_unless_root(test) {
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
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("daers-dns-{}-{}", std::process::id(), unique_id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

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

/// `dae-dns` running inside a namespace; killed on drop.
pub struct Forwarder {
    child: ChildGuard,
    stdout: Receiver<String>,
    _scratch: Scratch,
}

impl Forwarder {
    pub fn start(ns: &Netns, config: &str, args: &[&str]) -> Self {
        let scratch = Scratch::new();
        let path = scratch.write("dns.dae", config, 0o600);
        let mut cmd = ns.command(env!("CARGO_BIN_EXE_dae-dns"));
        cmd.arg("-c").arg(&path).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = ns.spawn(&mut cmd).unwrap();
        let stderr = child.child().stderr.take().unwrap();
        let stdout = child.child().stdout.take().unwrap();
        let (ready_tx, ready_rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[dae-dns] {line}");
                if line.contains("dae-dns: ready") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let (out_tx, out_rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = out_tx.send(line);
            }
        });
        ready_rx.recv_timeout(START_TIMEOUT).expect("dae-dns did not become ready");
        Self { child, stdout: out_rx, _scratch: scratch }
    }

    /// The counters (SIGUSR1 makes the binary print a JSON line).
    pub fn stats(&mut self) -> serde_json::Value {
        self.child.signal("USR1").unwrap();
        let line = self.stdout.recv_timeout(Duration::from_secs(5)).expect("stats line");
        serde_json::from_str(&line).unwrap()
    }

    /// Counters once `in_flight` and the upstream pending slots have drained (bounded wait).
    pub fn settled_stats(&mut self, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let stats = self.stats();
            let idle = stats["in_flight"] == 0 && stats["upstream_pending"] == 0 && stats["flights_now"] == 0;
            if idle || Instant::now() >= deadline {
                return stats;
            }
            // Counters are published every 200 ms; the next SIGUSR1 round trip is the wait.
        }
    }
}

/// `nsd` inside a namespace with one zone; killed on drop.
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

fn openssl(dir: &Scratch, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(&dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl {args:?}");
}

/// A throw-away certificate authority (`ca.pem` in `dir`) and a server configuration whose certificate it
/// signed for `ip`, offering `alpn`.
pub fn server_tls(dir: &Scratch, ip: &str, alpn: &[&[u8]]) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
    openssl(
        dir,
        &["req", "-x509", "-new", "-key", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=daers test CA"],
    );
    openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "leaf.ec"]);
    openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", "leaf.ec", "-out", "leaf.key"]);
    openssl(dir, &["req", "-new", "-key", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=dns"]);
    dir.write("ext.cnf", &format!("subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\n"), 0o600);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let chain = vec![CertificateDer::from_pem_file(dir.0.join("leaf.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(dir.0.join("leaf.key")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}
