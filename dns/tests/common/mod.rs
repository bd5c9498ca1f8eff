//! Real parts for the privileged tests: `dae-dns` and `nsd` started inside lab namespaces, `kdig`, a scratch
//! folder removed on drop. Every wait is bounded and waits on an event (a log line, an answer), never a sleep.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

// Each test binary uses a different subset.
#[allow(unused_imports)]
pub use bench_lab::dns::{Nsd, START_TIMEOUT, Scratch, have, kdig, short, skip};
use bench_lab::netns::{ChildGuard, Netns};

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

/// The fwmark the mark tests give `so_mark_from_dae`.
pub const TEST_MARK: u32 = 0x2a0;

/// From now on only sockets carrying [`TEST_MARK`] reach the server from the gateway: a blackhole route for the
/// server in the main table, and a policy rule sending marked packets to a table that has the real route.
pub fn only_marked_sockets_reach_the_server(topo: &bench_lab::topology::Topology) {
    let server = format!("{}/32", topo.server_v4);
    let mark = format!("{TEST_MARK:#x}");
    for args in [
        &["route", "add", server.as_str(), "dev", topo.wan_if.as_str(), "table", "4242"][..],
        &["rule", "add", "fwmark", mark.as_str(), "table", "4242", "pref", "100"],
        &["route", "add", "blackhole", server.as_str()],
    ] {
        topo.gateway.ip(args).unwrap();
    }
    let server = std::net::SocketAddr::from((topo.server_v4, 53));
    let reach = topo
        .gateway
        .run_in(move || {
            let connect = |mark: u32| {
                let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
                if mark != 0 {
                    socket.set_mark(mark)?;
                }
                socket.connect(&server.into())
            };
            (connect(0).is_ok(), connect(TEST_MARK).is_ok())
        })
        .unwrap();
    assert_eq!(reach, (false, true), "only a marked socket has a route to the server");
}
