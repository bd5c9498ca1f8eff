//! DNS intercepted by the datapath, end to end with real parts (root): LAN clients in two namespaces and the
//! gateway itself ask a server's nsd on port 53 with kdig; `dae run` on the gateway steers the queries (UDP and
//! TCP) to its workers, which hand them to the forwarder with their direction and interface (the LAN they
//! arrived on, the WAN the gateway's own leave by); answers come back from the address the client asked. The answers of the forwarder publish `IP -> names` into the kernel, so a `domain(...)`
//! routing rule blocks the connection that follows the lookup.

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use bench_lab::{
    daemon::Daemon,
    dns::{Nsd, short, skip},
    netns::Netns,
    topology::Topology,
};

fn dae() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dae"))
}

fn zone(www: &str, srv: &str) -> String {
    format!(
        "$ORIGIN lab.test.\n$TTL 300\n@ IN SOA ns admin 1 3600 600 86400 60\n@ IN NS ns\nns IN A 10.77.200.2\n\
         www IN A {www}\nsrv IN A {srv}\n"
    )
}

fn connects(ns: &Netns, to: SocketAddr) -> bool {
    ns.run_in(move || TcpStream::connect_timeout(&to, Duration::from_millis(700)).is_ok()).unwrap()
}

#[test]
fn dns_is_answered_by_the_upstream_its_interface_selects_and_feeds_domain_routing() {
    let test = "dns_is_answered_by_the_upstream_its_interface_selects_and_feeds_domain_routing";
    if skip(test, &["nsd", "kdig"]) {
        return;
    }
    let topo = Topology::with_lans(2).unwrap();
    let server = topo.server_v4.to_string();
    let srv = server.as_str();
    // The server the clients ask (port 53) answers 10.3.3.3; the two upstreams the rules pick answer 10.1.1.1
    // and 10.2.2.2. srv.lab.test is the server's own address, for the domain-routing half.
    let _asked = Nsd::start(&topo.server, srv, 53, "lab.test", &zone("10.3.3.3", srv), "www.lab.test");
    let _up_a = Nsd::start(&topo.server, srv, 5301, "lab.test", &zone("10.1.1.1", srv), "www.lab.test");
    let _up_b = Nsd::start(&topo.server, srv, 5302, "lab.test", &zone("10.2.2.2", srv), "www.lab.test");
    let _up_wan = Nsd::start(&topo.server, srv, 5303, "lab.test", &zone("10.4.4.4", srv), "www.lab.test");
    let listener = topo.server.run_in(|| TcpListener::bind("0.0.0.0:5601")).unwrap().unwrap();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let (lan_a, lan_b) = (&topo.lans[0], &topo.lans[1]);
    let ask = |lan: &bench_lab::topology::Lan, args: &[&str]| short(&lan.client, srv, 53, "www.lab.test", args);

    // Without dae-rs the clients reach the server they asked.
    assert_eq!(ask(lan_a, &[]), vec!["10.3.3.3"]);
    let to_srv = SocketAddr::new(IpAddr::from(topo.server_v4), 5601);
    assert!(connects(&lan_a.client, to_srv));

    // LAN A's queries go to `for_a`, LAN B's to `for_b`.
    let config = |for_a: &str, for_b: &str| {
        format!(
            "global {{\n  lan_interface: {a}, {b}\n  wan_interface: {wan}\n}}\n\
             dns {{\n  upstream {{\n    up_a: 'udp://{srv}:5301'\n    up_b: 'tcp+udp://{srv}:5302'\n    \
             up_wan: 'tcp+udp://{srv}:5303'\n  }}\n  \
             routing {{\n    request {{\n      interface(lan: {a}) -> {for_a}\n      interface(lan: {b}) -> {for_b}\n      \
             interface(wan: {wan}) -> up_wan\n      \
             fallback: asis\n    }}\n  }}\n}}\n\
             routing {{\n  domain(full: srv.lab.test) && dport(5601) -> block\n  fallback: direct\n}}\n",
            a = lan_a.gateway_if,
            b = lan_b.gateway_if,
            wan = topo.wan_if,
        )
    };
    let mut daemon = Daemon::start(&dae(), &topo.gateway, &config("up_a", "up_b"), &[]).unwrap();
    let context = |daemon: &Daemon| format!("stats {:?}\nlog:\n{}", daemon.stats(), daemon.log());

    // Connections to srv before any lookup pass (no name is known for its address yet).
    assert!(connects(&lan_a.client, to_srv), "{}", context(&daemon));
    for round in 0..2 {
        assert_eq!(ask(lan_a, &[]), vec!["10.1.1.1"], "LAN A, UDP, round {round}: {}", context(&daemon));
        assert_eq!(ask(lan_b, &[]), vec!["10.2.2.2"], "LAN B, UDP, round {round}: {}", context(&daemon));
    }
    assert_eq!(ask(lan_a, &["+tcp"]), vec!["10.1.1.1"], "LAN A, TCP: {}", context(&daemon));
    assert_eq!(ask(lan_b, &["+tcp"]), vec!["10.2.2.2"], "LAN B, TCP: {}", context(&daemon));
    // The gateway's own queries (WAN-out) are intercepted too, with their WAN interface.
    for args in [&[][..], &["+tcp"][..]] {
        let own = short(&topo.gateway, srv, 53, "www.lab.test", args);
        assert_eq!(own, vec!["10.4.4.4"], "the gateway's own query {args:?}: {}", context(&daemon));
    }
    let stats = daemon.stats().unwrap();
    assert!(stats["steered"].as_u64().unwrap() >= 8, "the queries were steered: {stats}");

    // The lookup of srv.lab.test names the server's address; the next connection to it is blocked.
    assert_eq!(short(&lan_b.client, srv, 53, "srv.lab.test", &[]), vec![srv.to_owned()]);
    let deadline = Instant::now() + Duration::from_secs(3);
    while connects(&lan_a.client, to_srv) {
        assert!(Instant::now() < deadline, "domain(full: srv.lab.test) never blocked {srv}: {}", context(&daemon));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(daemon.stats().unwrap()["blocked"].as_u64().unwrap() >= 1);

    // A reload that changes the dns section starts a new forwarder: the LANs swap upstreams (the cached answers
    // go with the old one).
    daemon.rewrite_config(&config("up_b", "up_a")).unwrap();
    let out = daemon.cli_output(&["reload"]).unwrap();
    assert!(out.status.success(), "{out:?}\n{}", context(&daemon));
    assert!(daemon.log().contains("DNS forwarder restarted"), "{}", context(&daemon));
    assert_eq!(ask(lan_a, &[]), vec!["10.2.2.2"], "LAN A after the reload: {}", context(&daemon));
    assert_eq!(ask(lan_b, &["+tcp"]), vec!["10.1.1.1"], "LAN B after the reload: {}", context(&daemon));
    // A reload that leaves it alone keeps the running forwarder.
    let out = daemon.cli_output(&["reload"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(daemon.log().matches("DNS forwarder restarted").count(), 1, "{}", context(&daemon));

    assert!(daemon.stop().unwrap().success());
    // Gate closed, steering off: the clients reach the server they asked again.
    assert_eq!(ask(lan_a, &[]), vec!["10.3.3.3"]);
}
