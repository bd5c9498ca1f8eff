//! `lab`: reproducible scenarios on network namespaces this process creates and removes.
//!
//! `lab demo --dae PATH`: client -> gateway -> server, `dae run` on the gateway with its embedded default
//! configuration; iperf3 TCP through a real SOCKS5 proxy (microsocks in the server namespace) and direct; UDP
//! through a real SOCKS5 UDP association (danted) and direct; TCP and ICMP over IPv4 and IPv6 from the client and
//! from the gateway itself; DNS through dae's forwarder; then
//! the flow tags `dae flows` reports and a pass/fail table with the throughput. Everything is torn down on exit,
//! also on failure.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
};

use bench_lab::{
    daemon::Daemon,
    dns::{Nsd, have, short},
    is_root, netns, proxies,
    topology::Topology,
    traffic::{Goodput, iperf3_client, iperf3_server, ping, tcp_echo, tcp_roundtrip, udp_echo, udp_roundtrip},
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some("demo"), Some("--dae"), Some(dae)) =
        (args.get(1).map(String::as_str), args.get(2).map(String::as_str), args.get(3))
    else {
        eprintln!("usage: lab demo --dae PATH_TO_DAE");
        return ExitCode::from(2);
    };
    if !is_root() {
        eprintln!("lab: the demo creates network namespaces and loads eBPF: run it as root");
        return ExitCode::from(2);
    }
    let removed = netns::sweep_stale();
    if !removed.is_empty() {
        eprintln!("lab: removed namespaces left by killed runs: {removed:?}");
    }
    match demo(PathBuf::from(dae)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lab: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Check {
    what: String,
    passed: bool,
    detail: String,
}

/// The proxies the embedded default configuration names: `lab_socks` (microsocks, TCP) and `lab_dante` (danted,
/// TCP and UDP ASSOCIATE) on the server.
const SOCKS_PORT: u16 = 1080;
const DANTE_PORT: u16 = 1081;
/// The UDP echo port the default configuration proxies through danted.
const UDP_PROXIED_PORT: u16 = 5204;
/// Ports the default configuration proxies (TCP) and leaves direct.
const PROXIED_PORT: u16 = 5201;
const DIRECT_PORT: u16 = 5202;
const ECHO_PORT: u16 = 5203;
const IPERF_SECONDS: u32 = 3;

fn demo(dae: PathBuf) -> std::io::Result<bool> {
    let topo = Topology::client_gateway_server()?;
    let lan = topo.lan();
    let (server_v4, server_v6) = (IpAddr::from(topo.server_v4), IpAddr::from(topo.server_v6));
    // `wan_interface: auto` follows the default routes: the gateway's lead to the server.
    topo.gateway.ip(&["route", "add", "default", "via", &server_v4.to_string()])?;
    topo.gateway.ip(&["-6", "route", "add", "default", "via", &server_v6.to_string()])?;
    println!(
        "lab: client {} / {} -> gateway ({} / {}) -> server {} / {}",
        lan.client_v4, lan.client_v6, lan.gateway_if, topo.wan_if, server_v4, server_v6
    );
    let _socks = proxies::microsocks(&topo.server, server_v4, SOCKS_PORT)?;
    let _dante = proxies::danted(&topo.server, server_v4, DANTE_PORT, &[server_v4, server_v6])?;
    let _iperf = [iperf3_server(&topo.server, PROXIED_PORT)?, iperf3_server(&topo.server, DIRECT_PORT)?];
    let _echo = [
        udp_echo(&topo.server, SocketAddr::new(server_v4, ECHO_PORT))?,
        udp_echo(&topo.server, SocketAddr::new(server_v6, ECHO_PORT))?,
        tcp_echo(&topo.server, SocketAddr::new(server_v4, ECHO_PORT))?,
        tcp_echo(&topo.server, SocketAddr::new(server_v6, ECHO_PORT))?,
        udp_echo(&topo.server, SocketAddr::new(server_v4, UDP_PROXIED_PORT))?,
        udp_echo(&topo.server, SocketAddr::new(server_v6, UDP_PROXIED_PORT))?,
    ];
    let _nsd = have("nsd").then(|| {
        let zone = "$ORIGIN lab.test.\n$TTL 300\n@ IN SOA ns admin 1 3600 600 86400 60\n@ IN NS ns\n\
                    ns IN A 10.77.200.2\nwww IN A 10.77.200.2\n";
        Nsd::start(&topo.server, &server_v4.to_string(), 53, "lab.test", zone, "www.lab.test")
    });
    println!("lab: dae run (no -c: the embedded default configuration, `dae default-config` prints it)");
    let mut daemon = Daemon::start_default(&dae, &topo.gateway, &[])?;
    let steered = |daemon: &Daemon| daemon.stats().ok().and_then(|s| s["steered"].as_u64()).unwrap_or(0);

    let mut checks = Vec::new();
    let mut check = |what: String, result: std::io::Result<String>| {
        let (passed, detail) = match result {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        };
        checks.push(Check { what, passed, detail });
    };
    let gbps =
        |g: Goodput| format!("{:.2} Gbit/s ({} MB in {IPERF_SECONDS} s)", g.bits_per_second / 1e9, g.bytes >> 20);
    for (family, server, extra) in [("IPv4", server_v4, "-4"), ("IPv6", server_v6, "-6")] {
        let before = steered(&daemon);
        let proxied = iperf3_client(&lan.client, server, PROXIED_PORT, IPERF_SECONDS, &[extra]);
        let via_proxy = steered(&daemon) > before;
        check(
            format!("client TCP {family} via SOCKS5 (iperf3 :{PROXIED_PORT})"),
            proxied.and_then(|g| {
                if via_proxy { Ok(gbps(g)) } else { Err(std::io::Error::other("passed, but was not steered")) }
            }),
        );
        let before = steered(&daemon);
        let direct = iperf3_client(&lan.client, server, DIRECT_PORT, IPERF_SECONDS, &[extra]);
        let untouched = steered(&daemon) == before;
        check(
            format!("client TCP {family} direct (iperf3 :{DIRECT_PORT})"),
            direct.and_then(|g| {
                if untouched { Ok(gbps(g)) } else { Err(std::io::Error::other("passed, but went to userspace")) }
            }),
        );
    }
    // UDP through danted's UDP association: echoed, and counted by dae's UDP relay (its counters are published
    // about every second); a failed association would drop the datagram, never send it direct.
    let counter = |daemon: &Daemon, name: &str| daemon.stats().ok().and_then(|s| s[name].as_u64()).unwrap_or(0);
    // Whether counter `name` moved past `before` within 3 s.
    let moved = |daemon: &Daemon, name: &str, before: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while counter(daemon, name) == before && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        counter(daemon, name) > before
    };
    for (family, from, to) in
        [("IPv4", IpAddr::from(lan.client_v4), server_v4), ("IPv6", IpAddr::from(lan.client_v6), server_v6)]
    {
        let before = counter(&daemon, "udp_replied");
        let echoed = udp_roundtrip(
            &lan.client,
            SocketAddr::new(from, 0),
            SocketAddr::new(to, UDP_PROXIED_PORT),
            b"dae-rs lab via socks5",
        );
        let relayed = moved(&daemon, "udp_replied", before);
        check(
            format!("client UDP {family} via SOCKS5 (danted :{UDP_PROXIED_PORT})"),
            echoed.and_then(|r| {
                if relayed {
                    Ok(format!("{} bytes echoed through a UDP association", r.len()))
                } else {
                    Err(std::io::Error::other("echoed, but not relayed by dae"))
                }
            }),
        );
    }
    // A datagram larger than the links' MTU leaves the client in IP fragments: the kernel program routes the train
    // as its flow, and the gateway reassembles it and relays it whole (`reassembled_steered`).
    let payload: Vec<u8> = (0..4_000).map(|i| (i % 251) as u8).collect();
    for (family, from, to) in
        [("IPv4", IpAddr::from(lan.client_v4), server_v4), ("IPv6", IpAddr::from(lan.client_v6), server_v6)]
    {
        let before = counter(&daemon, "reassembled_steered");
        let echoed =
            udp_roundtrip(&lan.client, SocketAddr::new(from, 0), SocketAddr::new(to, UDP_PROXIED_PORT), &payload);
        let reassembled = moved(&daemon, "reassembled_steered", before);
        check(
            format!("client UDP {family} fragmented via SOCKS5"),
            echoed.and_then(|r| match (r == payload, reassembled) {
                (true, true) => Ok(format!("{} bytes (IP fragments) echoed whole, relayed by dae", r.len())),
                (true, false) => Err(std::io::Error::other("echoed, but not relayed by dae")),
                (false, _) => Err(std::io::Error::other(format!("{} bytes came back, not the 4,000 sent", r.len()))),
            }),
        );
    }
    for (ns_name, ns, from4, from6) in [
        ("client", &lan.client, IpAddr::from(lan.client_v4), IpAddr::from(lan.client_v6)),
        ("gateway", &topo.gateway, IpAddr::from(topo.gateway_wan_v4), IpAddr::from(topo.gateway_wan_v6)),
    ] {
        for (from, to) in [(from4, server_v4), (from6, server_v6)] {
            let family = if to.is_ipv4() { "IPv4" } else { "IPv6" };
            check(
                format!("{ns_name} UDP {family} direct"),
                udp_roundtrip(ns, SocketAddr::new(from, 0), SocketAddr::new(to, ECHO_PORT), b"dae-rs lab")
                    .map(|r| format!("{} bytes echoed", r.len())),
            );
            check(
                format!("{ns_name} TCP {family} direct"),
                tcp_roundtrip(ns, SocketAddr::new(to, ECHO_PORT), b"dae-rs lab over tcp")
                    .map(|(l, r)| format!("{} bytes echoed to {l}", r.len())),
            );
            check(
                format!("{ns_name} ICMP {family}"),
                ping(ns, to)
                    .and_then(|ok| if ok { Ok("reply".into()) } else { Err(std::io::Error::other("no reply")) }),
            );
        }
    }
    if _nsd.is_some() {
        let answer = short(&lan.client, &server_v4.to_string(), 53, "www.lab.test", &[]);
        // The forwarder's counters reach `dae stats` within about a second.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let intercepted = loop {
            let counted = daemon.stats().ok().and_then(|s| s["dns_intercepted"].as_u64()).unwrap_or(0) > 0;
            if counted || std::time::Instant::now() > deadline {
                break counted;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        check(
            "client DNS via the forwarder".into(),
            match (answer.first(), intercepted) {
                (Some(ip), true) => Ok(format!("www.lab.test A {ip}, answered by dae's forwarder (asis)")),
                (Some(_), false) => Err(std::io::Error::other("answered, but not intercepted")),
                (None, _) => Err(std::io::Error::other("no answer")),
            },
        );
    }
    println!("\n{}", daemon.flows_table()?);
    let stats = daemon.stats()?;
    println!("counters: {stats}\n");
    let all = checks.iter().all(|c| c.passed);
    println!("{:<44} {:<6} detail", "check", "result");
    for c in &checks {
        println!("{:<44} {:<6} {}", c.what, if c.passed { "PASS" } else { "FAIL" }, c.detail);
    }
    let status = daemon.stop()?;
    println!(
        "\nlab: dae exited ({status}); namespaces removed. {}",
        if all { "All checks passed." } else { "Some checks FAILED." }
    );
    Ok(all && status.success())
}
