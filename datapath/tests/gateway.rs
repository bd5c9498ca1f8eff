//! Steering and outbounds: a proxied LAN flow is handed by tc to a worker's transparent socket and relayed
//! through the node its group picks (real microsocks and tinyproxy), a direct flow is forwarded untouched, and
//! a group whose only node is dead refuses. Observed from the server: the peer address it sees. Needs root.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    time::Duration,
};

use bench_lab::{daemon::Daemon, netns::Netns, proxies, skip_unless_root, topology::Topology};

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
    if skip_unless_root(test) {
        return;
    }
    for tool in ["microsocks", "tinyproxy"] {
        if !bench_lab::dns::have(tool) {
            eprintln!("SKIP {test}: `{tool}` is not installed (scripts/setup.sh installs it)");
            return;
        }
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
    let stats = daemon.stats().unwrap();
    assert!(stats["steered"].as_u64().unwrap() >= 4, "{stats}");
    assert_eq!(stats["steer_no_socket"], 0, "{stats}");
    let rules = String::from_utf8_lossy(&topo.gateway.ip(&["rule", "show"]).unwrap().stdout).into_owned();
    assert!(rules.contains("lookup 2023"), "{rules}");
    assert!(daemon.stop().unwrap().success());
    let rules = String::from_utf8_lossy(&topo.gateway.ip(&["rule", "show"]).unwrap().stdout).into_owned();
    assert!(!rules.contains("2023"), "policy routing removed at exit: {rules}");
}
