//! Steering and outbounds: a proxied LAN flow is handed by tc to a worker's transparent socket and relayed
//! through the node its group picks (real microsocks and tinyproxy), a direct flow is forwarded untouched, and
//! a group whose only node is dead refuses. Observed from the server: the peer address it sees. Needs root.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    time::Duration,
};

use bench_lab::{
    daemon::Daemon,
    netns::Netns,
    proxies, skip_unless_root,
    topology::{Topology, coalesce_like_a_nic, gro_features},
};

fn dae() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dae"))
}

/// A server in `ns` on `addr` that answers every connection with the peer address it sees, then closes.
fn who_am_i_server(ns: &Netns, addr: SocketAddr) {
    let listener = ns.run_in(move || TcpListener::bind(addr)).unwrap().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let peer = stream.peer_addr().map(|p| p.ip().to_string()).unwrap_or_default();
            let _ = stream.write_all(peer.as_bytes());
        }
    });
}

/// A UDP server in `ns` on `addr` that answers every datagram with the sender address it sees.
fn udp_who_am_i_server(ns: &Netns, addr: SocketAddr) {
    let socket = ns.run_in(move || UdpSocket::bind(addr)).unwrap().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((_, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(peer.ip().to_string().as_bytes(), peer);
        }
    });
}

/// A server in `ns` on `addr` that reads each connection to EOF, then writes `answer(what it read)` and closes
/// (a thread per connection): it answers only if the client's half-close reached it, and the answer must still
/// travel back over the half-closed connection.
fn answers_after_eof(ns: &Netns, addr: SocketAddr, answer: impl Fn(Vec<u8>) -> Vec<u8> + Send + Sync + 'static) {
    let listener = ns.run_in(move || TcpListener::bind(addr)).unwrap().unwrap();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let answer = std::sync::Arc::clone(&answer);
            std::thread::spawn(move || {
                let mut all = Vec::new();
                if stream.read_to_end(&mut all).is_ok() {
                    let _ = stream.write_all(&answer(all));
                }
            });
        }
    });
}

/// `dae stats` once `key` reaches `at_least` (the userspace counters reach it within about a second), or after
/// 3 s whatever it says.
fn stats_when(daemon: &Daemon, key: &str, at_least: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let stats = daemon.stats().unwrap();
        if stats[key].as_u64().unwrap_or(0) >= at_least || std::time::Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends a datagram from `ns` to `to`; what the server says the sender is, and where the answer came from.
fn udp_seen_as(ns: &Netns, to: SocketAddr) -> std::io::Result<(String, SocketAddr)> {
    ns.run_in(move || -> std::io::Result<(String, SocketAddr)> {
        let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
        let socket = UdpSocket::bind(any)?;
        socket.set_read_timeout(Some(Duration::from_secs(3)))?;
        socket.send_to(b"who am i", to)?;
        let mut buf = [0u8; 100];
        let (n, from) = socket.recv_from(&mut buf)?;
        Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
    })?
}

/// Connects from `ns` to `to` and returns what the server says the peer is.
fn seen_as(ns: &Netns, to: SocketAddr) -> std::io::Result<String> {
    ns.run_in(move || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })?
}

#[test]
fn proxied_lan_flows_go_through_their_groups_node_and_direct_ones_are_forwarded() {
    let test = "proxied_lan_flows_go_through_their_groups_node_and_direct_ones_are_forwarded";
    if bench_lab::dns::skip(test, &["microsocks", "tinyproxy"]) {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    for ip in [IpAddr::from(topo.server_v4), IpAddr::from(topo.server_v6)] {
        for port in [5501, 5502, 5503, 5504] {
            who_am_i_server(&topo.server, SocketAddr::new(ip, port));
        }
    }
    // The proxies run in the server namespace: a flow they carry reaches the server from the server's own
    // address; a flow the gateway forwards arrives from the client.
    let server_v4 = IpAddr::from(topo.server_v4);
    let _socks = proxies::microsocks(&topo.server, server_v4, 1080).unwrap();
    let _http = proxies::tinyproxy(&topo.server, server_v4, 8888).unwrap();
    let config = format!(
        "global {{\n  lan_interface: {lan_if}\n  wan_interface: {wan_if}\n  check_interval: 1s\n}}\n\
         node {{\n  socks: 'socks5://{server_v4}:1080'\n  http: 'http://{server_v4}:8888'\n  \
         gone: 'socks5://{server_v4}:1081'\n}}\n\
         group {{\n  via_socks {{\n    filter: name(socks)\n    policy: fixed(0)\n  }}\n  \
         via_http {{\n    filter: name(http)\n    policy: random\n  }}\n  \
         dead {{\n    filter: name(gone)\n    policy: min\n  }}\n}}\n\
         routing {{\n  dport(5501) -> via_socks\n  dport(5503) -> via_http\n  dport(5504) -> dead\n  \
         fallback: direct\n}}\n",
        lan_if = lan.gateway_if,
        wan_if = topo.wan_if,
    );
    let mut daemon = Daemon::start(&dae(), &topo.gateway, &config, &[]).unwrap();
    let context = |daemon: &Daemon| format!("stats {:?}; log:\n{}", daemon.stats(), daemon.log());
    for (server, client) in [
        (IpAddr::from(topo.server_v4), IpAddr::from(lan.client_v4)),
        (IpAddr::from(topo.server_v6), IpAddr::from(lan.client_v6)),
    ] {
        for port in [5501, 5503] {
            let seen = seen_as(&lan.client, SocketAddr::new(server, port))
                .unwrap_or_else(|e| panic!("port {port}: {e}; {}", context(&daemon)));
            assert_eq!(seen, server.to_string(), "port {port} went through its proxy: {}", context(&daemon));
        }
        let direct = seen_as(&lan.client, SocketAddr::new(server, 5502)).unwrap();
        assert_eq!(direct, client.to_string(), "forwarded untouched: the server sees the client");
    }
    // The dead node is found dead by the health check (every second); from then on its group refuses the
    // connection (an RST, at once) and says why in the log.
    let to_dead = SocketAddr::new(IpAddr::from(topo.server_v4), 5504);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while seen_as(&lan.client, to_dead).is_ok() || !daemon.log().contains("no alive node") {
        assert!(std::time::Instant::now() < deadline, "the dead group never refused: {}", context(&daemon));
        std::thread::sleep(Duration::from_millis(200));
    }
    // The userspace counters reach `dae stats` within about a second.
    let stats = stats_when(&daemon, "relay_no_alive_node", 1);
    assert!(stats["relay_no_alive_node"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["relay_tcp_relayed"].as_u64().unwrap() >= 4, "{stats}");
    assert!(stats["steered"].as_u64().unwrap() >= 4, "{stats}");
    assert_eq!(stats["steer_no_socket"], 0, "{stats}");
    let rules = String::from_utf8_lossy(&topo.gateway.ip(&["rule", "show"]).unwrap().stdout).into_owned();
    assert!(rules.contains("lookup 2023"), "{rules}");
    assert!(daemon.stop().unwrap().success());
    let rules = String::from_utf8_lossy(&topo.gateway.ip(&["rule", "show"]).unwrap().stdout).into_owned();
    assert!(!rules.contains("2023"), "policy routing removed at exit: {rules}");
}

#[test]
fn a_relayed_bulk_transfer_arrives_whole_both_ways_copied_or_spliced() {
    if skip_unless_root("a_relayed_bulk_transfer_arrives_whole_both_ways_copied_or_spliced") {
        return;
    }
    const BYTES: usize = 32 << 20;
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let server = IpAddr::from(topo.server_v4);
    // Hands what each connection sent over (once its EOF came), then answers a 4 MiB pattern of its own.
    let (got_tx, got) = std::sync::mpsc::channel();
    answers_after_eof(&topo.server, SocketAddr::new(server, 5541), move |all| {
        let _ = got_tx.send(all);
        bench_lab::traffic::pattern(4 << 20, 9)
    });
    let config = format!(
        "global {{\n  lan_interface: {}\n  wan_interface: {}\n}}\nnode {{\n  gw: 'direct'\n}}\n\
         group {{\n  relay {{\n    policy: fixed(0)\n  }}\n}}\nrouting {{\n  dport(5541) -> relay\n  fallback: direct\n}}\n",
        lan.gateway_if, topo.wan_if
    );
    let request = bench_lab::traffic::pattern(BYTES, 1);
    for mode in ["copy", "splice"] {
        let mut daemon = Daemon::start(&dae(), &topo.gateway, &config, &["--tcp-relay", mode]).unwrap();
        assert!(daemon.log().contains(&format!("TCP relay: {mode}")), "{}", daemon.log());
        let to = SocketAddr::new(server, 5541);
        let sent = request.clone();
        let answer = lan
            .client
            .run_in(move || -> std::io::Result<Vec<u8>> {
                let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
                stream.set_read_timeout(Some(Duration::from_secs(20)))?;
                stream.write_all(&sent)?;
                stream.shutdown(std::net::Shutdown::Write)?;
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer)?;
                Ok(answer)
            })
            .unwrap()
            .unwrap();
        let received = got.recv_timeout(Duration::from_secs(1)).unwrap();
        assert!(received == request, "{mode}: the server got {} of {BYTES} bytes, or not in order", received.len());
        assert!(
            answer == bench_lab::traffic::pattern(4 << 20, 9),
            "{mode}: the answer after the half-close: {} bytes",
            answer.len()
        );
        let stats = stats_when(&daemon, "relay_tcp_bytes", (BYTES + (4 << 20)) as u64);
        assert!(stats["relay_tcp_bytes"].as_u64().unwrap() >= (BYTES + (4 << 20)) as u64, "{mode}: {stats}");
        assert_eq!(stats["relay_tcp_errors"], 0, "{mode}: {stats}");
        assert!(daemon.stop().unwrap().success());
    }
}

#[test]
fn after_the_daemon_is_killed_proxied_flows_pass_untouched_once_the_gate_closes() {
    let test = "after_the_daemon_is_killed_proxied_flows_pass_untouched_once_the_gate_closes";
    if bench_lab::dns::skip(test, &["microsocks"]) {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let server = IpAddr::from(topo.server_v4);
    who_am_i_server(&topo.server, SocketAddr::new(server, 5511));
    // A sink that reads forever: the transfer in flight when the daemon dies.
    let sink = topo.server.run_in(move || TcpListener::bind(SocketAddr::new(server, 5512))).unwrap().unwrap();
    std::thread::spawn(move || {
        for mut stream in sink.incoming().flatten() {
            std::thread::spawn(move || std::io::copy(&mut stream, &mut std::io::sink()));
        }
    });
    let _socks = proxies::microsocks(&topo.server, server, 1080).unwrap();
    let config = format!(
        "global {{\n  lan_interface: {}\n  wan_interface: {}\n}}\nnode {{\n  socks: 'socks5://{server}:1080'\n}}\n\
         group {{\n  proxy {{\n    policy: fixed(0)\n  }}\n}}\nrouting {{\n  dport(5511, 5512) -> proxy\n  fallback: direct\n}}\n",
        lan.gateway_if, topo.wan_if
    );
    let mut daemon = Daemon::start(&dae(), &topo.gateway, &config, &[]).unwrap();
    assert_eq!(seen_as(&lan.client, SocketAddr::new(server, 5511)).unwrap(), server.to_string(), "proxied");
    // Direct flows never reach userspace: the steering counter does not move for them.
    let steered = daemon.stats().unwrap()["steered"].as_u64().unwrap();
    who_am_i_server(&topo.server, SocketAddr::new(server, 5513));
    for _ in 0..3 {
        assert_eq!(seen_as(&lan.client, SocketAddr::new(server, 5513)).unwrap(), lan.client_v4.to_string());
    }
    assert_eq!(daemon.stats().unwrap()["steered"].as_u64().unwrap(), steered, "direct flows were not steered");

    // A transfer in flight through the proxy when the daemon is SIGKILLed.
    let to_sink = SocketAddr::new(server, 5512);
    let writer = lan.client.spawn_in(move || {
        let mut stream = TcpStream::connect_timeout(&to_sink, Duration::from_secs(3)).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let started = std::time::Instant::now();
        // Writes until the relay dies under it (or 15 s pass): the kernel resets or stalls it.
        while started.elapsed() < Duration::from_secs(15) {
            if stream.write_all(&chunk).is_err() {
                return true;
            }
        }
        false
    });
    std::thread::sleep(Duration::from_millis(300));
    daemon.kill().unwrap();
    // Once the lease lapses (3 s) the gate closes: new flows to the proxied port pass untouched.
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    loop {
        match seen_as(&lan.client, SocketAddr::new(server, 5511)) {
            Ok(seen) if seen == lan.client_v4.to_string() => break,
            other => assert!(std::time::Instant::now() < deadline, "still not untouched: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(writer.join().unwrap().unwrap(), "the transfer through the dead relay ended instead of hanging");
}

/// The log line of the steering socket's receiver on a kernel with io_uring multishot `RecvMsg` (6.1 or later,
/// io_uring enabled).
const URING_RECEIVER: &str = "UDP steering receive: io_uring multishot RecvMsg";
/// The log line when `--udp-recv recvmmsg` forces the fallback.
const RECVMMSG_RECEIVER: &str = "UDP steering receive: recvmmsg (as asked)";

#[test]
fn proxied_udp_is_relayed_in_sessions_directly_and_through_a_socks5_udp_association() {
    udp_relay_case(
        "proxied_udp_is_relayed_in_sessions_directly_and_through_a_socks5_udp_association",
        &[],
        URING_RECEIVER,
    );
}

#[test]
fn proxied_udp_is_relayed_with_the_recvmmsg_receiver_when_io_uring_is_not_used() {
    udp_relay_case(
        "proxied_udp_is_relayed_with_the_recvmmsg_receiver_when_io_uring_is_not_used",
        &["--udp-recv", "recvmmsg"],
        RECVMMSG_RECEIVER,
    );
}

/// Relays UDP directly and through danted, for both families, with `dae run <args>`, whose log must name
/// `receiver`.
fn udp_relay_case(test: &str, args: &[&str], receiver: &str) {
    if bench_lab::dns::skip(test, &["danted"]) {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let server_v4 = IpAddr::from(topo.server_v4);
    for ip in [server_v4, IpAddr::from(topo.server_v6)] {
        for port in [5521, 5522, 5523] {
            udp_who_am_i_server(&topo.server, SocketAddr::new(ip, port));
        }
    }
    let _socks = proxies::danted(&topo.server, server_v4, 1080, &[server_v4, IpAddr::from(topo.server_v6)]).unwrap();
    // A proxy named by host name (its association is opened on a thread): danted on the gateway's loopback,
    // relaying from the gateway's WAN addresses; only the clients' datagrams are routed to it, not danted's own.
    let (wan_v4, wan_v6) = (IpAddr::from(topo.gateway_wan_v4), IpAddr::from(topo.gateway_wan_v6));
    for ip in [server_v4, IpAddr::from(topo.server_v6)] {
        udp_who_am_i_server(&topo.server, SocketAddr::new(ip, 5524));
    }
    let _named = proxies::danted(&topo.gateway, IpAddr::from([127, 0, 0, 1]), 1081, &[wan_v4, wan_v6]).unwrap();
    let config = format!(
        "global {{\n  lan_interface: {}\n  wan_interface: {}\n}}\n\
         node {{\n  gw: 'direct'\n  dante: 'socks5://{server_v4}:1080'\n  named: 'socks5://localhost:1081'\n}}\n\
         group {{\n  from_gateway {{\n    filter: name(gw)\n    policy: fixed(0)\n  }}\n  \
         via_socks {{\n    filter: name(dante)\n    policy: fixed(0)\n  }}\n  \
         via_named {{\n    filter: name(named)\n    policy: fixed(0)\n  }}\n}}\n\
         routing {{\n  dport(5521) -> from_gateway\n  dport(5522) -> via_socks\n  \
         sip({}, '{}') && dport(5524) -> via_named\n  fallback: direct\n}}\n",
        lan.gateway_if, topo.wan_if, lan.client_v4, lan.client_v6
    );
    let daemon = Daemon::start(&dae(), &topo.gateway, &config, args).unwrap();
    assert!(daemon.wait_for_log(receiver, Duration::from_secs(2)), "no {receiver:?} in the log:\n{}", daemon.log());
    let context = |daemon: &Daemon| format!("stats {:?}; log:\n{}", daemon.stats(), daemon.log());
    for (server, gateway, client) in [
        (server_v4, IpAddr::from(topo.gateway_wan_v4), IpAddr::from(lan.client_v4)),
        (IpAddr::from(topo.server_v6), IpAddr::from(topo.gateway_wan_v6), IpAddr::from(lan.client_v6)),
    ] {
        for round in 0..2 {
            let to = SocketAddr::new(server, 5521);
            let (seen, from) =
                udp_seen_as(&lan.client, to).unwrap_or_else(|e| panic!("{to}: {e}; {}", context(&daemon)));
            assert_eq!(seen, gateway.to_string(), "relayed from the gateway, round {round}");
            assert_eq!(from, to, "the answer comes from the server the client asked");
        }
        let to = SocketAddr::new(server, 5522);
        let (seen, from) = udp_seen_as(&lan.client, to).unwrap_or_else(|e| panic!("{to}: {e}; {}", context(&daemon)));
        assert_eq!(seen, server.to_string(), "relayed by danted (its external address of that family)");
        assert_eq!(from, to);
        let to = SocketAddr::new(server, 5523);
        assert_eq!(udp_seen_as(&lan.client, to).unwrap().0, client.to_string(), "direct: untouched");
        let to = SocketAddr::new(server, 5524);
        let (seen, from) = udp_seen_as(&lan.client, to).unwrap_or_else(|e| panic!("{to}: {e}; {}", context(&daemon)));
        assert_eq!(seen, gateway.to_string(), "relayed by the danted named localhost");
        assert_eq!(from, to);
    }
    // One session per client socket (each exchange above binds a new one): four per family; every datagram
    // answered.
    let stats = stats_when(&daemon, "udp_replied", 8);
    assert_eq!(stats["udp_sessions"], 8, "{stats}");
    assert_eq!(stats["udp_forwarded"], 8, "{stats}");
    assert_eq!(stats["udp_replied"], 8, "{stats}");
    assert_eq!(stats["udp_dropped"], 0, "{stats}");
    assert_eq!(stats["udp_associations_failed"], 0, "{stats}");
    // Each session socket holds a burst of replies while its worker is busy elsewhere: 2 MiB, which the kernel
    // reports doubled (the default, 208 KiB, overflowed in saturated runs).
    let sockets = topo.gateway.output("ss", &["-uanmH"]).unwrap();
    let sockets = String::from_utf8_lossy(&sockets.stdout);
    let sized = sockets.matches("rb4194304,").count();
    assert!(sized >= 8, "{sized} sockets with a 2 MiB receive buffer, 8 sessions open:\n{sockets}");
}

/// A UDP server in `ns` on `addr` that answers every datagram with the sender address it sees, a newline, and
/// the datagram itself.
fn udp_who_and_echo_server(ns: &Netns, addr: SocketAddr) {
    let socket = ns.run_in(move || UdpSocket::bind(addr)).unwrap().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let mut answer = format!("{}\n", peer.ip()).into_bytes();
            answer.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&answer, peer);
        }
    });
}

/// Sends `payload` from `ns` to `to` as one datagram; (who the server says sent it, what it echoed).
fn udp_big_exchange(ns: &Netns, to: SocketAddr, payload: Vec<u8>) -> std::io::Result<(String, Vec<u8>)> {
    ns.run_in(move || -> std::io::Result<(String, Vec<u8>)> {
        let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
        let socket = UdpSocket::bind(any)?;
        socket.set_read_timeout(Some(Duration::from_secs(3)))?;
        socket.send_to(&payload, to)?;
        let mut buf = vec![0u8; 65_536];
        let (n, from) = socket.recv_from(&mut buf)?;
        assert_eq!(from, to, "the answer comes from the server the client asked");
        let at = buf[..n].iter().position(|&b| b == b'\n').unwrap_or(n);
        Ok((String::from_utf8_lossy(&buf[..at]).into_owned(), buf[(at + 1).min(n)..n].to_vec()))
    })?
}

/// A UDP datagram larger than the LAN's MTU leaves the client in IP fragments, which tc sees before any
/// reassembly and only the first of which carries ports: the whole train must follow its flow's decision.
#[test]
fn an_ip_fragmented_udp_datagram_of_a_proxied_flow_is_reassembled_and_relayed_whole() {
    if skip_unless_root("an_ip_fragmented_udp_datagram_of_a_proxied_flow_is_reassembled_and_relayed_whole") {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let (server_v4, server_v6) = (IpAddr::from(topo.server_v4), IpAddr::from(topo.server_v6));
    for ip in [server_v4, server_v6] {
        for port in [5531, 5532] {
            udp_who_and_echo_server(&topo.server, SocketAddr::new(ip, port));
        }
    }
    let config = format!(
        "global {{\n  lan_interface: {}\n  wan_interface: {}\n}}\n\
         node {{\n  gw: 'direct'\n}}\n\
         group {{\n  from_gateway {{\n    filter: name(gw)\n    policy: fixed(0)\n  }}\n}}\n\
         routing {{\n  dport(5531) -> from_gateway\n  dport(5533) -> block\n  fallback: direct\n}}\n",
        lan.gateway_if, topo.wan_if
    );
    udp_who_and_echo_server(&topo.server, SocketAddr::new(server_v4, 5533));
    let daemon = Daemon::start(&dae(), &topo.gateway, &config, &[]).unwrap();
    assert!(daemon.wait_for_log("sk_lookup attached", Duration::from_secs(2)), "log:\n{}", daemon.log());
    let context = |daemon: &Daemon| format!("stats {:?}; log:\n{}", daemon.stats(), daemon.log());
    let mut sent = 0;
    for (server, gateway, client) in [
        (server_v4, IpAddr::from(topo.gateway_wan_v4), IpAddr::from(lan.client_v4)),
        (server_v6, IpAddr::from(topo.gateway_wan_v6), IpAddr::from(lan.client_v6)),
    ] {
        // Three and six fragments on a 1500-byte link; a different pattern each time.
        for (round, len) in [(0u8, 4_000usize), (1, 8_000)] {
            let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(round)).collect();
            let to = SocketAddr::new(server, 5531);
            let (seen, echo) = udp_big_exchange(&lan.client, to, payload.clone())
                .unwrap_or_else(|e| panic!("{to}, {len} bytes: {e}; {}", context(&daemon)));
            assert_eq!(seen, gateway.to_string(), "{to}: relayed from the gateway, not forwarded directly");
            assert!(echo == payload, "{to}: the {len}-byte datagram came back whole ({} bytes)", echo.len());
            sent += 1;
        }
        // A direct flow's fragments still pass untouched.
        let to = SocketAddr::new(server, 5532);
        let payload = vec![0x5a; 4_000];
        let (seen, echo) = udp_big_exchange(&lan.client, to, payload.clone()).unwrap();
        assert_eq!(seen, client.to_string(), "{to}: direct, untouched");
        assert!(echo == payload);
    }
    // A blocked flow's datagram is dropped whole (before, every fragment passed, the first included).
    let to = SocketAddr::new(server_v4, 5533);
    assert!(udp_big_exchange(&lan.client, to, vec![1; 4_000]).is_err(), "{to}: blocked");
    let stats = stats_when(&daemon, "udp_replied", sent);
    assert_eq!(stats["reassembled_steered"], sent, "every steered datagram reached its worker whole: {stats}");
    // 2 and 5 later fragments per steered datagram (per family), 2 of the blocked one.
    assert!(stats["fragment_followed"].as_u64().unwrap() >= 7 * 2 + 2, "{stats}");
    assert_eq!(stats["udp_forwarded"], sent, "{stats}");
    assert_eq!(stats["udp_replied"], sent, "{stats}");
    assert_eq!(stats["udp_dropped"], 0, "{stats}");
    assert_eq!(stats["steer_no_socket"], 0, "{stats}");
}

/// A SOCKS5 "proxy" on `addr` in `ns` that reads each client's greeting and never answers; the connections it
/// holds are returned (clearing them hangs up on the clients).
fn silent_socks5(ns: &Netns, addr: SocketAddr) -> std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>> {
    let proxy = ns.run_in(move || TcpListener::bind(addr)).unwrap().unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let holder = std::sync::Arc::clone(&held);
    std::thread::spawn(move || {
        for mut stream in proxy.incoming().flatten() {
            let mut greeting = [0u8; 3];
            if stream.read_exact(&mut greeting).is_ok() && greeting[0] == 5 {
                holder.lock().unwrap().push(stream);
            }
        }
    });
    held
}

/// A UDP echo server on `addr` in `ns`.
fn udp_echo_server(ns: &Netns, addr: SocketAddr) {
    let socket = ns.run_in(move || UdpSocket::bind(addr)).unwrap().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], peer);
        }
    });
}

#[test]
fn a_socks5_proxy_slow_to_open_a_udp_association_holds_up_no_other_session() {
    if skip_unless_root("a_socks5_proxy_slow_to_open_a_udp_association_holds_up_no_other_session") {
        return;
    }
    const FLOWS: usize = 24;
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let server = IpAddr::from(topo.server_v4);
    for port in [5571, 5572] {
        udp_echo_server(&topo.server, SocketAddr::new(server, port));
    }
    // The proxy reads each greeting and never answers; dropping the held sockets hangs up on the association.
    let held = silent_socks5(&topo.server, SocketAddr::new(server, 1099));
    let config = format!(
        "global {{\n  lan_interface: {}\n  wan_interface: {}\n}}\nnode {{\n  gw: 'direct'\n  slow: 'socks5://{server}:1099'\n}}\n\
         group {{\n  via_slow {{\n    filter: name(slow)\n    policy: fixed(0)\n  }}\n  \
         from_gateway {{\n    filter: name(gw)\n    policy: fixed(0)\n  }}\n}}\n\
         routing {{\n  dport(5571) -> via_slow\n  dport(5572) -> from_gateway\n  fallback: direct\n}}\n",
        lan.gateway_if, topo.wan_if
    );
    let daemon = Daemon::start(&dae(), &topo.gateway, &config, &[]).unwrap();
    let (slow, fast) = (SocketAddr::new(server, 5571), SocketAddr::new(server, 5572));
    // One client socket per worker flow hash is not knowable here: many flows, one per source port, spread over
    // every worker; each waits for its own association first.
    let waiting = lan
        .client
        .run_in(move || {
            (0..4)
                .map(|i| {
                    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
                    socket.send_to(format!("waits {i}").as_bytes(), slow).unwrap();
                    socket
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while held.lock().unwrap().len() < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(held.lock().unwrap().len() >= 4, "the associations were asked for: {}", daemon.log());
    // While they wait, every other flow is relayed at once.
    let answered = lan
        .client
        .run_in(move || {
            (0..FLOWS)
                .map(|i| {
                    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
                    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let message = format!("flow {i}");
                    socket.send_to(message.as_bytes(), fast).unwrap();
                    let mut buf = [0u8; 64];
                    matches!(socket.recv_from(&mut buf), Ok((n, from)) if from == fast && buf[..n] == *message.as_bytes())
                })
                .filter(|&ok| ok)
                .count()
        })
        .unwrap();
    assert_eq!(answered, FLOWS, "flows relayed while associations wait: {:?}", daemon.stats());
    // The proxy hangs up: the associations fail, their datagrams are dropped and counted, nothing was sent.
    held.lock().unwrap().clear();
    let stats = stats_when(&daemon, "udp_associations_failed", 4);
    assert!(stats["udp_associations_failed"].as_u64().unwrap() >= 4, "{stats}");
    assert!(stats["udp_dropped"].as_u64().unwrap() >= 4, "{stats}");
    assert_eq!(stats["udp_forwarded"], FLOWS as u64, "{stats}");
    drop(waiting);
}

#[test]
fn gateway_originated_flows_are_proxied_by_pname_and_by_wan_interface() {
    let test = "gateway_originated_flows_are_proxied_by_pname_and_by_wan_interface";
    if bench_lab::dns::skip(test, &["danted", "socat"]) {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let (server_v4, server_v6) = (IpAddr::from(topo.server_v4), IpAddr::from(topo.server_v6));
    for ip in [server_v4, server_v6] {
        for port in [5531, 5532, 5534] {
            who_am_i_server(&topo.server, SocketAddr::new(ip, port));
        }
        udp_who_am_i_server(&topo.server, SocketAddr::new(ip, 5533));
        udp_who_and_echo_server(&topo.server, SocketAddr::new(ip, 5535));
    }
    let _socks = proxies::danted(&topo.server, server_v4, 1080, &[server_v4, server_v6]).unwrap();
    let config = format!(
        "global {{\n  lan_interface: {lan_if}\n  wan_interface: {wan_if}\n}}\nnode {{\n  socks: 'socks5://{server_v4}:1080'\n}}\n\
         group {{\n  proxy {{\n    policy: fixed(0)\n  }}\n}}\n\
         routing {{\n  pname(socat) && dport(5531) -> proxy\n  interface(wan: {wan_if}) && dport(5532, 5533, 5535) -> proxy\n  \
         fallback: direct\n}}\n",
        lan_if = lan.gateway_if,
        wan_if = topo.wan_if,
    );
    let mut daemon = Daemon::start(&dae(), &topo.gateway, &config, &[]).unwrap();
    let context = |daemon: &Daemon| format!("stats {:?}; log:\n{}", daemon.stats(), daemon.log());
    let socat = |to: SocketAddr| {
        let target = if to.is_ipv4() { format!("TCP4:{to}") } else { format!("TCP6:{to}") };
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", topo.gateway.path().display()))
            .args(["--", "socat", "-T", "3", "-u", &target, "-"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("socat runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for (server, wan) in
        [(server_v4, IpAddr::from(topo.gateway_wan_v4)), (server_v6, IpAddr::from(topo.gateway_wan_v6))]
    {
        // By process name: socat's connection goes through the proxy, this test process's does not.
        let by_pname = socat(SocketAddr::new(server, 5531));
        assert_eq!(by_pname, server.to_string(), "pname(socat) proxied: {}", context(&daemon));
        assert_eq!(seen_as(&topo.gateway, SocketAddr::new(server, 5531)).unwrap(), wan.to_string(), "another process");
        // By WAN interface, TCP and UDP.
        let by_wan = seen_as(&topo.gateway, SocketAddr::new(server, 5532))
            .unwrap_or_else(|e| panic!("{e}; {}", context(&daemon)));
        assert_eq!(by_wan, server.to_string(), "interface(wan: ..) proxied");
        let (seen, from) = udp_seen_as(&topo.gateway, SocketAddr::new(server, 5533))
            .unwrap_or_else(|e| panic!("{e}; {}", context(&daemon)));
        assert_eq!(seen, server.to_string(), "UDP proxied");
        assert_eq!(from, SocketAddr::new(server, 5533), "the answer comes from the server asked");
        // A datagram larger than the WAN's MTU leaves the gateway's stack in fragments (before tc): the train
        // follows its first fragment to the worker and is relayed whole.
        let to = SocketAddr::new(server, 5535);
        let payload: Vec<u8> = (0..6_000).map(|i| (i % 251) as u8).collect();
        let (seen, echo) = udp_big_exchange(&topo.gateway, to, payload.clone())
            .unwrap_or_else(|e| panic!("{to}: {e}; {}", context(&daemon)));
        assert_eq!(seen, server.to_string(), "{to}: the fragmented datagram was proxied");
        assert!(echo == payload, "{to}: it came back whole ({} bytes)", echo.len());
        // Anything else leaves directly.
        assert_eq!(seen_as(&topo.gateway, SocketAddr::new(server, 5534)).unwrap(), wan.to_string());
    }
    let stats = daemon.stats().unwrap();
    assert_eq!(stats["steer_no_socket"], 0, "{stats}");
    assert_eq!(stats["reassembled_steered"], 2, "{stats}");
    let (device, _) = datapath::gateway::local::device_names(daemon.instance());
    let links = |ns: &Netns| String::from_utf8_lossy(&ns.ip(&["-o", "link"]).unwrap().stdout).into_owned();
    assert!(links(&topo.gateway).contains(&device), "the local steering device exists while dae runs");
    assert!(daemon.stop().unwrap().success());
    assert!(!links(&topo.gateway).contains(&device), "and is deleted at exit");
}

/// Sends an HTTP/1 request for `host` from `ns` to `to` and returns what the server says the peer is.
fn http_seen_as(ns: &Netns, to: SocketAddr, host: &str) -> std::io::Result<String> {
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dae-rs-test\r\n\r\n");
    ns.run_in(move || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.write_all(request.as_bytes())?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })?
}

#[test]
fn a_sniffed_name_reroutes_the_connection_and_is_dialed_by_name() {
    let test = "a_sniffed_name_reroutes_the_connection_and_is_dialed_by_name";
    if bench_lab::dns::skip(test, &["microsocks"]) {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let server = IpAddr::from(topo.server_v4);
    // Every address of the server namespace, loopback included (what a proxy resolving `localhost` reaches).
    who_am_i_server(&topo.server, "0.0.0.0:5541".parse().unwrap());
    let _socks = proxies::microsocks(&topo.server, server, 1080).unwrap();
    let config = format!(
        "global {{\n  lan_interface: {}\n  wan_interface: {}\n  dial_mode: domain++\n  sniffing_timeout: 200ms\n}}\n\
         node {{\n  socks: 'socks5://{server}:1080'\n}}\ngroup {{\n  proxy {{\n    policy: fixed(0)\n  }}\n}}\n\
         routing {{\n  domain(full: blocked.example) -> block\n  domain(suffix: direct.example) -> direct\n  \
         dport(5541) -> proxy\n  fallback: direct\n}}\n",
        lan.gateway_if, topo.wan_if
    );
    let daemon = Daemon::start(&dae(), &topo.gateway, &config, &[]).unwrap();
    let context = |daemon: &Daemon| format!("stats {:?}; log:\n{}", daemon.stats(), daemon.log());
    let to = SocketAddr::new(server, 5541);
    // No name in the kernel's view: proxied. The sniffed Host is dialed by name: the proxy resolves
    // `localhost` in its own namespace and reaches the server over loopback.
    let seen = http_seen_as(&lan.client, to, "localhost").unwrap_or_else(|e| panic!("{e}; {}", context(&daemon)));
    assert_eq!(seen, "127.0.0.1", "dialed by name through the proxy: {}", context(&daemon));
    // The sniffed name routes it direct: the gateway dials the original address itself.
    let seen = http_seen_as(&lan.client, to, "www.direct.example").unwrap();
    assert_eq!(seen, topo.gateway_wan_v4.to_string(), "re-routed direct by the name");
    // The sniffed name blocks it.
    let blocked = http_seen_as(&lan.client, to, "blocked.example");
    assert!(
        blocked.as_ref().is_err() || blocked.as_ref().is_ok_and(String::is_empty),
        "re-routed to block: {blocked:?}"
    );
    let stats = stats_when(&daemon, "relay_rerouted", 2);
    assert_eq!(stats["relay_sniffed"], 3, "{stats}");
    assert_eq!(stats["relay_rerouted"], 2, "{stats}");
}

/// A UDP server in `ns` on `addr` that counts the datagrams it receives (and answers none).
fn udp_counter(ns: &Netns, addr: SocketAddr) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let socket = ns.run_in(move || UdpSocket::bind(addr)).unwrap().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&count);
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while socket.recv_from(&mut buf).is_ok() {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    count
}

#[test]
fn a_sniffed_quic_name_routes_the_udp_flow() {
    let test = "a_sniffed_quic_name_routes_the_udp_flow";
    if bench_lab::dns::skip(test, &["gtlsclient"]) {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let server = IpAddr::from(topo.server_v4);
    let blocked = udp_counter(&topo.server, SocketAddr::new(server, 4433));
    let allowed = udp_counter(&topo.server, SocketAddr::new(server, 4434));
    let config = format!(
        "global {{\n  lan_interface: {}\n  wan_interface: {}\n  dial_mode: domain++\n}}\n\
         node {{\n  gw: 'direct'\n}}\ngroup {{\n  proxy {{\n    policy: fixed(0)\n  }}\n}}\n\
         routing {{\n  domain(full: localhost) && dport(4433) -> block\n  dport(4433, 4434) -> proxy\n  fallback: direct\n}}\n",
        lan.gateway_if, topo.wan_if
    );
    let daemon = Daemon::start(&dae(), &topo.gateway, &config, &[]).unwrap();
    // A real QUIC client's Initials (it never completes a handshake: nothing answers).
    let quic = |sni: &str, port: u16| {
        let out = lan
            .client
            .output(
                "timeout",
                &[
                    "3",
                    "gtlsclient",
                    "-q",
                    &format!("--sni={sni}"),
                    "--handshake-timeout=2s",
                    &server.to_string(),
                    &port.to_string(),
                ],
            )
            .unwrap();
        out.status
    };
    quic("www.blocked.example", 4433);
    quic("www.allowed.example", 4434);
    let context = |daemon: &Daemon| format!("stats {:?}; log:\n{}", daemon.stats(), daemon.log());
    let seen = |count: &std::sync::atomic::AtomicUsize| count.load(std::sync::atomic::Ordering::Relaxed);
    assert!(seen(&allowed) >= 1, "the allowed name's Initials were relayed: {}", context(&daemon));
    assert_eq!(seen(&blocked), 0, "the blocked name's Initials never left: {}", context(&daemon));
    let stats = stats_when(&daemon, "udp_quic_rerouted", 1);
    assert!(stats["udp_quic_sniffed"].as_u64().unwrap() >= 2, "{stats}");
    assert_eq!(stats["udp_quic_rerouted"], 1, "{stats}");
}

/// A UDP server in `ns` on `to` that keeps every datagram it receives, in order. Its buffer holds a whole burst
/// (the default, ~208 KB, overflows when parallel tests keep the receiving thread off the CPU).
/// What a client sends [`collecting_server`] to be answered (the datagram is not collected).
const HELLO: &[u8] = b"hello";

fn collecting_server(ns: &Netns, to: SocketAddr) -> std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>> {
    let socket = ns.run_in(move || UdpSocket::bind(to)).unwrap().unwrap();
    dns::service::sys::size_receive_buffer(std::os::fd::AsRawFd::as_raw_fd(&socket), 8 << 20);
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let sink = std::sync::Arc::clone(&received);
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            if buf[..n] == *HELLO {
                let _ = socket.send_to(b"hi", peer);
                continue;
            }
            sink.lock().unwrap().push(buf[..n].to_vec());
        }
    });
    received
}

#[test]
fn a_burst_of_udp_datagrams_leaves_in_gso_sends_intact_and_in_order() {
    let test = "a_burst_of_udp_datagrams_leaves_in_gso_sends_intact_and_in_order";
    if skip_unless_root(test) {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let to = SocketAddr::new(IpAddr::from(topo.server_v4), 5551);
    let received = collecting_server(&topo.server, to);
    let config = format!(
        "global {{\n  lan_interface: {}\n  wan_interface: {}\n}}\nnode {{\n  gw: 'direct'\n}}\n\
         group {{\n  proxy {{\n    policy: fixed(0)\n  }}\n}}\nrouting {{\n  dport(5551) -> proxy\n  fallback: direct\n}}\n",
        lan.gateway_if, topo.wan_if
    );
    let daemon = Daemon::start(&dae(), &topo.gateway, &config, &[]).unwrap();
    // 300 datagrams of 1000 bytes and a short one, sent back to back from one socket: the worker drains them in
    // batches, and each batch leaves in GSO sends.
    let datagram = |i: usize| -> Vec<u8> {
        let len = if i == 300 { 123 } else { 1000 };
        (0..len).map(|j| (i * 7 + j) as u8).collect()
    };
    lan.client
        .run_in(move || {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            for i in 0..=300 {
                socket.send_to(&datagram(i), to).unwrap();
            }
        })
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while received.lock().unwrap().len() < 301 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = received.lock().unwrap().clone();
    let stats = daemon.stats().unwrap();
    assert_eq!(got.len(), 301, "every datagram arrived once: {stats}");
    for (i, payload) in got.iter().enumerate() {
        assert_eq!(payload, &datagram(i), "datagram {i} intact and in order");
    }
    let stats = stats_when(&daemon, "udp_forwarded", 301);
    assert_eq!(stats["udp_forwarded"], 301, "{stats}");
    assert!(stats["udp_gso_sends"].as_u64().unwrap() >= 1, "runs left in GSO sends: {stats}");
}

/// How the client sends the burst in [`client_burst_through_gateway`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum ClientSends {
    /// GSO sends of [`REPLY_RUN`] datagrams, as QUIC stacks send.
    Gso,
    /// One datagram per `send`, runs of [`REPLY_RUN`] back to back.
    OnePerSend,
}

/// What [`client_burst_through_gateway`] saw.
struct Burst {
    /// `dae stats` once every datagram was forwarded.
    stats: serde_json::Value,
    /// The gateway LAN veth's [`gro_features`] before `dae run`, while it ran, and after it exited.
    lan_gro: [(bool, bool); 3],
}

/// A client sends [`REPLY_BURST`] datagrams (the reply burst's) through the gateway in runs of [`REPLY_RUN`]
/// (`dae run` with `args`), each run in one GSO send or one datagram per send. The client's veth segments a GSO
/// run (its peer runs XDP, so it offers no GSO); the gateway's LAN veth merges the train again (GRO with
/// `rx-udp-gro-forwarding`, which `dae run` turns on for its LAN links: forwarded UDP is merged only then)
/// before tc steers it to a worker's socket. For single sends the client's link into the LAN veth delivers as
/// a NIC under load does ([`coalesce_like_a_nic`], 20 us). With `answered`, the client first gets an answer from
/// the server, so the gateway holds a reply socket for the flow, as for most flows (QUIC); without, the flow is
/// one-way. Asserts the server got every datagram intact and in order.
fn client_burst_through_gateway(sends: ClientSends, answered: bool, args: &[&str], port: u16) -> Burst {
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let to = SocketAddr::new(IpAddr::from(topo.server_v4), port);
    let received = collecting_server(&topo.server, to);
    let config = format!(
        "global {{\n  lan_interface: {}\n  wan_interface: {}\n}}\nnode {{\n  gw: 'direct'\n}}\n\
         group {{\n  proxy {{\n    policy: fixed(0)\n  }}\n}}\nrouting {{\n  dport({port}) -> proxy\n  fallback: direct\n}}\n",
        lan.gateway_if, topo.wan_if
    );
    if sends == ClientSends::OnePerSend {
        coalesce_like_a_nic(&lan.client, &lan.client_if, &topo.gateway, &lan.gateway_if, 20_000).unwrap();
    }
    let before = gro_features(&topo.gateway, &lan.gateway_if).unwrap();
    let mut daemon = Daemon::start(&dae(), &topo.gateway, &config, args).unwrap();
    let during = gro_features(&topo.gateway, &lan.gateway_if).unwrap();
    lan.client
        .run_in(move || {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
            // A flow with an answer, as most are (QUIC): the gateway now holds a reply socket for it, which the
            // LAN device's GRO finds when it looks the client's datagrams up.
            if answered {
                socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                socket.send_to(HELLO, to).unwrap();
                let mut answer = [0u8; 16];
                assert_eq!(socket.recv_from(&mut answer).unwrap().0, 2, "the server's answer came back");
            }
            let all: Vec<Vec<u8>> = (0..REPLY_BURST).map(reply_datagram).collect();
            for run in all.chunks(REPLY_RUN) {
                match sends {
                    ClientSends::Gso => datapath::gateway::gso::send_gso(fd, to, 1000, &run.concat()).unwrap(),
                    ClientSends::OnePerSend => {
                        for datagram in run {
                            socket.send_to(datagram, to).unwrap();
                        }
                    }
                }
                // One run at a time: the steering socket's buffer is not what this test is about.
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while received.lock().unwrap().len() < REPLY_BURST && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = received.lock().unwrap().clone();
    let forwarded = (REPLY_BURST + usize::from(answered)) as u64;
    let stats = stats_when(&daemon, "udp_forwarded", forwarded);
    assert_eq!(got.len(), REPLY_BURST, "every datagram arrived once: {stats}");
    for (i, payload) in got.iter().enumerate() {
        assert_eq!(payload, &reply_datagram(i), "datagram {i} intact and in order");
    }
    assert_eq!(stats["udp_forwarded"], forwarded, "{stats}");
    // Runs queued whole (GSO runs split on arrival, or merged receives) leave in GSO sends.
    if sends == ClientSends::Gso || stats["udp_steer_gro_receives"].as_u64().unwrap() > 0 {
        assert!(stats["udp_gso_sends"].as_u64().unwrap() >= 1, "runs left in GSO sends: {stats}");
    }
    assert!(daemon.stop().unwrap().success(), "{}", daemon.log());
    let after = gro_features(&topo.gateway, &lan.gateway_if).unwrap();
    Burst { stats, lan_gro: [before, during, after] }
}

#[test]
fn a_clients_gso_runs_are_read_merged_and_reach_the_server_intact_and_in_order() {
    if skip_unless_root("a_clients_gso_runs_are_read_merged_and_reach_the_server_intact_and_in_order") {
        return;
    }
    let burst = client_burst_through_gateway(ClientSends::Gso, true, &[], 5563);
    // 301 datagrams in 7 GSO sends: each of the six runs of 50 is one merged receive (or a few, if a train was
    // taken by more than one NAPI poll); the last send is a single datagram.
    let merged = burst.stats["udp_steer_gro_receives"].as_u64().unwrap();
    assert!(merged >= 1, "the client's runs came merged: {}", burst.stats);
    // A veth starts with GRO off: `dae run` turned both on while it ran and put both back on exit.
    assert_eq!(burst.lan_gro, [(false, false), (true, true), (false, false)]);
}

#[test]
fn with_udp_gro_off_a_clients_gso_runs_are_read_as_single_datagrams_intact_and_in_order() {
    if skip_unless_root("with_udp_gro_off_a_clients_gso_runs_are_read_as_single_datagrams_intact_and_in_order") {
        return;
    }
    let burst = client_burst_through_gateway(ClientSends::Gso, true, &["--udp-gro", "off"], 5564);
    assert_eq!(burst.stats["udp_steer_gro_receives"], 0, "{}", burst.stats);
    // Without merged receives the devices are left alone.
    assert_eq!(burst.lan_gro, [(false, false); 3]);
}

#[test]
fn a_clients_single_sends_merged_by_a_coalescing_lan_are_read_merged_and_reach_the_server_intact_and_in_order() {
    if skip_unless_root(
        "a_clients_single_sends_merged_by_a_coalescing_lan_are_read_merged_and_reach_the_server_intact_and_in_order",
    ) {
        return;
    }
    let burst = client_burst_through_gateway(ClientSends::OnePerSend, true, &[], 5565);
    // Six runs of 50 sent back to back, then one short datagram: each run reaches the LAN veth within a few of
    // its coalescing periods, so at least one NAPI poll merges part of a run.
    let merged = burst.stats["udp_steer_gro_receives"].as_u64().unwrap();
    assert!(merged >= 1, "the client's single sends came merged: {}", burst.stats);
    // GRO was on already (the coalescing link): only rx-udp-gro-forwarding was turned on, and only it goes off.
    assert_eq!(burst.lan_gro, [(true, false), (true, true), (true, false)]);
}

#[test]
fn with_udp_gro_off_a_clients_single_sends_are_read_as_single_datagrams_intact_and_in_order() {
    if skip_unless_root("with_udp_gro_off_a_clients_single_sends_are_read_as_single_datagrams_intact_and_in_order") {
        return;
    }
    let burst = client_burst_through_gateway(ClientSends::OnePerSend, true, &["--udp-gro", "off"], 5566);
    assert_eq!(burst.stats["udp_steer_gro_receives"], 0, "{}", burst.stats);
}

#[test]
fn a_one_way_flows_single_sends_are_merged_by_the_gro_forwarding_dae_turns_on() {
    if skip_unless_root("a_one_way_flows_single_sends_are_merged_by_the_gro_forwarding_dae_turns_on") {
        return;
    }
    // No answer, so no reply socket: forwarded UDP with no local socket is merged only with the feature.
    let burst = client_burst_through_gateway(ClientSends::OnePerSend, false, &[], 5567);
    let merged = burst.stats["udp_steer_gro_receives"].as_u64().unwrap();
    assert!(merged >= 1, "the client's single sends came merged: {}", burst.stats);
}

#[test]
fn with_lan_gro_forwarding_off_a_one_way_flow_is_not_merged_and_every_datagram_still_arrives() {
    if skip_unless_root("with_lan_gro_forwarding_off_a_one_way_flow_is_not_merged_and_every_datagram_still_arrives") {
        return;
    }
    let burst = client_burst_through_gateway(ClientSends::OnePerSend, false, &["--lan-gro-forwarding", "off"], 5568);
    assert_eq!(burst.stats["udp_steer_gro_receives"], 0, "{}", burst.stats);
    assert_eq!(burst.lan_gro, [(true, false); 3]);
}

#[test]
fn with_lan_gro_forwarding_off_an_answered_flow_is_still_merged_as_its_reply_socket_asks() {
    if skip_unless_root("with_lan_gro_forwarding_off_an_answered_flow_is_still_merged_as_its_reply_socket_asks") {
        return;
    }
    // GRO finds the flow's reply socket (bound to the server, connected to the client); it asks for merged
    // receives, so GRO merges the train though the device does not merge forwarded UDP.
    let burst = client_burst_through_gateway(ClientSends::OnePerSend, true, &["--lan-gro-forwarding", "off"], 5569);
    let merged = burst.stats["udp_steer_gro_receives"].as_u64().unwrap();
    assert!(merged >= 1, "the client's single sends came merged: {}", burst.stats);
    assert_eq!(burst.lan_gro, [(true, false); 3]);
}

/// Datagrams of the reply burst: runs of [`REPLY_RUN`] same-size datagrams and a short last one.
const REPLY_BURST: usize = 301;
/// Datagrams the server sends in one GSO send (the kernel's limit is 64).
const REPLY_RUN: usize = 50;

/// Datagram `i` of the reply burst: 1000 bytes numbered by `i`, the last 123 bytes.
fn reply_datagram(i: usize) -> Vec<u8> {
    let len = if i == REPLY_BURST - 1 { 123 } else { 1000 };
    (0..len).map(|j| (i * 13 + j) as u8).collect()
}

/// A client asks through a relayed session (`dae run --udp-gro gro`); the server answers with
/// [`REPLY_BURST`] datagrams in GSO sends of [`REPLY_RUN`]: each run reaches the gateway's WAN veth as a train of
/// datagrams in one NAPI poll, which the veth's GRO (turned on here: a veth has it off by default) merges for a
/// socket that asked. Asserts the client got every datagram intact and in order; returns the daemon's stats.
fn reply_burst_through_session(gro: &str, port: u16) -> serde_json::Value {
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let to = SocketAddr::new(IpAddr::from(topo.server_v4), port);
    let server = topo.server.run_in(move || UdpSocket::bind(to)).unwrap().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let Ok((_, peer)) = server.recv_from(&mut buf) else { return };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&server);
        let all: Vec<Vec<u8>> = (0..REPLY_BURST).map(reply_datagram).collect();
        for run in all.chunks(REPLY_RUN) {
            datapath::gateway::gso::send_gso(fd, peer, 1000, &run.concat()).unwrap();
            // One run at a time: the session socket's default buffer (~208 KB) holds one, not the burst.
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let config = format!(
        "global {{\n  lan_interface: {}\n  wan_interface: {}\n}}\nnode {{\n  gw: 'direct'\n}}\n\
         group {{\n  proxy {{\n    policy: fixed(0)\n  }}\n}}\nrouting {{\n  dport({port}) -> proxy\n  fallback: direct\n}}\n",
        lan.gateway_if, topo.wan_if
    );
    let gro_on = topo.gateway.output("ethtool", &["-K", &topo.wan_if, "gro", "on"]).unwrap();
    assert!(gro_on.status.success(), "ethtool -K {} gro on: {gro_on:?}", topo.wan_if);
    let daemon = Daemon::start(&dae(), &topo.gateway, &config, &["--udp-gro", gro]).unwrap();
    let got = lan
        .client
        .run_in(move || {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            dns::service::sys::size_receive_buffer(std::os::fd::AsRawFd::as_raw_fd(&socket), 8 << 20);
            socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            socket.send_to(b"go", to).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while got.len() < REPLY_BURST {
                match socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        assert_eq!(from, to, "replies come from the server's address");
                        got.push(buf[..n].to_vec());
                    }
                    Err(_) => break,
                }
            }
            got
        })
        .unwrap();
    let stats = stats_when(&daemon, "udp_replied", REPLY_BURST as u64);
    assert_eq!(got.len(), REPLY_BURST, "every datagram arrived once: {stats}");
    for (i, payload) in got.iter().enumerate() {
        assert_eq!(payload, &reply_datagram(i), "datagram {i} intact and in order");
    }
    assert_eq!(stats["udp_replied"], REPLY_BURST as u64, "{stats}");
    stats
}

#[test]
fn a_merged_burst_of_replies_reaches_the_client_intact_and_in_order_in_gso_sends() {
    if skip_unless_root("a_merged_burst_of_replies_reaches_the_client_intact_and_in_order_in_gso_sends") {
        return;
    }
    let stats = reply_burst_through_session("on", 5561);
    assert!(stats["udp_gro_receives"].as_u64().unwrap() >= 1, "replies came merged: {stats}");
    assert!(stats["udp_gso_sends"].as_u64().unwrap() >= 1, "merged replies left in GSO sends: {stats}");
}

#[test]
fn with_udp_gro_off_a_burst_of_replies_is_read_in_batches_of_single_datagrams_intact_and_in_order() {
    if skip_unless_root(
        "with_udp_gro_off_a_burst_of_replies_is_read_in_batches_of_single_datagrams_intact_and_in_order",
    ) {
        return;
    }
    let stats = reply_burst_through_session("off", 5562);
    assert_eq!(stats["udp_gro_receives"], 0, "{stats}");
    // Each run of 50 lands in the session socket within one NAPI poll: a read takes what has arrived, up to 16.
    let reads = stats["udp_reply_reads"].as_u64().unwrap();
    assert!(reads > 0 && reads * 2 <= REPLY_BURST as u64, "replies read in batches: {stats}");
}

/// The `Threads:` line of `/proc/PID/status`.
/// `count` TCP connections from `ns` to `to`, all open at once.
fn connect_many(ns: &Netns, to: SocketAddr, count: usize) -> Vec<TcpStream> {
    ns.run_in(move || (0..count).map(|_| TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap()).collect())
        .unwrap()
}

fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap()
}

#[test]
fn relayed_connections_and_udp_sessions_cost_no_thread_and_half_close_carries_through() {
    if skip_unless_root("relayed_connections_and_udp_sessions_cost_no_thread_and_half_close_carries_through") {
        return;
    }
    const CONNECTIONS: usize = 40;
    const BYTES: usize = 100_000;
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let server = IpAddr::from(topo.server_v4);
    // Answers how many bytes came, once each connection's half-close arrived.
    answers_after_eof(&topo.server, SocketAddr::new(server, 5531), |all| all.len().to_string().into_bytes());
    let config = format!(
        "global {{\n  lan_interface: {}\n  wan_interface: {}\n}}\nnode {{\n  gw: 'direct'\n}}\n\
         group {{\n  from_gateway {{\n    policy: fixed(0)\n  }}\n}}\nrouting {{\n  dport(5531, 5532, 5533) -> from_gateway\n  fallback: direct\n}}\n",
        lan.gateway_if, topo.wan_if
    );
    // Started as a service manager would with its soft default: a low limit on open files under a higher hard one.
    let wrapper = std::env::temp_dir().join(format!("daers-nofile-{}.sh", std::process::id()));
    std::fs::write(&wrapper, format!("#!/bin/sh\nulimit -Sn 256\nexec {} \"$@\"\n", dae().display())).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    struct Removed(PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let wrapper = Removed(wrapper);
    let mut daemon = Daemon::start(&wrapper.0, &topo.gateway, &config, &[]).unwrap();
    let pid = daemon.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files: Vec<&str> =
        limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().skip(3).take(2).collect();
    assert_eq!(open_files[0], open_files[1], "the daemon raised its soft open files limit to the hard one: {limits}");
    assert!(daemon.log().contains("open files limit raised"), "{}", daemon.log());
    let idle_threads = threads_of(pid);
    let to = SocketAddr::new(server, 5531);
    let streams = connect_many(&lan.client, to, CONNECTIONS);
    let stats = stats_when(&daemon, "relay_tcp_active", CONNECTIONS as u64);
    assert_eq!(stats["relay_tcp_active"], CONNECTIONS as u64, "{stats}");
    // Dialling threads end once a connection is handed to its loop: open connections cost no thread.
    let open_threads = threads_of(pid);
    assert!(
        open_threads <= idle_threads + 2,
        "{CONNECTIONS} open connections: {idle_threads} -> {open_threads} threads"
    );
    let answers = lan
        .client
        .run_in(move || {
            let payload = vec![7u8; BYTES];
            streams
                .into_iter()
                .map(|mut stream| {
                    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    stream.write_all(&payload).unwrap();
                    stream.shutdown(std::net::Shutdown::Write).unwrap();
                    let mut answer = String::new();
                    stream.read_to_string(&mut answer).map(|_| answer)
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
    for answer in answers {
        assert_eq!(answer.unwrap(), BYTES.to_string(), "every byte arrived and the answer came back after EOF");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let stats = loop {
        let stats = daemon.stats().unwrap();
        if stats["relay_tcp_active"] == 0 || std::time::Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(stats["relay_tcp_active"], 0, "both ends closed: the loops let go: {stats}");
    assert!(stats["relay_tcp_bytes"].as_u64().unwrap() >= (CONNECTIONS * BYTES) as u64, "{stats}");
    assert_eq!(stats["relay_tcp_errors"], 0, "{stats}");

    // A server that answers and then resets: the client gets the answer and an orderly end, as from dae.
    let resetter = topo.server.run_in(move || TcpListener::bind(SocketAddr::new(server, 5533))).unwrap().unwrap();
    std::thread::spawn(move || {
        for stream in resetter.incoming().flatten() {
            let _ = (&stream).write_all(b"last words");
            std::thread::sleep(Duration::from_millis(100));
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
    });
    let to_resetter = SocketAddr::new(server, 5533);
    let heard = lan
        .client
        .run_in(move || -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&to_resetter, Duration::from_secs(3))?;
            stream.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })
        .unwrap();
    assert_eq!(heard.unwrap(), "last words", "the bytes before the reset arrive, then EOF");
    let stats = stats_when(&daemon, "relay_tcp_errors", 1);
    assert_eq!(stats["relay_tcp_errors"], 1, "the reset is counted: {stats}");

    // UDP sessions are read on their worker's thread too: many open sessions, no new thread.
    udp_who_am_i_server(&topo.server, SocketAddr::new(server, 5531));
    let to = SocketAddr::new(server, 5531);
    let (sockets, answered) = lan
        .client
        .run_in(move || {
            let sockets: Vec<UdpSocket> = (0..CONNECTIONS).map(|_| UdpSocket::bind("0.0.0.0:0").unwrap()).collect();
            let mut answered = 0;
            for socket in &sockets {
                socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                socket.send_to(b"who am i", to).unwrap();
                let mut buf = [0u8; 64];
                answered += usize::from(socket.recv_from(&mut buf).is_ok());
            }
            (sockets, answered)
        })
        .unwrap();
    assert_eq!(answered, CONNECTIONS, "every session's reply came back");
    let stats = stats_when(&daemon, "udp_sessions_active", CONNECTIONS as u64);
    assert_eq!(stats["udp_sessions_active"], CONNECTIONS as u64, "{stats}");
    let udp_threads = threads_of(pid);
    assert!(udp_threads <= idle_threads + 2, "{CONNECTIONS} UDP sessions: {idle_threads} -> {udp_threads} threads");
    drop(sockets);

    // A datagram larger than a page (a jumbo-frame LAN: unfragmented) is relayed whole.
    lan.client.ip(&["link", "set", "dev", &lan.client_if, "mtu", "9000"]).unwrap();
    topo.gateway.ip(&["link", "set", "dev", &lan.gateway_if, "mtu", "9000"]).unwrap();
    let echo = topo.server.run_in(move || UdpSocket::bind(SocketAddr::new(server, 5532))).unwrap().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_535];
        while let Ok((len, peer)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(len.to_string().as_bytes(), peer);
        }
    });
    let to = SocketAddr::new(server, 5532);
    let heard = lan
        .client
        .run_in(move || -> std::io::Result<String> {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(Duration::from_secs(3)))?;
            socket.send_to(&[9u8; 8000], to)?;
            let mut buf = [0u8; 64];
            let (n, _) = socket.recv_from(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .unwrap();
    assert_eq!(heard.unwrap(), "8000", "the server got the whole 8000-byte datagram through the relay");
    let stats = stats_when(&daemon, "udp_forwarded", CONNECTIONS as u64 + 1);
    assert_eq!(stats["udp_forwarded"], CONNECTIONS as u64 + 1, "the large datagram went through the relay: {stats}");
    assert_eq!(stats["udp_dropped"], 0, "{stats}");

    // All of it ran on one thread per core, each pinned to its core: no accept, UDP or relay thread besides.
    let cores = std::thread::available_parallelism().unwrap().get().min(datapath_abi::steer::MAX_WORKERS as usize);
    let mut core_threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap().trim().to_owned();
        assert!(
            !["dae-worker", "dae-udp", "dae-relay"].iter().any(|old| name.starts_with(old)),
            "a per-family or per-role thread: {name}"
        );
        if let Some(core) = name.strip_prefix("dae-core-") {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap();
            let allowed = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_owned();
            core_threads.push((core.to_owned(), allowed));
        }
    }
    core_threads.sort();
    let want: Vec<(String, String)> = (0..cores).map(|c| (c.to_string(), c.to_string())).collect();
    assert_eq!(core_threads, want, "one thread per core, pinned (name suffix, allowed CPUs)");
}

/// Connections whose dial waits on a slow proxy are entries in their loop's table, not threads: 30 connections
/// held in the SOCKS5 greeting by a proxy that never answers leave the thread count alone; when the proxy hangs
/// up, every client is reset and every failure counted. A client that sends nothing while it is sniffed is
/// dialled once `sniffing_timeout` passes.
#[test]
fn connections_waiting_on_a_slow_proxy_cost_no_thread() {
    if skip_unless_root("connections_waiting_on_a_slow_proxy_cost_no_thread") {
        return;
    }
    const CONNECTIONS: usize = 30;
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let server = IpAddr::from(topo.server_v4);
    // The proxy reads each greeting and never answers; dropping the held sockets hangs up on every dial.
    let held = silent_socks5(&topo.server, SocketAddr::new(server, 1099));
    let config = format!(
        "global {{\n  lan_interface: {}\n  wan_interface: {}\n}}\nnode {{\n  slow: 'socks5://{server}:1099'\n}}\n\
         group {{\n  via_slow {{\n    policy: fixed(0)\n  }}\n}}\nrouting {{\n  dport(5541) -> via_slow\n  fallback: direct\n}}\n",
        lan.gateway_if, topo.wan_if
    );
    let mut daemon = Daemon::start(&dae(), &topo.gateway, &config, &[]).unwrap();
    let pid = daemon.pid();
    let idle_threads = threads_of(pid);
    let to = SocketAddr::new(server, 5541);
    // Port 5541 is not a TLS or HTTP port dae waits on: each connection is sniffed for `sniffing_timeout` (the
    // client sends nothing), then dialled.
    let clients = connect_many(&lan.client, to, CONNECTIONS);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    // The health checker's own handshake may be held too.
    while held.lock().unwrap().len() < CONNECTIONS && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(held.lock().unwrap().len() >= CONNECTIONS, "every connection was dialled to the proxy");
    let waiting_threads = threads_of(pid);
    assert!(
        waiting_threads <= idle_threads + 1,
        "{CONNECTIONS} dials waiting on a proxy: {idle_threads} -> {waiting_threads} threads"
    );
    // The userspace counters are published every second.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let stats = loop {
        let stats = daemon.stats().unwrap();
        if stats.get("relay_dial_failed").is_some() || std::time::Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stats["relay_dial_failed"], 0, "{stats}");
    assert_eq!(stats["relay_tcp_active"], 0, "nothing is relayed before the proxy answers: {stats}");
    held.lock().unwrap().clear();
    let stats = stats_when(&daemon, "relay_dial_failed", CONNECTIONS as u64);
    assert!(stats["relay_dial_failed"].as_u64().unwrap() >= CONNECTIONS as u64, "{stats}");
    let ends = lan
        .client
        .run_in(move || {
            clients
                .into_iter()
                .map(|mut stream| {
                    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    let mut buf = [0u8; 16];
                    stream.read(&mut buf).map_err(|e| e.kind())
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
    for end in ends {
        assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset), "a failed dial resets its client");
    }
}

/// A gateway-originated flow that leaves by an L3 WAN (a tun device: no Ethernet header, like PPPoE or
/// WireGuard) is steered too: WAN egress pushes an Ethernet header for the local steering device. The target
/// is routed into a tun nobody reads, so the connection succeeds only if the gateway relays it through the
/// proxy (reached over the Ethernet WAN), which reaches the target inside the server namespace.
#[test]
fn gateway_originated_flows_leaving_by_an_l3_wan_are_proxied() {
    let test = "gateway_originated_flows_leaving_by_an_l3_wan_are_proxied";
    if bench_lab::dns::skip(test, &["microsocks", "danted"]) {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let server_v4 = IpAddr::from(topo.server_v4);
    let target = IpAddr::from([10, 77, 61, 2]);
    topo.server.ip(&["addr", "add", "10.77.61.2/32", "dev", "lo"]).unwrap();
    who_am_i_server(&topo.server, SocketAddr::new(target, 5551));
    udp_who_and_echo_server(&topo.server, SocketAddr::new(target, 5552));
    let _socks = proxies::microsocks(&topo.server, server_v4, 1080).unwrap();
    let _dante = proxies::danted(&topo.server, server_v4, 1081, &[server_v4]).unwrap();
    let tun_name = format!("daers{}t", topo.id);
    let _tun = bench_lab::tun::Tun::create(&topo.gateway, &tun_name).unwrap();
    topo.gateway.ip(&["addr", "add", "10.77.61.1/24", "dev", &tun_name]).unwrap();
    topo.gateway.ip(&["link", "set", &tun_name, "up"]).unwrap();
    let config = format!(
        "global {{\n  lan_interface: {lan_if}\n  wan_interface: {wan_if}, {tun_name}\n}}\n\
         node {{\n  socks: 'socks5://{server_v4}:1080'\n  dante: 'socks5://{server_v4}:1081'\n}}\n\
         group {{\n  proxy {{\n    filter: name(socks)\n    policy: fixed(0)\n  }}\n  \
         udp_proxy {{\n    filter: name(dante)\n    policy: fixed(0)\n  }}\n}}\n\
         routing {{\n  interface(wan: {tun_name}) && dport(5551) -> proxy\n  \
         interface(wan: {tun_name}) && dport(5552) -> udp_proxy\n  fallback: direct\n}}\n",
        lan_if = topo.lan().gateway_if,
        wan_if = topo.wan_if,
    );
    let daemon = Daemon::start(&dae(), &topo.gateway, &config, &[]).unwrap();
    let seen = seen_as(&topo.gateway, SocketAddr::new(target, 5551))
        .unwrap_or_else(|e| panic!("{e}: stats {:?}; log:\n{}", daemon.stats(), daemon.log()));
    assert_eq!(seen, target.to_string(), "the proxy reached the target for the gateway");
    // A UDP datagram larger than the tun's MTU leaves in fragments: each gets an Ethernet header and follows
    // its first fragment to the worker, which relays the reassembled datagram through danted.
    let to = SocketAddr::new(target, 5552);
    let payload: Vec<u8> = (0..5_000).map(|i| (i % 253) as u8).collect();
    let (seen, echo) = udp_big_exchange(&topo.gateway, to, payload.clone())
        .unwrap_or_else(|e| panic!("{to}: {e}: stats {:?}; log:\n{}", daemon.stats(), daemon.log()));
    assert_eq!(seen, server_v4.to_string(), "relayed by danted");
    assert!(echo == payload, "{to}: it came back whole ({} bytes)", echo.len());
    let stats = daemon.stats().unwrap();
    assert!(stats["steered"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["steer_no_socket"], 0, "{stats}");
    assert_eq!(stats["reassembled_steered"], 1, "{stats}");
    assert!(stats["fragment_followed"].as_u64().unwrap() >= 3, "{stats}");
}
