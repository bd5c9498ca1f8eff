//! The routing engine on real traffic: `block`, marks, `interface(...)` by zone and direction following links,
//! and reloads that keep flows in flight on their decision. Real kernel programs on veth pairs in namespaces the
//! test creates, the real `dae` binary. Needs root.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use bench_lab::{
    daemon::Daemon,
    skip_unless_root,
    topology::Topology,
    traffic::{udp_echo, udp_roundtrip_within},
};

/// Long enough for an echo through the gateway, short enough that a dropped packet does not stall the test.
const DROP_WAIT: Duration = Duration::from_millis(600);

fn dae() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dae"))
}

fn sock(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn config(topo: &Topology, routing: &str) -> String {
    format!(
        "global {{\n  lan_interface: {}\n  wan_interface: {}\n}}\nnode {{\n  gw: 'direct'\n}}\n\
         group {{\n  proxy {{\n    policy: fixed(0)\n  }}\n}}\nrouting {{\n{routing}\n}}\n",
        topo.lan().gateway_if,
        topo.wan_if
    )
}

fn passes(ns: &bench_lab::netns::Netns, from: SocketAddr, to: SocketAddr) -> bool {
    udp_roundtrip_within(ns, from, to, b"x", DROP_WAIT).is_ok()
}

#[test]
fn block_mark_and_interface_rules_act_on_real_traffic() {
    if skip_unless_root("block_mark_and_interface_rules_act_on_real_traffic") {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    for port in [5401, 5402, 5403] {
        std::mem::forget(udp_echo(&topo.server, sock(topo.server_v4, port)).unwrap());
    }
    // Marked packets are routed into a blackhole, so a mark shows as a drop.
    topo.gateway.ip(&["rule", "add", "fwmark", "0x10", "lookup", "100"]).unwrap();
    topo.gateway.ip(&["route", "add", "blackhole", "default", "table", "100"]).unwrap();
    let rules = format!(
        "  interface(lan: {lan}) && dport(5401) -> block\n  dport(5402) -> direct(mark: 0x10)\n  interface(wan: {wan}) && dport(5403) -> block\n  fallback: direct",
        lan = lan.gateway_if,
        wan = topo.wan_if
    );
    let cfg = config(&topo, &rules);
    let daemon = Daemon::start(&dae(), &topo.gateway, &cfg, &[]).unwrap();
    let out = std::process::Command::new(dae()).args(["validate", "-c"]).arg(daemon.config_path()).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("OK"), "{out:?}");

    let client = |port: u16| sock(lan.client_v4, port);
    let gw = |port: u16| sock(topo.gateway_wan_v4, port);
    assert!(!passes(&lan.client, client(47001), sock(topo.server_v4, 5401)), "lan-in on the LAN interface: blocked");
    assert!(passes(&topo.gateway, gw(47002), sock(topo.server_v4, 5401)), "interface(lan:...) never matches wan-out");
    assert!(passes(&lan.client, client(47003), sock(topo.server_v4, 5403)), "interface(wan:...) never matches lan-in");
    assert!(!passes(&topo.gateway, gw(47004), sock(topo.server_v4, 5403)), "wan-out on the WAN interface: blocked");
    assert!(!passes(&lan.client, client(47005), sock(topo.server_v4, 5402)), "the mark sends it to the blackhole");
    let stats = daemon.stats().unwrap();
    assert!(stats["blocked"].as_u64().unwrap() >= 2, "{stats}");
    let flows = daemon.flows().unwrap();
    let blocked = flows.iter().find(|f| f["src"] == client(47001).to_string().as_str()).expect("blocked flow tagged");
    assert_eq!(blocked["direction"], "lan-in");
}

#[test]
fn interface_rules_follow_a_recreated_link_without_reload() {
    if skip_unless_root("interface_rules_follow_a_recreated_link_without_reload") {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    for port in [5421, 5422] {
        std::mem::forget(udp_echo(&topo.server, sock(topo.server_v4, port)).unwrap());
    }
    let rules = format!("  interface(lan: {}) && dport(5421) -> block\n  fallback: direct", lan.gateway_if);
    let daemon = Daemon::start(&dae(), &topo.gateway, &config(&topo, &rules), &[]).unwrap();
    let (blocked, open) = (sock(topo.server_v4, 5421), sock(topo.server_v4, 5422));
    assert!(!passes(&lan.client, sock(lan.client_v4, 47101), blocked));

    topo.delete_lan_link(0).unwrap();
    topo.recreate_lan_link(0).unwrap();
    let index = topo.gateway_ifindex(&lan.gateway_if).unwrap();
    assert!(daemon.wait_for_log(&format!("attached iface={} ifindex={index}", lan.gateway_if), Duration::from_secs(1)));
    // The re-created link forwards (first packets may wait for neighbour discovery)...
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut port = 47110;
    while !passes(&lan.client, sock(lan.client_v4, port), open) {
        assert!(Instant::now() < deadline, "the re-created link never forwarded");
        port += 1;
    }
    // ...and the rule, which names the link rather than its old index, holds on it with no reload.
    assert!(!passes(&lan.client, sock(lan.client_v4, 47102), blocked), "blocked on the re-created link");
}

#[test]
fn reload_flips_generations_keeps_flows_in_flight_and_survives_a_bad_config() {
    if skip_unless_root("reload_flips_generations_keeps_flows_in_flight_and_survives_a_bad_config") {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    std::mem::forget(udp_echo(&topo.server, sock(topo.server_v4, 5411)).unwrap());
    let daemon = Daemon::start(&dae(), &topo.gateway, &config(&topo, "  fallback: direct"), &[]).unwrap();
    let to = sock(topo.server_v4, 5411);
    let early = sock(lan.client_v4, 47201);
    assert!(passes(&lan.client, early, to));

    daemon.rewrite_config(&config(&topo, "  dport(5411) -> block\n  fallback: direct")).unwrap();
    let out = daemon.cli_output(&["reload"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("generation 2"), "{out:?}");
    assert!(passes(&lan.client, early, to), "a flow in flight keeps the decision it was made with");
    assert!(!passes(&lan.client, sock(lan.client_v4, 47202), to), "a new flow gets the new rules");

    daemon.rewrite_config(&config(&topo, "  dport(5411) -> no_such_group\n  fallback: direct")).unwrap();
    let out = daemon.cli_output(&["reload"]).unwrap();
    assert!(!out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("reload failed") && text.contains("no_such_group"), "{text}");
    assert!(!passes(&lan.client, sock(lan.client_v4, 47203), to), "generation 2 still runs");
}

#[test]
fn pname_rules_route_gateway_originated_traffic_by_process() {
    if skip_unless_root("pname_rules_route_gateway_originated_traffic_by_process") {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    std::mem::forget(udp_echo(&topo.server, sock(topo.server_v4, 5431)).unwrap());
    let daemon =
        Daemon::start(&dae(), &topo.gateway, &config(&topo, "  pname(socat) -> block\n  fallback: direct"), &[])
            .unwrap();
    assert!(daemon.log().contains("socket-creation hook attached"), "{}", daemon.log());
    let socat = |port: u16| {
        let target = format!("UDP4:{}:5431,sourceport={port}", topo.server_v4);
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", topo.gateway.path().display()))
            .args(["--", "socat", "-T", "1", "-", &target])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().expect("stdin").write_all(b"ping\n")?;
                child.wait_with_output()
            })
            .expect("socat runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // socat's own packets are blocked: its echo never comes back.
    assert_eq!(socat(47301), "", "the process named socat is blocked");
    // The same destination from this test process (another name) passes.
    assert!(passes(&topo.gateway, sock(topo.gateway_wan_v4, 47302), sock(topo.server_v4, 5431)));
    let flows = daemon.flows().unwrap();
    let f = flows.iter().find(|f| f["src"] == sock(topo.gateway_wan_v4, 47301).to_string().as_str()).expect("tagged");
    assert_eq!(f["direction"], "wan-out");
}

#[test]
fn leading_address_rules_drop_in_xdp_on_real_traffic() {
    if skip_unless_root("leading_address_rules_drop_in_xdp_on_real_traffic") {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    std::mem::forget(udp_echo(&topo.server, sock(topo.server_v4, 5441)).unwrap());
    std::mem::forget(udp_echo(&topo.server, sock(topo.server_v6, 5441)).unwrap());
    let rules = format!("  dip({}/32) -> block\n  dport(5441) -> proxy\n  fallback: direct", topo.server_v4);
    let daemon = Daemon::start(&dae(), &topo.gateway, &config(&topo, &rules), &[]).unwrap();
    assert!(!passes(&lan.client, sock(lan.client_v4, 47401), sock(topo.server_v4, 5441)));
    assert!(passes(&lan.client, sock(lan.client_v6, 47402), sock(topo.server_v6, 5441)), "other addresses pass");
    let stats = daemon.stats().unwrap();
    assert!(stats["xdp_blocked"].as_u64().unwrap() >= 1, "dropped in XDP: {stats}");
    assert_eq!(stats["blocked"], 0, "nothing reached tc to be blocked there: {stats}");
    let flows = daemon.flows().unwrap();
    assert!(flows.iter().all(|f| f["src"] != sock(lan.client_v4, 47401).to_string().as_str()), "no flow state for it");
}
