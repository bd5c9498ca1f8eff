//! Privileged end-to-end tests of the spine: real kernel programs attached to veth pairs in namespaces this
//! test creates, real traffic (UDP, TCP, ICMP; IPv4 and IPv6), the real `dae` binary. Each test skips with a
//! reason when not root.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use bench_lab::{
    daemon::{Daemon, new_instance_name},
    netns::Netns,
    skip_unless_root,
    topology::{Topology, gro_features},
    traffic::{ping, tcp_echo, tcp_roundtrip, udp_echo, udp_roundtrip},
};
use serde_json::Value;

/// The spec's bound for following a link change.
const LINK_EVENT_BOUND: Duration = Duration::from_secs(1);

fn dae() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dae"))
}

fn config(lan: &[&str], wan: &[&str]) -> String {
    let mut text = String::from("global {\n");
    if !lan.is_empty() {
        text += &format!("  lan_interface: {}\n", lan.join(", "));
    }
    if !wan.is_empty() {
        text += &format!("  wan_interface: {}\n", wan.join(", "));
    }
    text + "}\n"
}

fn start(topo: &Topology, extra: &[&str]) -> Daemon {
    let cfg = config(&[&topo.lan().gateway_if], &[&topo.wan_if]);
    Daemon::start(&dae(), &topo.gateway, &cfg, extra).expect("dae run becomes ready")
}

fn sock(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The flow with this source and destination, if `dae flows` lists it.
fn flow<'a>(flows: &'a [Value], src: &SocketAddr, dst: &SocketAddr) -> Option<&'a Value> {
    let (src, dst) = (src.to_string(), dst.to_string());
    flows.iter().find(|f| f["src"] == src.as_str() && f["dst"] == dst.as_str())
}

/// Polls `cond` until it holds or `bound` passes; for state that has no event to wait on (map contents).
fn eventually(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ids of the tc programs attached to `ifname` (TCX) inside `ns`, for one direction.
fn tcx_programs(ns: &Netns, ifname: &str, attach: TcAttachType) -> Vec<String> {
    let ifname = ifname.to_string();
    ns.run_in(move || match SchedClassifier::query_tcx(&ifname, attach) {
        Ok((_, progs)) => progs.iter().map(|p| p.name_as_str().unwrap_or("?").to_string()).collect(),
        Err(_) => Vec::new(),
    })
    .expect("query inside the namespace")
}

/// The XDP program id on `ifname` as `ip -d link` reports it.
fn xdp_prog(ns: &Netns, ifname: &str) -> Option<u64> {
    let out = ns.ip(&["-j", "-d", "link", "show", "dev", ifname]).ok()?;
    let links: Value = serde_json::from_slice(&out.stdout).ok()?;
    links[0]["xdp"]["prog"]["id"].as_u64()
}

fn tc_filters(ns: &Netns, ifname: &str, dir: &str) -> String {
    ns.output("tc", &["filter", "show", "dev", ifname, dir])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn lan_in_tags_carry_the_lan_ifindex_and_direction() {
    if skip_unless_root("lan_in_tags_carry_the_lan_ifindex_and_direction") {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let _u4 = udp_echo(&topo.server, sock(topo.server_v4, 5301)).unwrap();
    let _u6 = udp_echo(&topo.server, sock(topo.server_v6, 5301)).unwrap();
    let _t4 = tcp_echo(&topo.server, sock(topo.server_v4, 5302)).unwrap();
    let _t6 = tcp_echo(&topo.server, sock(topo.server_v6, 5302)).unwrap();
    let daemon = start(&topo, &[]);
    let lan_index = topo.gateway_ifindex(&lan.gateway_if).unwrap();
    let wan_index = topo.gateway_ifindex(&topo.wan_if).unwrap();

    let udp = [
        (sock(lan.client_v4, 40001), sock(topo.server_v4, 5301)),
        (sock(lan.client_v6, 40002), sock(topo.server_v6, 5301)),
    ];
    for (from, to) in udp {
        assert_eq!(udp_roundtrip(&lan.client, from, to, b"hello").unwrap(), b"hello");
    }
    let mut tcp = Vec::new();
    for to in [sock(topo.server_v4, 5302), sock(topo.server_v6, 5302)] {
        let (local, echo) = tcp_roundtrip(&lan.client, to, b"tcp through the gateway").unwrap();
        assert_eq!(echo, b"tcp through the gateway");
        tcp.push((local, to));
    }
    assert!(ping(&lan.client, topo.server_v4.into()).unwrap(), "ICMP passes untouched");
    assert!(ping(&lan.client, topo.server_v6.into()).unwrap(), "ICMPv6 passes untouched");

    let flows = daemon.flows().unwrap();
    for (from, to) in udp.iter().chain(&tcp) {
        let f = flow(&flows, from, to).unwrap_or_else(|| panic!("no tag for {from} -> {to} in {flows:#?}"));
        assert_eq!(f["direction"], "lan-in");
        assert_eq!(f["ingress_ifindex"], lan_index);
        assert_eq!(f["ingress"], lan.gateway_if.as_str());
        assert_eq!(f["egress_ifindex"], wan_index, "the FIB's choice when the flow was first seen");
        assert_eq!(f["egress"], topo.wan_if.as_str());
        assert!(f["packets"].as_u64().unwrap() >= 1);
    }
    assert_eq!(flows.iter().filter(|f| f["proto"] == "tcp").count(), 2, "one tag per TCP flow: {flows:#?}");
    // Replies come back through the WAN interface and leave by the LAN one: no hook tags them.
    assert!(flows.iter().all(|f| f["direction"] == "lan-in"), "{flows:#?}");
    let stats = daemon.stats().unwrap();
    assert!(stats["not_tcp_udp"].as_u64().unwrap() >= 2, "pings counted as not TCP/UDP: {stats}");
    if daemon.log().contains(datapath::daemon::XDP_META_OFF) {
        // The kernel refused XDP's metadata helper: every packet XDP saw is counted, tc parsed it itself.
        assert_eq!(stats["xdp_meta_used"], 0, "{stats}");
        assert!(stats["xdp_meta_unavailable"].as_u64().unwrap() > 0, "XDP saw the packets: {stats}");
    } else {
        assert!(stats["xdp_meta_used"].as_u64().unwrap() > 0, "tc used XDP's parse summary: {stats}");
    }
    let table = daemon.flows_table().unwrap();
    assert!(table.contains(&lan.gateway_if) && table.contains("lan-in"), "{table}");
}

#[test]
fn gateway_originated_traffic_is_tagged_wan_out() {
    if skip_unless_root("gateway_originated_traffic_is_tagged_wan_out") {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let _u4 = udp_echo(&topo.server, sock(topo.server_v4, 5311)).unwrap();
    let _u6 = udp_echo(&topo.server, sock(topo.server_v6, 5311)).unwrap();
    let _t4 = tcp_echo(&topo.server, sock(topo.server_v4, 5312)).unwrap();
    let daemon = start(&topo, &[]);
    let wan_index = topo.gateway_ifindex(&topo.wan_if).unwrap();

    let from4 = sock(topo.gateway_wan_v4, 40011);
    let from6 = sock(topo.gateway_wan_v6, 40012);
    assert_eq!(udp_roundtrip(&topo.gateway, from4, sock(topo.server_v4, 5311), b"x").unwrap(), b"x");
    assert_eq!(udp_roundtrip(&topo.gateway, from6, sock(topo.server_v6, 5311), b"y").unwrap(), b"y");
    let (tcp_from, _) = tcp_roundtrip(&topo.gateway, sock(topo.server_v4, 5312), b"z").unwrap();

    let flows = daemon.flows().unwrap();
    for (from, to) in [
        (from4, sock(topo.server_v4, 5311)),
        (from6, sock(topo.server_v6, 5311)),
        (tcp_from, sock(topo.server_v4, 5312)),
    ] {
        let f = flow(&flows, &from, &to).unwrap_or_else(|| panic!("no tag for {from} -> {to} in {flows:#?}"));
        assert_eq!(f["direction"], "wan-out");
        assert_eq!(f["egress_ifindex"], wan_index);
        assert_eq!(f["egress"], topo.wan_if.as_str());
        assert_eq!(f["ingress_ifindex"], 0, "originated on the gateway");
    }
}

#[test]
fn link_flap_rename_delete_and_recreate_are_followed_without_reload() {
    if skip_unless_root("link_flap_rename_delete_and_recreate_are_followed_without_reload") {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let lan_if = lan.gateway_if.as_str();
    let _u4 = udp_echo(&topo.server, sock(topo.server_v4, 5321)).unwrap();
    let daemon = start(&topo, &[]);
    let to = sock(topo.server_v4, 5321);
    let tagged = |port: u16| flow(&daemon.flows().unwrap(), &sock(lan.client_v4, port), &to).cloned();

    // Down/up: the programs stay (or are put back) and new flows are tagged.
    let old_index = topo.gateway_ifindex(lan_if).unwrap();
    topo.gateway.ip(&["link", "set", lan_if, "down"]).unwrap();
    topo.gateway.ip(&["link", "set", lan_if, "up"]).unwrap();
    assert!(eventually(LINK_EVENT_BOUND, || tcx_programs(&topo.gateway, lan_if, TcAttachType::Ingress)
        .contains(&"tc_lan_ingress_".to_string())));
    assert!(xdp_prog(&topo.gateway, lan_if).is_some(), "XDP still attached after the flap");
    udp_roundtrip(&lan.client, sock(lan.client_v4, 41001), to, b"a").unwrap();
    assert_eq!(tagged(41001).expect("tagged after down/up")["ingress_ifindex"], old_index);

    // Rename away: no longer a configured LAN interface, so detached and untagged.
    let renamed = format!("{}r", &lan_if[..lan_if.len() - 1]);
    topo.gateway.ip(&["link", "set", lan_if, "down"]).unwrap();
    topo.gateway.ip(&["link", "set", lan_if, "name", &renamed]).unwrap();
    topo.gateway.ip(&["link", "set", &renamed, "up"]).unwrap();
    assert!(daemon.wait_for_log(&format!("detaching iface={lan_if}"), LINK_EVENT_BOUND), "{}", daemon.log());
    assert!(tcx_programs(&topo.gateway, &renamed, TcAttachType::Ingress).is_empty());
    udp_roundtrip(&lan.client, sock(lan.client_v4, 41002), to, b"b").unwrap();
    assert!(tagged(41002).is_none(), "a renamed-away link is not a LAN interface");

    // Rename back: attached again within the bound.
    topo.gateway.ip(&["link", "set", &renamed, "down"]).unwrap();
    topo.gateway.ip(&["link", "set", &renamed, "name", lan_if]).unwrap();
    topo.gateway.ip(&["link", "set", lan_if, "up"]).unwrap();
    assert!(
        daemon.wait_for_log_count(&format!("attached iface={lan_if} ifindex={old_index}"), 2, LINK_EVENT_BOUND),
        "{}",
        daemon.log()
    );
    udp_roundtrip(&lan.client, sock(lan.client_v4, 41003), to, b"c").unwrap();
    assert!(tagged(41003).is_some());

    // Delete, then re-create with a new index: followed without a reload.
    topo.delete_lan_link(0).unwrap();
    assert!(daemon.wait_for_log_count(&format!("detaching iface={lan_if}"), 2, LINK_EVENT_BOUND), "{}", daemon.log());
    topo.recreate_lan_link(0).unwrap();
    let new_index = topo.gateway_ifindex(lan_if).unwrap();
    assert_ne!(new_index, old_index);
    assert!(
        daemon.wait_for_log(&format!("attached iface={lan_if} ifindex={new_index}"), LINK_EVENT_BOUND),
        "{}",
        daemon.log()
    );
    assert!(
        eventually(Duration::from_secs(3), || udp_roundtrip(&lan.client, sock(lan.client_v4, 41004), to, b"d").is_ok())
    );
    let f = tagged(41004).expect("tagged on the re-created link");
    assert_eq!(f["ingress_ifindex"], new_index);
    assert_eq!(f["ingress"], lan_if);
}

#[test]
fn clean_exit_leaves_no_filter_link_or_pin() {
    if skip_unless_root("clean_exit_leaves_no_filter_link_or_pin") {
        return;
    }
    for mode in ["tcx", "netlink"] {
        let topo = Topology::client_gateway_server().unwrap();
        let lan_if = topo.lan().gateway_if.clone();
        let mut daemon = start(&topo, &["--tc-attach", mode]);
        let pins = Path::new("/sys/fs/bpf/dae-rs").join(daemon.instance());
        assert!(pins.join("FLOWS").exists());
        assert!(xdp_prog(&topo.gateway, &lan_if).is_some());
        if mode == "netlink" {
            assert!(tc_filters(&topo.gateway, &lan_if, "ingress").contains("tc_lan_ingress"));
        } else {
            assert!(!tcx_programs(&topo.gateway, &lan_if, TcAttachType::Ingress).is_empty());
        }
        let status = daemon.stop().unwrap();
        assert!(status.success(), "{status}: {}", daemon.log());
        assert!(!pins.exists(), "pins removed");
        for ifname in [&lan_if, &topo.wan_if] {
            assert_eq!(xdp_prog(&topo.gateway, ifname), None, "{mode}: XDP left on {ifname}");
            assert!(tcx_programs(&topo.gateway, ifname, TcAttachType::Ingress).is_empty());
            assert!(tcx_programs(&topo.gateway, ifname, TcAttachType::Egress).is_empty());
            assert_eq!(tc_filters(&topo.gateway, ifname, "ingress"), "", "{mode}: filter left on {ifname}");
            assert_eq!(tc_filters(&topo.gateway, ifname, "egress"), "");
        }
        let qdiscs = topo.gateway.output("tc", &["qdisc", "show", "dev", &lan_if]).unwrap();
        assert!(!String::from_utf8_lossy(&qdiscs.stdout).contains("clsact"), "{mode}: our clsact removed");
    }
}

#[test]
fn a_lan_link_has_gro_forwarding_while_attached_and_gets_its_own_features_back_on_detach_and_exit() {
    if skip_unless_root(
        "a_lan_link_has_gro_forwarding_while_attached_and_gets_its_own_features_back_on_detach_and_exit",
    ) {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan_if = topo.lan().gateway_if.clone();
    // A veth starts with GRO off; the WAN link is left as it is whatever it has.
    assert_eq!(gro_features(&topo.gateway, &lan_if).unwrap(), (false, false));
    let wan_before = gro_features(&topo.gateway, &topo.wan_if).unwrap();
    let mut daemon = start(&topo, &[]);
    assert_eq!(gro_features(&topo.gateway, &lan_if).unwrap(), (true, true), "{}", daemon.log());
    assert_eq!(gro_features(&topo.gateway, &topo.wan_if).unwrap(), wan_before);

    // A reload that makes it no LAN any more detaches it: its features go back while dae runs on.
    daemon.rewrite_config(&config(&[], &[&topo.wan_if])).unwrap();
    let out = daemon.cli_output(&["reload"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        eventually(LINK_EVENT_BOUND, || gro_features(&topo.gateway, &lan_if).unwrap() == (false, false)),
        "{}",
        daemon.log()
    );
    daemon.rewrite_config(&config(&[&lan_if], &[&topo.wan_if])).unwrap();
    let out = daemon.cli_output(&["reload"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(eventually(LINK_EVENT_BOUND, || gro_features(&topo.gateway, &lan_if).unwrap() == (true, true)));

    let status = daemon.stop().unwrap();
    assert!(status.success(), "{status}: {}", daemon.log());
    assert_eq!(gro_features(&topo.gateway, &lan_if).unwrap(), (false, false), "restored on exit");
    assert_eq!(gro_features(&topo.gateway, &topo.wan_if).unwrap(), wan_before);
}

#[test]
fn after_sigkill_the_gate_closes_and_the_next_start_cleans_up() {
    if skip_unless_root("after_sigkill_the_gate_closes_and_the_next_start_cleans_up") {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let _u4 = udp_echo(&topo.server, sock(topo.server_v4, 5331)).unwrap();
    let to = sock(topo.server_v4, 5331);
    let cfg = config(&[&lan.gateway_if], &[&topo.wan_if]);
    let instance = new_instance_name();
    // Classic filters outlive the process: the case the lease exists for.
    let mut daemon =
        Daemon::start_instance(&dae(), &topo.gateway, &cfg, &instance, &["--tc-attach", "netlink"]).unwrap();
    udp_roundtrip(&lan.client, sock(lan.client_v4, 42001), to, b"before").unwrap();
    assert!(flow(&daemon.flows().unwrap(), &sock(lan.client_v4, 42001), &to).is_some());
    daemon.kill().unwrap();

    assert!(
        tc_filters(&topo.gateway, &lan.gateway_if, "ingress").contains("tc_lan_ingress"),
        "the filter outlived the daemon"
    );
    assert!(
        eventually(Duration::from_secs(6), || daemon.stats().is_ok_and(|s| s["gate_open"] == false)),
        "the lease ran out"
    );
    // The gate is closed: traffic passes untouched and nothing is recorded.
    assert_eq!(udp_roundtrip(&lan.client, sock(lan.client_v4, 42002), to, b"after").unwrap(), b"after");
    let flows = daemon.flows().unwrap();
    assert!(flow(&flows, &sock(lan.client_v4, 42002), &to).is_none(), "closed gate recorded a flow: {flows:#?}");
    assert!(flow(&flows, &sock(lan.client_v4, 42001), &to).is_some(), "the dead daemon's pins are still readable");

    // The next start under the same name removes the leftovers and works.
    let mut next = Daemon::start_instance(&dae(), &topo.gateway, &cfg, &instance, &["--tc-attach", "netlink"]).unwrap();
    let log = next.log();
    assert!(log.contains("removed pins left by a daemon"), "{log}");
    assert!(log.contains("removed a filter left by an earlier daemon"), "{log}");
    let filters = tc_filters(&topo.gateway, &lan.gateway_if, "ingress");
    assert_eq!(filters.lines().filter(|l| l.contains("direct-action")).count(), 1, "exactly one filter: {filters}");
    udp_roundtrip(&lan.client, sock(lan.client_v4, 42003), to, b"again").unwrap();
    assert!(flow(&next.flows().unwrap(), &sock(lan.client_v4, 42003), &to).is_some());
    assert!(next.stop().unwrap().success());
    assert_eq!(tc_filters(&topo.gateway, &lan.gateway_if, "ingress"), "");
}

#[test]
fn a_full_flow_table_is_counted_and_traffic_still_passes() {
    if skip_unless_root("a_full_flow_table_is_counted_and_traffic_still_passes") {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let lan = topo.lan();
    let _u4 = udp_echo(&topo.server, sock(topo.server_v4, 5341)).unwrap();
    // Four slots: one bucket.
    let daemon = start(&topo, &["--flow-table-size", "4"]);
    for port in 43000..43010 {
        let reply = udp_roundtrip(&lan.client, sock(lan.client_v4, port), sock(topo.server_v4, 5341), b"p").unwrap();
        assert_eq!(reply, b"p", "flow {port} passed");
    }
    let stats = daemon.stats().unwrap();
    assert_eq!(stats["flows"], 4, "{stats}");
    assert_eq!(stats["flow_capacity"], 4, "{stats}");
    assert!(stats["flow_table_full"].as_u64().unwrap() >= 6, "{stats}");
}

#[test]
fn a_raw_ip_lan_interface_is_tagged() {
    if skip_unless_root("a_raw_ip_lan_interface_is_tagged") {
        return;
    }
    let topo = Topology::client_gateway_server().unwrap();
    let tun_name = format!("daers{}t", topo.id);
    let mut tun = bench_lab::tun::Tun::create(&topo.gateway, &tun_name).unwrap();
    topo.gateway.ip(&["addr", "add", "10.77.60.1/24", "dev", &tun_name]).unwrap();
    topo.gateway.ip(&["link", "set", &tun_name, "up"]).unwrap();
    for key in ["net.ipv4.conf.all.rp_filter", &format!("net.ipv4.conf.{tun_name}.rp_filter")] {
        topo.gateway.sysctl(key, "0").unwrap();
    }
    let cfg = config(&[&tun_name], &[&topo.wan_if]);
    let daemon = Daemon::start(&dae(), &topo.gateway, &cfg, &[]).unwrap();
    let tun_index = topo.gateway_ifindex(&tun_name).unwrap();
    let packet = bench_lab::packet::Spec {
        ethernet: false,
        frame_len: 60,
        ..bench_lab::packet::Spec::udp("10.77.60.2", 44000, &topo.server_v4.to_string(), 5351)
    }
    .build();
    let src = sock("10.77.60.2".parse::<IpAddr>().unwrap(), 44000);
    let dst = sock(topo.server_v4, 5351);
    assert!(eventually(Duration::from_secs(2), || {
        tun.inject(&packet).unwrap();
        flow(&daemon.flows().unwrap(), &src, &dst).is_some()
    }));
    let flows = daemon.flows().unwrap();
    let f = flow(&flows, &src, &dst).unwrap();
    assert_eq!(f["direction"], "lan-in");
    assert_eq!(f["ingress_ifindex"], tun_index);
    assert_eq!(f["ingress"], tun_name.as_str());
}
