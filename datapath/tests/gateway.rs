//! Steering: a proxied LAN flow is handed by tc to a worker's transparent socket and relayed from the gateway,
//! while a direct flow is forwarded untouched. Observed from the server: the peer address it sees. Needs root.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    time::Duration,
};

use bench_lab::{daemon::Daemon, netns::Netns, skip_unless_root, topology::Topology};

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
fn proxied_lan_flows_are_relayed_by_a_worker_and_direct_ones_are_not() {
    if skip_unless_root("proxied_lan_flows_are_relayed_by_a_worker_and_direct_ones_are_not") {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    for ip in [IpAddr::from(topo.server_v4), IpAddr::from(topo.server_v6)] {
        who_am_i_server(&topo.server, SocketAddr::new(ip, 5501));
        who_am_i_server(&topo.server, SocketAddr::new(ip, 5502));
    }
    let config = format!(
        "global {{\n  lan_interface: {}\n  wan_interface: {}\n}}\ngroup {{\n  proxy {{\n    policy: fixed(0)\n  }}\n}}\nrouting {{\n  dport(5501) -> proxy\n  fallback: direct\n}}\n",
        lan.gateway_if, topo.wan_if
    );
    let mut daemon = Daemon::start(&dae(), &topo.gateway, &config, &[]).unwrap();
    for (server, gateway, client) in [
        (IpAddr::from(topo.server_v4), IpAddr::from(topo.gateway_wan_v4), IpAddr::from(lan.client_v4)),
        (IpAddr::from(topo.server_v6), IpAddr::from(topo.gateway_wan_v6), IpAddr::from(lan.client_v6)),
    ] {
        let proxied = seen_as(&lan.client, SocketAddr::new(server, 5501))
            .unwrap_or_else(|e| panic!("{e}; stats {:?}; log:\n{}", daemon.stats(), daemon.log()));
        assert_eq!(proxied, gateway.to_string(), "a worker relayed it: the server sees the gateway");
        let direct = seen_as(&lan.client, SocketAddr::new(server, 5502)).unwrap();
        assert_eq!(direct, client.to_string(), "forwarded untouched: the server sees the client");
    }
    let stats = daemon.stats().unwrap();
    assert!(stats["steered"].as_u64().unwrap() >= 2, "{stats}");
    assert_eq!(stats["steer_no_socket"], 0, "{stats}");
    let rules = String::from_utf8_lossy(&topo.gateway.ip(&["rule", "show"]).unwrap().stdout).into_owned();
    assert!(rules.contains("lookup 2023"), "{rules}");
    assert!(daemon.stop().unwrap().success());
    let rules = String::from_utf8_lossy(&topo.gateway.ip(&["rule", "show"]).unwrap().stdout).into_owned();
    assert!(!rules.contains("2023"), "policy routing removed at exit: {rules}");
}
