//! `lab`: reproducible scenarios on network namespaces this process creates and removes.
//!
//! `lab demo --dae PATH`: client -> gateway -> server, `dae run` on the gateway, real UDP/TCP/ICMP traffic over
//! IPv4 and IPv6 from the client and from the gateway itself, then the flow tags `dae flows` reports and a
//! pass/fail table. Everything is torn down on exit, also on failure.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
};

use bench_lab::{
    daemon::Daemon,
    is_root, netns,
    topology::Topology,
    traffic::{ping, tcp_echo, tcp_roundtrip, udp_echo, udp_roundtrip},
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

fn demo(dae: PathBuf) -> std::io::Result<bool> {
    let topo = Topology::client_gateway_server()?;
    let lan = topo.lan();
    let config = format!("global {{\n  lan_interface: {}\n  wan_interface: {}\n}}\n", lan.gateway_if, topo.wan_if);
    println!(
        "lab: client {} / {} -> gateway -> server {} / {}",
        lan.client_v4, lan.client_v6, topo.server_v4, topo.server_v6
    );
    println!("lab: dae run with\n{config}");
    let servers = [
        udp_echo(&topo.server, SocketAddr::new(topo.server_v4.into(), 5201))?,
        udp_echo(&topo.server, SocketAddr::new(topo.server_v6.into(), 5201))?,
        tcp_echo(&topo.server, SocketAddr::new(topo.server_v4.into(), 5202))?,
        tcp_echo(&topo.server, SocketAddr::new(topo.server_v6.into(), 5202))?,
    ];
    let mut daemon = Daemon::start(&dae, &topo.gateway, &config, &[])?;
    let mut checks = Vec::new();
    let mut check = |what: String, result: std::io::Result<String>| {
        let (passed, detail) = match result {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        };
        checks.push(Check { what, passed, detail });
    };
    for (ns_name, ns, from4, from6) in [
        ("client", &lan.client, IpAddr::from(lan.client_v4), IpAddr::from(lan.client_v6)),
        ("gateway", &topo.gateway, IpAddr::from(topo.gateway_wan_v4), IpAddr::from(topo.gateway_wan_v6)),
    ] {
        for (from, to) in [(from4, IpAddr::from(topo.server_v4)), (from6, IpAddr::from(topo.server_v6))] {
            let family = if to.is_ipv4() { "IPv4" } else { "IPv6" };
            check(
                format!("{ns_name} UDP {family}"),
                udp_roundtrip(ns, SocketAddr::new(from, 0), SocketAddr::new(to, 5201), b"dae-rs lab")
                    .map(|r| format!("{} bytes echoed", r.len())),
            );
            check(
                format!("{ns_name} TCP {family}"),
                tcp_roundtrip(ns, SocketAddr::new(to, 5202), b"dae-rs lab over tcp")
                    .map(|(l, r)| format!("{} bytes echoed to {l}", r.len())),
            );
            check(
                format!("{ns_name} ICMP {family}"),
                ping(ns, to)
                    .and_then(|ok| if ok { Ok("reply".into()) } else { Err(std::io::Error::other("no reply")) }),
            );
        }
    }
    println!("\n{}", daemon.flows_table()?);
    let stats = daemon.stats()?;
    println!("counters: {stats}\n");
    let all = checks.iter().all(|c| c.passed);
    println!("{:<24} {:<6} detail", "check", "result");
    for c in &checks {
        println!("{:<24} {:<6} {}", c.what, if c.passed { "PASS" } else { "FAIL" }, c.detail);
    }
    let status = daemon.stop()?;
    drop(servers);
    println!(
        "\nlab: dae exited ({status}); namespaces removed. {}",
        if all { "All checks passed." } else { "Some checks FAILED." }
    );
    Ok(all && status.success())
}
