//! End to end with real parts (root): nsd upstreams in the server namespace, `dae-dns` on the gateway, kdig and
//! dnsperf in LAN client namespaces (bench_lab's topology; names start with `daers`, removed on every exit path).

mod common;

use std::time::Duration;

use bench_lab::topology::Topology;
use common::{Forwarder, Nsd, kdig, short, skip};

fn zone(origin: &str, www: &str) -> String {
    format!(
        "$ORIGIN {origin}.\n$TTL 300\n@ IN SOA ns admin 1 3600 600 86400 60\n@ IN NS ns\nns IN A 10.77.200.2\n\
         www IN A {www}\n*.wild IN A {www}\n"
    )
}

#[test]
fn queries_from_two_lans_reach_their_own_upstreams_and_never_share_cached_answers() {
    if skip("queries_from_two_lans_reach_their_own_upstreams_and_never_share_cached_answers", &["nsd", "kdig"]) {
        return;
    }
    let topo = Topology::with_lans(2).unwrap();
    let server = topo.server_v4.to_string();
    let _nsd_a = Nsd::start(&topo.server, &server, 5301, "lab.test", &zone("lab.test", "10.1.1.1"), "www.lab.test");
    let _nsd_b = Nsd::start(&topo.server, &server, 5302, "lab.test", &zone("lab.test", "10.2.2.2"), "www.lab.test");
    let (lan_a, lan_b) = (&topo.lans[0], &topo.lans[1]);
    let config = format!(
        "global {{ lan_interface: {a}, {b} }}
         dns {{
             bind: 'tcp+udp://0.0.0.0:53'
             upstream {{ up_a: 'udp://{server}:5301'
                         up_b: 'tcp+udp://{server}:5302' }}
             routing {{ request {{ interface(lan: {a}) -> up_a
                                   interface(lan: {b}) -> up_b
                                   fallback: reject }} }}
         }}",
        a = lan_a.gateway_if,
        b = lan_b.gateway_if,
    );
    let mut forwarder = Forwarder::start(&topo.gateway, &config, &["--workers", "2"]);
    let via = |lan: &bench_lab::topology::Lan, args: &[&str]| {
        short(&lan.client, &lan.gateway_v4.to_string(), 53, "www.lab.test", args)
    };
    for round in 0..3 {
        assert_eq!(via(lan_a, &[]), vec!["10.1.1.1"], "LAN A, round {round}");
        assert_eq!(via(lan_b, &[]), vec!["10.2.2.2"], "LAN B, round {round}");
    }
    assert_eq!(via(lan_b, &["+tcp"]), vec!["10.2.2.2"], "LAN B over TCP (interface from the local address)");
    assert_eq!(via(lan_a, &["+tcp"]), vec!["10.1.1.1"], "LAN A over TCP");
    let stats = forwarder.stats();
    assert!(stats["cache_hits"].as_u64().unwrap() >= 4, "later rounds came from the cache: {stats}");
    // A query that reaches the listener from an interface of no zone falls back to `reject`: empty NOERROR.
    let local = kdig(&topo.gateway, "127.0.0.1", 53, "www.lab.test", "A", &["+timeout=2"]);
    assert!(local.contains("NOERROR") && local.contains("ANSWER: 0"), "{local}");
}

#[test]
fn dnsperf_burst_through_the_forwarder_loses_nothing() {
    if skip("dnsperf_burst_through_the_forwarder_loses_nothing", &["nsd", "kdig", "dnsperf"]) {
        return;
    }
    let topo = Topology::with_lans(1).unwrap();
    let server = topo.server_v4.to_string();
    let _nsd = Nsd::start(&topo.server, &server, 53, "perf.test", &zone("perf.test", "10.3.3.3"), "www.perf.test");
    let config = format!(
        "global {{}}\ndns {{ bind: '0.0.0.0:53'\n upstream {{ nsd: 'udp://{server}:53' }}\n routing {{ request {{ fallback: nsd }} }} }}"
    );
    let mut forwarder = Forwarder::start(&topo.gateway, &config, &["--workers", "1"]);
    let scratch = common::Scratch::new();
    let queries: String = (0..20_000).map(|i| format!("n{}.wild.perf.test A\n", i % 5_000)).collect();
    let data = scratch.write("q.txt", &queries, 0o644);
    let lan = topo.lan();
    let out = lan
        .client
        .output(
            "dnsperf",
            &[
                "-s",
                &lan.gateway_v4.to_string(),
                "-d",
                &data.display().to_string(),
                "-n",
                "1",
                "-c",
                "4",
                "-q",
                "500",
                "-t",
                "5",
            ],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Queries lost:         0 "), "{text}");
    let stats = forwarder.settled_stats(Duration::from_secs(5));
    assert_eq!(stats["in_flight"], 0, "{stats}");
    assert_eq!(stats["upstream_pending"], 0, "{stats}");
    assert!(stats["flights"].as_u64().unwrap() <= 5_000, "each name asked upstream at most once: {stats}");
}

#[test]
fn upstream_given_by_host_name_is_resolved_through_the_bootstrap_resolver_with_the_daemons_mark() {
    if skip(
        "upstream_given_by_host_name_is_resolved_through_the_bootstrap_resolver_with_the_daemons_mark",
        &["nsd", "kdig"],
    ) {
        return;
    }
    let topo = Topology::with_lans(1).unwrap();
    let server = topo.server_v4.to_string();
    // One nsd answers both the bootstrap lookup (ns.boot.test -> the server) and, on another port, the queries.
    let _bootstrap =
        Nsd::start(&topo.server, &server, 5301, "boot.test", &zone("boot.test", "10.4.4.4"), "ns.boot.test");
    let _upstream =
        Nsd::start(&topo.server, &server, 5302, "boot.test", &zone("boot.test", "10.4.4.4"), "www.boot.test");
    // The bootstrap lookup and the queries must leave with the daemon's mark: nothing else reaches the server.
    common::only_marked_sockets_reach_the_server(&topo);
    let config = format!(
        "global {{ bootstrap_resolver: '{server}:5301'\n so_mark_from_dae: {} }}
         dns {{ bind: '0.0.0.0:53'
               upstream {{ named: 'udp://ns.boot.test:5302' }}
               routing {{ request {{ fallback: named }} }} }}",
        common::TEST_MARK
    );
    let _forwarder = Forwarder::start(&topo.gateway, &config, &["--workers", "1"]);
    let lan = topo.lan();
    // The first queries may race the bootstrap lookup (SERVFAIL until it resolves): ask until answered, for at
    // most 10 s (each kdig run is the wait between tries).
    let mut answer = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        answer = short(&lan.client, &lan.gateway_v4.to_string(), 53, "www.boot.test", &[]);
        if !answer.is_empty() {
            break;
        }
    }
    assert_eq!(answer, vec!["10.4.4.4"]);
}
