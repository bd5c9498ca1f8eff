//! The cases of the golden table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{GoldenCase, GoldenCheck, block, direct, group, marked, must};
use crate::rules::ir::{L4, Packet, PacketDirection, Verdict};

const LANS: &[&str] = &["lan0", "lan1"];
const WANS: &[&str] = &["wan0", "wan1"];
const PROXY: &[&str] = &["proxy"];

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

const fn v6(segments: [u16; 8]) -> IpAddr {
    let [a, b, c, d, e, f, g, h] = segments;
    IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
}

/// A LAN client's TCP connection to a public web server, entering on `lan0`.
const LAN: Packet<'static> = Packet {
    direction: PacketDirection::LanIn,
    interface: Some("lan0"),
    src: v4(192, 168, 1, 2),
    dst: v4(93, 184, 216, 34),
    sport: 40_000,
    dport: 443,
    l4: L4::Tcp,
    dscp: 0,
    mac: Some([0x02, 0, 0, 0, 0, 0x01]),
    pname: None,
    domains: &[],
};

/// A connection `curl` on the gateway opens, leaving by `wan0`.
const WAN: Packet<'static> = Packet {
    direction: PacketDirection::WanOut,
    interface: Some("wan0"),
    src: v4(203, 0, 113, 5),
    dst: v4(93, 184, 216, 34),
    sport: 50_000,
    dport: 443,
    l4: L4::Tcp,
    dscp: 0,
    mac: None,
    pname: Some("curl"),
    domains: &[],
};

fn check(what: &'static str, packet: Packet<'static>, expected: Verdict) -> GoldenCheck {
    GoldenCheck { what, packet, expected }
}

fn case(name: &'static str, routing: &'static str, checks: Vec<GoldenCheck>) -> GoldenCase {
    GoldenCase { name, lan_interfaces: LANS, wan_interfaces: WANS, groups: PROXY, routing, checks }
}

/// Every case.
pub fn cases() -> Vec<GoldenCase> {
    let mut all = outcome_cases();
    all.extend(function_cases());
    all.extend(interface_cases());
    all
}

/// Order, negation, `&&`, fallback, must, must_rules, marks, DNS.
fn outcome_cases() -> Vec<GoldenCase> {
    vec![
        case(
            "fallback_only",
            "fallback: proxy",
            vec![
                check("any TCP", LAN, group("proxy")),
                check("UDP DNS", Packet { dport: 53, l4: L4::Udp, ..LAN }, Verdict::Dns),
            ],
        ),
        case("default_fallback_is_direct", "dport(22) -> block", vec![check("port 443", LAN, direct())]),
        case(
            "first_matching_rule_wins",
            "dport(443) -> block\ndport(443) -> proxy\nfallback: direct",
            vec![check("port 443", LAN, block()), check("port 80", Packet { dport: 80, ..LAN }, direct())],
        ),
        case(
            "negation_inverts_one_function",
            "!dip(10.0.0.0/8) -> block\nfallback: direct",
            vec![
                check("inside 10/8", Packet { dst: v4(10, 1, 2, 3), ..LAN }, direct()),
                check("outside 10/8", LAN, block()),
            ],
        ),
        case(
            "terms_are_anded",
            "dip(1.1.1.1) && dport(443) && l4proto(tcp) -> block\nfallback: direct",
            vec![
                check("all three", Packet { dst: v4(1, 1, 1, 1), ..LAN }, block()),
                check("wrong port", Packet { dst: v4(1, 1, 1, 1), dport: 80, ..LAN }, direct()),
                check("wrong transport", Packet { dst: v4(1, 1, 1, 1), l4: L4::Udp, ..LAN }, direct()),
            ],
        ),
        case(
            "two_uses_of_one_function_are_anded",
            "dport(1-1000) && !dport(80) -> block\nfallback: direct",
            vec![
                check("port 443", LAN, block()),
                check("port 80", Packet { dport: 80, ..LAN }, direct()),
                check("port 8080", Packet { dport: 8080, ..LAN }, direct()),
            ],
        ),
        case(
            "values_of_one_function_are_ored",
            "dip(1.1.1.1, 8.8.8.0/24, '2001:db8::/32') -> block",
            vec![
                check("first value", Packet { dst: v4(1, 1, 1, 1), ..LAN }, block()),
                check("second value", Packet { dst: v4(8, 8, 8, 8), ..LAN }, block()),
                check("IPv6 value", Packet { dst: v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]), ..LAN }, block()),
                check("none", LAN, direct()),
            ],
        ),
        case(
            "dns_goes_to_the_forwarder_unless_must",
            "dport(53) -> block\nfallback: proxy",
            vec![
                check("UDP 53 matched by block", Packet { dport: 53, l4: L4::Udp, ..LAN }, Verdict::Dns),
                check("TCP 53 matched by block", Packet { dport: 53, ..LAN }, Verdict::Dns),
                check("source port 53 is not DNS", Packet { sport: 53, ..LAN }, group("proxy")),
            ],
        ),
        case(
            "must_outbounds_keep_dns_away_from_the_forwarder",
            "dip(8.8.8.8) -> must_direct\ndip(9.9.9.9) -> proxy(must)\ndip(1.1.1.1) -> must_block\nfallback: direct",
            vec![
                check("must_direct DNS", Packet { dst: v4(8, 8, 8, 8), dport: 53, l4: L4::Udp, ..LAN }, must(direct())),
                check("must_direct not DNS", Packet { dst: v4(8, 8, 8, 8), ..LAN }, must(direct())),
                check("group(must) DNS", Packet { dst: v4(9, 9, 9, 9), dport: 53, ..LAN }, must(group("proxy"))),
                check("must_block DNS", Packet { dst: v4(1, 1, 1, 1), dport: 53, ..LAN }, must(block())),
                check("fallback DNS", Packet { dport: 53, ..LAN }, Verdict::Dns),
            ],
        ),
        case(
            "must_rules_marks_must_and_continues",
            "sip(192.168.1.2) -> must_rules\ndip(8.8.8.8) -> proxy\nfallback: direct",
            vec![
                check(
                    "must_rules then proxy, DNS",
                    Packet { dst: v4(8, 8, 8, 8), dport: 53, ..LAN },
                    must(group("proxy")),
                ),
                check("must_rules then fallback, DNS", Packet { dport: 53, ..LAN }, must(direct())),
                check(
                    "other client, DNS",
                    Packet { src: v4(192, 168, 1, 3), dst: v4(8, 8, 8, 8), dport: 53, ..LAN },
                    Verdict::Dns,
                ),
                check("must_rules, not DNS", Packet { dst: v4(8, 8, 8, 8), ..LAN }, must(group("proxy"))),
            ],
        ),
        case(
            "marks_are_hex_or_decimal",
            "dip(1.1.1.1) -> direct(mark: 0x800)\ndport(22) -> proxy(mark: 100)\ndport(23) -> must_proxy(mark: 0x1)\nfallback: direct(mark: 7)",
            vec![
                check("hex mark", Packet { dst: v4(1, 1, 1, 1), ..LAN }, marked(direct(), 0x800)),
                check("decimal mark", Packet { dport: 22, ..LAN }, marked(group("proxy"), 100)),
                check("must and mark", Packet { dport: 23, ..LAN }, must(marked(group("proxy"), 1))),
                check("fallback mark", LAN, marked(direct(), 7)),
            ],
        ),
        case(
            "fallback_may_be_must_with_mark",
            "fallback: must_proxy(mark: 0x10)",
            vec![check("DNS", Packet { dport: 53, ..LAN }, must(marked(group("proxy"), 0x10)))],
        ),
        case(
            "direct_must_and_mark_combine",
            "dport(443) -> direct(must, mark: 1)",
            vec![check("port 443", LAN, must(marked(direct(), 1)))],
        ),
    ]
}

/// One or two cases per routing function.
fn function_cases() -> Vec<GoldenCase> {
    vec![
        case(
            "domain_keys",
            "domain(example.com) -> block\ndomain(full: exact.org) -> proxy\ndomain(keyword: track, contains: spy) -> must_block\ndomain(regex: '^v[0-9]+\\.cdn\\.') -> direct(mark: 1)\ndomain(domain: 'Upper.NET.') -> proxy(mark: 2)\nfallback: direct",
            vec![
                check("suffix itself", Packet { domains: &["example.com"], ..LAN }, block()),
                check("under suffix", Packet { domains: &["www.example.com"], ..LAN }, block()),
                check("suffix needs a label boundary", Packet { domains: &["badexample.com"], ..LAN }, direct()),
                check("full exact", Packet { domains: &["exact.org"], ..LAN }, group("proxy")),
                check("full is not a suffix", Packet { domains: &["a.exact.org"], ..LAN }, direct()),
                check("keyword", Packet { domains: &["x.tracker.io"], ..LAN }, must(block())),
                check("contains is keyword", Packet { domains: &["spyware.net"], ..LAN }, must(block())),
                check("regex", Packet { domains: &["v12.cdn.net"], ..LAN }, marked(direct(), 1)),
                check(
                    "names lower-cased, dot removed",
                    Packet { domains: &["upper.net"], ..LAN },
                    marked(group("proxy"), 2),
                ),
                check("any of several names", Packet { domains: &["a.b", "www.example.com"], ..LAN }, block()),
                check("no name known", LAN, direct()),
            ],
        ),
        case(
            "negated_domain",
            "!domain(example.com) -> block",
            vec![
                check("listed", Packet { domains: &["example.com"], ..LAN }, direct()),
                check("other name", Packet { domains: &["other.org"], ..LAN }, block()),
                check("no name known", LAN, block()),
            ],
        ),
        case(
            "ip_is_dip_and_sip_is_source",
            "ip(8.8.8.8) -> block\nsip(192.168.1.0/24) && !sip(192.168.1.7) -> proxy\nsip('fd00::/8') -> must_direct",
            vec![
                check("ip alias", Packet { dst: v4(8, 8, 8, 8), ..LAN }, block()),
                check("source in /24", LAN, group("proxy")),
                check("excluded source", Packet { src: v4(192, 168, 1, 7), ..LAN }, direct()),
                check(
                    "IPv6 source",
                    Packet {
                        src: v6([0xfd00, 0, 0, 0, 0, 0, 0, 1]),
                        dst: v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
                        ..LAN
                    },
                    must(direct()),
                ),
                check(
                    "IPv4 prefix never matches IPv6",
                    Packet { src: v6([0xc0a8, 0x0102, 0, 0, 0, 0, 0, 0]), ..LAN },
                    direct(),
                ),
            ],
        ),
        case(
            "ports_and_ranges",
            "port(80) -> block\ndport(10080-30000) -> proxy\nsport(38563, 1000-1001) -> must_direct",
            vec![
                check("port alias", Packet { dport: 80, ..LAN }, block()),
                check("range low end", Packet { dport: 10080, ..LAN }, group("proxy")),
                check("range high end", Packet { dport: 30000, ..LAN }, group("proxy")),
                check("past the range", Packet { dport: 30001, ..LAN }, direct()),
                check("source port", Packet { sport: 38563, ..LAN }, must(direct())),
                check("source range", Packet { sport: 1001, ..LAN }, must(direct())),
            ],
        ),
        case(
            "l4proto_and_ipversion",
            "l4proto(udp) && ipversion(6) -> block\nl4proto(tcp, udp) && ipversion(4) -> proxy",
            vec![
                check(
                    "UDP over IPv6",
                    Packet {
                        l4: L4::Udp,
                        src: v6([0xfd00, 0, 0, 0, 0, 0, 0, 2]),
                        dst: v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
                        ..LAN
                    },
                    block(),
                ),
                check(
                    "TCP over IPv6",
                    Packet {
                        src: v6([0xfd00, 0, 0, 0, 0, 0, 0, 2]),
                        dst: v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
                        ..LAN
                    },
                    direct(),
                ),
                check("UDP over IPv4", Packet { l4: L4::Udp, ..LAN }, group("proxy")),
            ],
        ),
        case(
            "mac_of_lan_clients",
            "mac('02:00:00:00:00:01') -> block\n!mac('02:00:00:00:00:09') -> proxy",
            vec![
                check("listed MAC", LAN, block()),
                check("other MAC", Packet { mac: Some([2, 0, 0, 0, 0, 2]), ..LAN }, group("proxy")),
                check("the excluded MAC", Packet { mac: Some([2, 0, 0, 0, 0, 9]), ..LAN }, direct()),
                check("no MAC (WAN-out)", WAN, group("proxy")),
            ],
        ),
        case(
            "pname_of_local_processes",
            "pname(curl, systemd-resolved) -> block\n!pname(NetworkManager) && l4proto(udp) -> proxy",
            vec![
                check("listed process", WAN, block()),
                check("long name kept to 15 bytes", Packet { pname: Some("systemd-resolve"), ..WAN }, block()),
                check("excluded process", Packet { pname: Some("NetworkManager"), l4: L4::Udp, ..WAN }, direct()),
                check("other process", Packet { pname: Some("wget"), l4: L4::Udp, ..WAN }, group("proxy")),
                check("no process (LAN-in)", Packet { l4: L4::Udp, ..LAN }, group("proxy")),
            ],
        ),
        case(
            "dscp_values",
            "dscp(0x4) -> direct(mark: 0x800)\ndscp(46, 8) -> proxy",
            vec![
                check("hex value", Packet { dscp: 4, ..LAN }, marked(direct(), 0x800)),
                check("decimal value", Packet { dscp: 46, ..LAN }, group("proxy")),
                check("unlisted", LAN, direct()),
            ],
        ),
    ]
}

/// `interface(...)`: zone × direction × presence of the link.
fn interface_cases() -> Vec<GoldenCase> {
    let wan = |name| Packet { interface: name, ..WAN };
    let lan = |name| Packet { interface: name, ..LAN };
    vec![
        case(
            "lan_interface_matches_only_lan_ingress",
            "interface(lan: lan0) -> block",
            vec![
                check("LAN-in on lan0", lan(Some("lan0")), block()),
                check("LAN-in on lan1", lan(Some("lan1")), direct()),
                check("LAN-in, link absent", lan(None), direct()),
                check("WAN-out on wan0", wan(Some("wan0")), direct()),
                check("WAN-out named lan0", wan(Some("lan0")), direct()),
            ],
        ),
        case(
            "negated_lan_interface_matches_other_lan_ingress_only",
            "!interface(lan: lan0) -> block",
            vec![
                check("LAN-in on lan0", lan(Some("lan0")), direct()),
                check("LAN-in on lan1", lan(Some("lan1")), block()),
                check("LAN-in, link absent", lan(None), block()),
                check("WAN-out on wan0", wan(Some("wan0")), direct()),
                check("WAN-out, link absent", wan(None), direct()),
            ],
        ),
        case(
            "wan_interface_matches_only_wan_egress",
            "interface(wan: wan0) -> block",
            vec![
                check("WAN-out on wan0", wan(Some("wan0")), block()),
                check("WAN-out on wan1", wan(Some("wan1")), direct()),
                check("WAN-out, link absent", wan(None), direct()),
                check("LAN-in on lan0", lan(Some("lan0")), direct()),
                check("LAN-in named wan0", lan(Some("wan0")), direct()),
            ],
        ),
        case(
            "negated_wan_interface_matches_other_wan_egress_only",
            "!interface(wan: wan0) -> block",
            vec![
                check("WAN-out on wan0", wan(Some("wan0")), direct()),
                check("WAN-out on wan1", wan(Some("wan1")), block()),
                check("WAN-out, link absent", wan(None), block()),
                check("LAN-in on lan1", lan(Some("lan1")), direct()),
                check("LAN-in, link absent", lan(None), direct()),
            ],
        ),
        case(
            "both_zones_in_one_term",
            "interface(lan: lan0, wan: wan0) -> block\n!interface(LAN: lan0, WAN: wan0) -> proxy",
            vec![
                check("LAN-in on lan0", lan(Some("lan0")), block()),
                check("WAN-out on wan0", wan(Some("wan0")), block()),
                check("LAN-in on lan1", lan(Some("lan1")), group("proxy")),
                check("WAN-out on wan1", wan(Some("wan1")), group("proxy")),
                check("LAN-in named wan0", lan(Some("wan0")), group("proxy")),
                check("WAN-out named lan0", wan(Some("lan0")), group("proxy")),
            ],
        ),
        case(
            "keyless_values_inherit_the_zone",
            "interface(lan: lan0, lan1) -> block",
            vec![
                check("LAN-in on lan0", lan(Some("lan0")), block()),
                check("LAN-in on lan1", lan(Some("lan1")), block()),
                check("WAN-out on wan0", wan(Some("wan0")), direct()),
            ],
        ),
        GoldenCase {
            name: "configured_name_without_a_link_matches_nothing",
            lan_interfaces: &["lan*"],
            wan_interfaces: &["auto"],
            groups: PROXY,
            routing: "interface(lan: lan9) -> block\n!interface(lan: lan9) && dport(443) -> proxy\ninterface(wan: ppp0) -> must_direct",
            checks: vec![
                check("LAN-in on lan0", lan(Some("lan0")), group("proxy")),
                check("LAN-in, link absent", lan(None), group("proxy")),
                check("WAN-out on wan0", wan(Some("wan0")), direct()),
                check("WAN-out on ppp0 (auto WAN)", wan(Some("ppp0")), must(direct())),
            ],
        },
        case(
            "interface_with_other_terms",
            "interface(lan: lan1) && l4proto(udp) -> block\n!interface(wan: wan1) && pname(curl) -> proxy",
            vec![
                check("UDP on lan1", Packet { interface: Some("lan1"), l4: L4::Udp, ..LAN }, block()),
                check("TCP on lan1", lan(Some("lan1")), direct()),
                check("curl on wan0", wan(Some("wan0")), group("proxy")),
                check("curl on wan1", wan(Some("wan1")), direct()),
            ],
        ),
    ]
}
