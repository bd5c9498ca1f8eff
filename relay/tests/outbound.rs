//! Outbounds against real proxies: microsocks (SOCKS5), tinyproxy (HTTP CONNECT) and danted (SOCKS5 UDP
//! ASSOCIATE), each test in its own network namespace on loopback.
//!
//! Privileged: as non-root every test prints `SKIP: not root` and passes. Namespaces are `daers-<pid>-...` and
//! deleted on every exit path (their guards drop on panic too); proxies are killed by their guards.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bench_lab::netns::{ChildGuard, Netns, unique_id};
use relay::outbound::{
    CheckOutcome, CheckSettings, CheckTarget, Checker, Dialing, Group, HealthTable, Node, NodeId, NodeState, Policy,
    Target, associate, check, dial, parse_link, socks5,
};

const ECHO_PORT: u16 = 7000;
const GREETER_PORT: u16 = 7002;
const UDP_ECHO_PORT: u16 = 7001;
const SOCKS_PORT: u16 = 1080;
const SOCKS_AUTH_PORT: u16 = 1082;
const HTTP_PORT: u16 = 8888;
const DANTE_PORT: u16 = 1081;
/// Nothing listens here: a dead node.
const CLOSED_PORT: u16 = 9;
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a proxy may take to start listening.
const STARTUP: Duration = Duration::from_secs(5);
const GREETING: &[u8] = b"hello from the target\n";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn node(link: &str) -> Node {
    parse_link(link).unwrap_or_else(|error| panic!("{link}: {error}")).node
}

/// A namespace, the proxies in it and a scratch folder; all removed on drop (children first).
struct Lab {
    children: Vec<ChildGuard>,
    ns: Netns,
    dir: ScratchDir,
}

/// How long a proxy gets to exit after SIGTERM (danted reaps its worker processes then) before SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            if child.signal("TERM").is_ok() {
                let until = Instant::now() + GRACE;
                while Instant::now() < until && matches!(child.child().try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Lab {
    /// `None` (after printing why) when not root.
    fn new(test: &str) -> Option<Self> {
        if !is_root() {
            println!("SKIP: not root ({test} needs network namespaces)");
            return None;
        }
        let id = unique_id();
        let ns = Netns::create(&id, "out").expect("create namespace");
        let dir = std::env::temp_dir().join(format!("daers-relay-{}-{id}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        let lab = Lab { children: Vec::new(), ns, dir: ScratchDir(dir) };
        lab.inside(|| {
            spawn_tcp_echo(ECHO_PORT);
            spawn_greeter(GREETER_PORT);
            spawn_udp_echo(UDP_ECHO_PORT);
        });
        Some(lab)
    }

    fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Runs `f` on a thread inside the namespace; a panic there fails the test.
    fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match self.ns.spawn_in(f).join() {
            Ok(result) => result.expect("enter the namespace"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Starts `program args` in the namespace and waits until it listens on TCP `port`.
    fn start(&mut self, program: &str, args: &[&str], port: u16) {
        let mut cmd = self.ns.command(program);
        let stderr = std::fs::File::create(self.dir().join(format!("{program}.stderr"))).expect("stderr file");
        cmd.args(args).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(stderr);
        let mut child = self.ns.spawn(&mut cmd).unwrap_or_else(|error| panic!("start {program}: {error}"));
        let listening = self.inside(move || {
            let until = Instant::now() + STARTUP;
            while Instant::now() < until {
                if TcpStream::connect(loopback(port)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        });
        if !listening {
            let status = child.child().try_wait();
            panic!("{program} is not listening on {port} after {STARTUP:?} (exit: {status:?})");
        }
        self.children.push(child);
    }

    fn start_microsocks(&mut self, port: u16, credentials: Option<(&str, &str)>) {
        let port_text = port.to_string();
        let mut args = vec!["-i", "127.0.0.1", "-p", &port_text];
        if let Some((user, pass)) = credentials {
            args.extend(["-u", user, "-P", pass]);
        }
        self.start("microsocks", &args, port);
    }

    fn start_tinyproxy(&mut self, basic_auth: Option<(&str, &str)>) {
        let dir = self.dir().display().to_string();
        let mut conf = format!(
            "Port {HTTP_PORT}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 30\nMaxClients 16\n\
             ConnectPort {ECHO_PORT}\nConnectPort {GREETER_PORT}\n\
             PidFile \"{dir}/tinyproxy.pid\"\nLogFile \"{dir}/tinyproxy.log\"\n"
        );
        if let Some((user, pass)) = basic_auth {
            conf.push_str(&format!("BasicAuth {user} {pass}\n"));
        }
        let path = self.dir().join("tinyproxy.conf");
        std::fs::write(&path, conf).expect("write tinyproxy.conf");
        self.start("tinyproxy", &["-d", "-c", path.to_str().unwrap()], HTTP_PORT);
    }

    fn start_danted(&mut self) {
        let dir = self.dir().display().to_string();
        let conf = format!(
            "logoutput: {dir}/danted.log\n\
             internal: 127.0.0.1 port = {DANTE_PORT}\n\
             external: 127.0.0.1\n\
             clientmethod: none\nsocksmethod: none\n\
             user.privileged: root\nuser.unprivileged: nobody\n\
             client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
             socks pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect udpassociate udpreply }}\n"
        );
        let path = self.dir().join("danted.conf");
        std::fs::write(&path, conf).expect("write danted.conf");
        let pid = format!("{dir}/danted.pid");
        self.start("danted", &["-f", path.to_str().unwrap(), "-N", "1", "-p", &pid], DANTE_PORT);
    }
}

fn spawn_tcp_echo(port: u16) {
    let listener = TcpListener::bind(loopback(port)).expect("bind echo");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = stream.try_clone().expect("clone");
                let _ = std::io::copy(&mut reader, &mut stream);
            });
        }
    });
}

/// A target that speaks first: its greeting must reach the client even when it follows the proxy's reply in
/// the same read.
fn spawn_greeter(port: u16) {
    let listener = TcpListener::bind(loopback(port)).expect("bind greeter");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(GREETING);
        }
    });
}

fn spawn_udp_echo(port: u16) {
    let socket = UdpSocket::bind(loopback(port)).expect("bind udp echo");
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..len], from);
        }
    });
}

/// Dials as the gateway's relay loops do: [`Dialing`] on a non-blocking socket, polled whenever `poll(2)` says
/// the socket is ready, under one deadline. Returns the stream (made blocking again) and how many times the dial
/// had to wait.
fn dial_nonblocking(node: &Node, target: SocketAddr) -> std::io::Result<(TcpStream, usize)> {
    let mut dialing = Dialing::start(node, Target::Addr(target), 0)?.expect("a proxy given by address never blocks");
    let waits = finish(&mut dialing, node)?;
    let stream = dialing.into_stream();
    stream.set_nonblocking(false)?;
    Ok((stream, waits))
}

/// Polls `dialing` whenever `poll(2)` says its socket is ready, under one deadline; returns how many times it
/// had to wait.
fn finish(dialing: &mut Dialing, node: &Node) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let deadline = Instant::now() + DIAL_TIMEOUT;
    let mut waits = 0;
    while !dialing.poll()? {
        waits += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the dial via {node} did not finish within {DIAL_TIMEOUT:?}");
        let mut fd =
            libc::pollfd { fd: dialing.stream().as_raw_fd(), events: libc::POLLIN | libc::POLLOUT, revents: 0 };
        // SAFETY: one pollfd on the stack, a descriptor the dial owns.
        unsafe { libc::poll(&mut fd, 1, left.as_millis() as i32) };
    }
    Ok(waits)
}

/// Dials `node` to the echo server and checks that bytes come back unchanged.
fn assert_round_trip(node: &Node) {
    let stream = dial(node, loopback(ECHO_PORT), 0, DIAL_TIMEOUT).unwrap_or_else(|e| panic!("dial via {node}: {e}"));
    assert_echoes(stream, node);
}

/// Writes 64 KiB to an echo server through `stream` and checks they come back unchanged.
fn assert_echoes(mut stream: TcpStream, node: &Node) {
    stream.set_read_timeout(Some(DIAL_TIMEOUT)).unwrap();
    let payload: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        let payload = payload.clone();
        std::thread::spawn(move || stream.write_all(&payload))
    };
    let mut echoed = vec![0u8; payload.len()];
    stream.read_exact(&mut echoed).unwrap_or_else(|e| panic!("read echo via {node}: {e}"));
    writer.join().unwrap().unwrap();
    assert!(echoed == payload, "bytes changed through {node}");
}

fn assert_greeting(node: &Node) {
    assert_greeted(dial(node, loopback(GREETER_PORT), 0, DIAL_TIMEOUT).unwrap(), node);
}

/// The greeter's bytes arrive whole through `stream`: the handshake consumed nothing past its own end.
fn assert_greeted(mut stream: TcpStream, node: &Node) {
    stream.set_read_timeout(Some(DIAL_TIMEOUT)).unwrap();
    let mut greeting = vec![0u8; GREETING.len()];
    stream.read_exact(&mut greeting).unwrap_or_else(|e| panic!("greeting via {node}: {e}"));
    assert_eq!(greeting, GREETING);
}

#[test]
fn socks5_dial_round_trips_bytes_through_microsocks() {
    let Some(mut lab) = Lab::new("socks5 dial") else { return };
    lab.start_microsocks(SOCKS_PORT, None);
    lab.inside(|| {
        let proxy = node(&format!("socks5://127.0.0.1:{SOCKS_PORT}"));
        assert_round_trip(&proxy);
        assert_greeting(&proxy);
        // SO_MARK needs CAP_NET_ADMIN, which root has.
        dial(&proxy, loopback(ECHO_PORT), 0x42, DIAL_TIMEOUT).expect("dial with a mark");
        let refused = dial(&proxy, loopback(CLOSED_PORT), 0, DIAL_TIMEOUT).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");
    });
}

#[test]
fn socks5_password_auth_succeeds_and_wrong_password_is_denied() {
    let Some(mut lab) = Lab::new("socks5 auth") else { return };
    lab.start_microsocks(SOCKS_AUTH_PORT, Some(("alice", "s3cret")));
    lab.inside(|| {
        assert_round_trip(&node(&format!("socks5://alice:s3cret@127.0.0.1:{SOCKS_AUTH_PORT}")));
        let wrong = dial(
            &node(&format!("socks5://alice:wrong@127.0.0.1:{SOCKS_AUTH_PORT}")),
            loopback(ECHO_PORT),
            0,
            DIAL_TIMEOUT,
        )
        .unwrap_err();
        assert_eq!(wrong.kind(), std::io::ErrorKind::PermissionDenied, "{wrong}");
        let missing =
            dial(&node(&format!("socks5://127.0.0.1:{SOCKS_AUTH_PORT}")), loopback(ECHO_PORT), 0, DIAL_TIMEOUT)
                .unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::PermissionDenied, "{missing}");
    });
}

#[test]
fn http_connect_round_trips_bytes_through_tinyproxy() {
    let Some(mut lab) = Lab::new("http connect") else { return };
    lab.start_tinyproxy(None);
    lab.inside(|| {
        let proxy = node(&format!("http://127.0.0.1:{HTTP_PORT}"));
        assert_round_trip(&proxy);
        assert_greeting(&proxy);
        let forbidden_port = dial(&proxy, loopback(CLOSED_PORT), 0, DIAL_TIMEOUT).unwrap_err();
        assert!(forbidden_port.to_string().contains("refused CONNECT"), "{forbidden_port}");
    });
}

#[test]
fn http_connect_basic_auth_through_tinyproxy() {
    let Some(mut lab) = Lab::new("http basic auth") else { return };
    lab.start_tinyproxy(Some(("bob", "pa55")));
    lab.inside(|| {
        assert_round_trip(&node(&format!("http://bob:pa55@127.0.0.1:{HTTP_PORT}")));
        let wrong =
            dial(&node(&format!("http://bob:nope@127.0.0.1:{HTTP_PORT}")), loopback(ECHO_PORT), 0, DIAL_TIMEOUT)
                .unwrap_err();
        assert_eq!(wrong.kind(), std::io::ErrorKind::PermissionDenied, "{wrong}");
    });
}

/// The non-blocking dial the relay loops use, against the same real proxies: bytes round-trip, a greeting that
/// follows the proxy's answer at once is not eaten, and failures keep the blocking dial's error kinds.
#[test]
fn nonblocking_dials_through_microsocks_and_tinyproxy_match_blocking_ones() {
    use std::io::ErrorKind;
    let Some(mut lab) = Lab::new("nonblocking dial") else { return };
    lab.start_microsocks(SOCKS_PORT, None);
    lab.start_microsocks(SOCKS_AUTH_PORT, Some(("alice", "s3cret")));
    lab.start_tinyproxy(Some(("bob", "pa55")));
    lab.inside(|| {
        let nodes = [
            Node::Direct,
            node(&format!("socks5://127.0.0.1:{SOCKS_PORT}")),
            node(&format!("socks5://alice:s3cret@127.0.0.1:{SOCKS_AUTH_PORT}")),
            node(&format!("http://bob:pa55@127.0.0.1:{HTTP_PORT}")),
        ];
        let mut waited = 0;
        for node in &nodes {
            let (stream, waits) = dial_nonblocking(node, loopback(ECHO_PORT)).unwrap_or_else(|e| panic!("{node}: {e}"));
            waited += waits;
            assert_echoes(stream, node);
            let (stream, _) = dial_nonblocking(node, loopback(GREETER_PORT)).unwrap_or_else(|e| panic!("{node}: {e}"));
            assert_greeted(stream, node);
        }
        // Every proxy answers after a round trip: the dials did wait on the sockets rather than block in them.
        assert!(waited >= 3, "the non-blocking dials never waited ({waited})");
        let kind = |node: &Node, port| dial_nonblocking(node, loopback(port)).map(drop).unwrap_err().kind();
        assert_eq!(kind(&Node::Direct, CLOSED_PORT), ErrorKind::ConnectionRefused);
        assert_eq!(kind(&nodes[1], CLOSED_PORT), ErrorKind::ConnectionRefused);
        assert_eq!(
            kind(&node(&format!("socks5://alice:wrong@127.0.0.1:{SOCKS_AUTH_PORT}")), ECHO_PORT),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            kind(&node(&format!("http://bob:nope@127.0.0.1:{HTTP_PORT}")), ECHO_PORT),
            ErrorKind::PermissionDenied
        );
        // A proxy named by host name needs the (blocking) resolver: the caller is told to dial on a thread.
        let named = node(&format!("socks5://localhost:{SOCKS_PORT}"));
        assert!(Dialing::start(&named, Target::Addr(loopback(ECHO_PORT)), 0).unwrap().is_none());
        assert_eq!(
            Dialing::start(&Node::Block, Target::Addr(loopback(ECHO_PORT)), 0).unwrap_err().kind(),
            ErrorKind::PermissionDenied
        );
    });
}

#[test]
fn silent_proxy_times_out_within_the_dial_timeout() {
    let Some(lab) = Lab::new("silent proxy") else { return };
    lab.inside(|| {
        // Accepted by the kernel's backlog, never answered.
        let silent = TcpListener::bind(loopback(0)).unwrap();
        let port = silent.local_addr().unwrap().port();
        for link in [format!("socks5://127.0.0.1:{port}"), format!("http://127.0.0.1:{port}")] {
            let timeout = Duration::from_millis(300);
            let started = Instant::now();
            let error = dial(&node(&link), loopback(ECHO_PORT), 0, timeout).unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{link}: {error}");
            assert!(started.elapsed() < timeout + Duration::from_millis(500), "{link}: {:?}", started.elapsed());
        }
        drop(silent);
    });
}

#[test]
fn checker_marks_dead_node_and_pick_skips_it() {
    let Some(mut lab) = Lab::new("checker") else { return };
    lab.start_microsocks(SOCKS_PORT, None);
    lab.start_tinyproxy(None);
    lab.inside(|| {
        let nodes: std::sync::Arc<[Node]> = vec![
            node(&format!("socks5://127.0.0.1:{CLOSED_PORT}")),
            node(&format!("socks5://127.0.0.1:{SOCKS_PORT}")),
            node(&format!("http://127.0.0.1:{HTTP_PORT}")),
        ]
        .into();
        let health = std::sync::Arc::new(HealthTable::new(nodes.len()));
        let settings = CheckSettings {
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
            target: CheckTarget::parse(&format!("http://127.0.0.1:{ECHO_PORT}/"), vec![]).unwrap(),
            mark: 0,
        };
        let checker = Checker::spawn(std::sync::Arc::clone(&nodes), std::sync::Arc::clone(&health), settings).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        let measured = |state| matches!(state, NodeState::Alive(Some(_)));
        while Instant::now() < until
            && !(health.state(NodeId(0)) == NodeState::Dead
                && measured(health.state(NodeId(1)))
                && measured(health.state(NodeId(2))))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(checker);
        assert_eq!(health.state(NodeId(0)), NodeState::Dead);
        assert!(measured(health.state(NodeId(1))), "{:?}", health);
        assert!(measured(health.state(NodeId(2))), "{:?}", health);

        let group = |policy| Group { name: "g".into(), nodes: vec![NodeId(0), NodeId(1), NodeId(2)], policy };
        assert!(group(Policy::Fixed(0)).pick(&health, 1).is_err(), "fixed on a dead node is an error");
        assert_eq!(group(Policy::Fixed(2)).pick(&health, 1), Ok(NodeId(2)));
        for hash in 0..32 {
            let picked = group(Policy::Random).pick(&health, hash).unwrap();
            assert_ne!(picked, NodeId(0), "random never picks the dead node");
            assert_eq!(group(Policy::Random).pick(&health, hash), Ok(picked), "one flow, one node");
        }
        assert_ne!(group(Policy::Min).pick(&health, 0).unwrap(), NodeId(0));
        let dead_only = Group { name: "dead".into(), nodes: vec![NodeId(0)], policy: Policy::Min };
        assert_eq!(dead_only.pick(&health, 0).unwrap_err().to_string(), "group `dead` has no alive node");
        // Picked nodes carry traffic.
        assert_round_trip(&nodes[group(Policy::Min).pick(&health, 0).unwrap().index()]);
    });
}

#[test]
fn check_outcomes_alive_dead_and_skipped_without_network() {
    let Some(mut lab) = Lab::new("check outcomes") else { return };
    lab.start_microsocks(SOCKS_PORT, None);
    lab.inside(|| {
        let alive = node(&format!("socks5://127.0.0.1:{SOCKS_PORT}"));
        let dead = node(&format!("socks5://127.0.0.1:{CLOSED_PORT}"));
        let timeout = Duration::from_secs(1);
        assert!(matches!(check(&alive, &CheckTarget::ProxyItself, 0, timeout), CheckOutcome::Alive(_)));
        assert_eq!(check(&dead, &CheckTarget::ProxyItself, 0, timeout), CheckOutcome::Dead);
        // The namespace has no route anywhere: the name cannot be resolved, so the check does not count.
        let unresolvable = CheckTarget::parse("http://check-target.invalid/", vec![]).unwrap();
        assert_eq!(check(&alive, &unresolvable, 0, timeout), CheckOutcome::Skipped);
        let health = HealthTable::new(1);
        health.record(NodeId(0), check(&alive, &CheckTarget::ProxyItself, 0, timeout));
        let before = health.state(NodeId(0));
        health.record(NodeId(0), check(&dead, &unresolvable, 0, timeout));
        assert_eq!(health.state(NodeId(0)), before, "a skipped check keeps liveness and latency");
    });
}

#[test]
fn socks5_udp_associate_relays_datagrams_through_danted_blocking_and_not() {
    let Some(mut lab) = Lab::new("udp associate") else { return };
    lab.start_danted();
    let log = lab.dir().join("danted.log");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab.inside(|| {
            let node = node(&format!("socks5://127.0.0.1:{DANTE_PORT}"));
            let Node::Proxy(proxy) = &node else { unreachable!() };
            let association = associate(proxy, 0, DIAL_TIMEOUT).expect("UDP ASSOCIATE");
            assert_relays(&association);
            // As the gateway's UDP workers open one: on a non-blocking socket, polled when ready.
            let mut dialing = Dialing::associate(proxy, 0).unwrap().expect("a proxy given by address never blocks");
            finish(&mut dialing, &node).expect("UDP ASSOCIATE, non-blocking");
            let association = dialing.into_association().unwrap();
            assert_relays(&association);
            // A dial that has not finished yields no association.
            let early = Dialing::associate(proxy, 0).unwrap().unwrap();
            assert!(early.into_association().is_err());
        })
    }));
    if let Err(panic) = result {
        eprintln!("danted log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        std::panic::resume_unwind(panic);
    }
}

/// Sends a datagram to the UDP echo server through `association` and checks the unwrapped reply.
fn assert_relays(association: &socks5::UdpAssociation) {
    let socket = UdpSocket::bind(loopback(0)).unwrap();
    socket.set_read_timeout(Some(DIAL_TIMEOUT)).unwrap();
    let target = loopback(UDP_ECHO_PORT);
    let mut datagram = Vec::new();
    socks5::encode_udp_header(target, &mut datagram);
    datagram.extend_from_slice(b"ping over socks5 udp");
    socket.send_to(&datagram, association.relay()).unwrap();
    let mut buf = [0u8; 2048];
    let (len, from) = socket.recv_from(&mut buf).expect("reply through the relay");
    assert_eq!(from, association.relay());
    let (source, payload) = socks5::decode_udp_datagram(&buf[..len]).unwrap();
    assert_eq!(source, socks5::Address::Ip(target));
    assert_eq!(payload, b"ping over socks5 udp");
}
