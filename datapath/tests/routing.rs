//! The kernel routing engine against the reference semantics: hand-written cases for every rule feature and a
//! differential property test (generated rule sets × generated packets: the kernel's decision, obtained with
//! BPF_PROG_TEST_RUN of `route_probe`, equals `config::rules::reference::route`). Needs root.

use std::net::IpAddr;

use aya::programs::{Program, SchedClassifier, TestRun, TestRunOptions, Xdp};
use bench_lab::{packet::Spec, skip_unless_root};
use config::rules::{
    Action, DomainSet, InterfaceName, IpNet, IpVersions, L4, L4Protos, Matcher, Outbound, Packet, PacketDirection,
    PortRange, Rule, RuleSet, Target, Term, Verdict, Zone, reference,
};
use datapath::{
    links::{Framing, Link, LinkCache},
    maps::Maps,
    object::{self, Loaded},
    routing::{RouteMaps, Router, compile},
};
use datapath_abi::{
    Admission, Direction,
    gate::GATE_OPEN,
    names::{PROG_ROUTE_PROBE, PROG_XDP_LAN_L2},
    route::{ACTION_MUST, RouteProbe, outbound},
};
use proptest::prelude::*;

const GROUPS: [&str; 3] = ["proxy", "hk", "us"];
/// Interfaces the tests name, with the index the fake link table gives them.
const LINKS: [(&str, u32); 4] = [("lan0", 11), ("lan1", 12), ("wan0", 21), ("wan1", 22)];
/// An interface index no name resolves to.
const UNKNOWN_IFINDEX: u32 = 99;

struct Engine {
    loaded: Loaded,
    _maps: Maps,
    router: Router,
    links: LinkCache,
    names: Vec<(String, u32)>,
    groups: Vec<String>,
}

impl Engine {
    fn new() -> Self {
        Self::with(&LINKS, &GROUPS)
    }

    /// An engine whose fake link table holds `links` and whose gateway has `groups`.
    fn with(links: &[(&str, u32)], groups: &[&str]) -> Self {
        let mut loaded = object::load(64).expect("object loads");
        let mut maps = Maps::take(&mut loaded.ebpf, None).unwrap();
        // XDP evaluates nothing behind a closed gate.
        maps.set_gate(Admission {
            state: GATE_OPEN,
            lease_until: u64::MAX,
            ticks_per_sec: 250,
            ..Admission::default()
        })
        .unwrap();
        let router = Router::new(RouteMaps::take(&mut loaded.ebpf).unwrap());
        let cache = LinkCache::new();
        for (name, index) in links {
            cache.upsert(Link {
                index: *index,
                name: (*name).into(),
                up: true,
                framing: Framing::Ethernet,
                xdp_prog_id: None,
            });
        }
        Self {
            loaded,
            _maps: maps,
            router,
            links: cache,
            names: links.iter().map(|(n, i)| (n.to_string(), *i)).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    /// Whether XDP on a LAN interface drops `packet` (only meaningful for LAN-in packets).
    fn xdp_drops(&mut self, packet: &Packet<'_>) -> bool {
        let frame = frame_of(packet);
        let Some(Program::Xdp(p)) = self.loaded.ebpf.program_mut(PROG_XDP_LAN_L2) else { unreachable!() };
        let mut out = vec![0u8; frame.len() + 64];
        let opts = TestRunOptions { data_in: Some(&frame), data_out: Some(&mut out), ..Default::default() };
        let verdict = <Xdp as TestRun>::test_run(p, opts).unwrap().return_value;
        assert!(verdict == XDP_DROP || verdict == XDP_PASS, "XDP verdict {verdict}");
        verdict == XDP_DROP
    }

    fn publish(&mut self, rules: &RuleSet) {
        let compiled = compile(rules, &self.groups).expect("compiles");
        self.router.publish(compiled, &self.links.snapshot()).expect("publishes");
    }

    /// The kernel's verdict for `packet`.
    fn route(&mut self, packet: &Packet<'_>) -> Verdict {
        let ifindex = match packet.interface {
            Some(name) => self.names.iter().find(|(n, _)| n == name).map_or(UNKNOWN_IFINDEX, |(_, i)| *i),
            None => UNKNOWN_IFINDEX,
        };
        let direction = match packet.direction {
            PacketDirection::LanIn => Direction::LanIn,
            PacketDirection::WanOut => Direction::WanOut,
        };
        let comm = packet.pname.map(datapath_abi::route::comm_of).unwrap_or_default();
        let probe = RouteProbe { direction: direction as u8, ifindex, comm, ..RouteProbe::default() };
        self.router.probe().set(0, probe, 0).unwrap();
        let frame = frame_of(packet);
        let Some(Program::SchedClassifier(p)) = self.loaded.ebpf.program_mut(PROG_ROUTE_PROBE) else { unreachable!() };
        <SchedClassifier as TestRun>::test_run(p, TestRunOptions { data_in: Some(&frame), ..Default::default() })
            .unwrap();
        let action = self.router.probe().get(&0, 0).unwrap().action;
        let target = match action.outbound {
            outbound::DNS => return Verdict::Dns,
            outbound::DIRECT => Target::Direct,
            outbound::BLOCK => Target::Block,
            id => Target::Group(self.groups[usize::from(id - outbound::GROUP_BASE)].clone()),
        };
        Verdict::Outbound(Outbound { target, must: action.flags & ACTION_MUST != 0, mark: action.mark })
    }
}

#[test]
fn the_golden_table_of_dae_semantics_holds_in_the_kernel() {
    if skip_unless_root("the_golden_table_of_dae_semantics_holds_in_the_kernel") {
        return;
    }
    let (mut checked, mut skipped) = (0, 0);
    for case in config::rules::golden::cases() {
        let links: Vec<(&str, u32)> = case.links().into_iter().enumerate().map(|(i, n)| (n, 10 + i as u32)).collect();
        let mut engine = Engine::with(&links, case.groups);
        let rules = case.rule_set();
        engine.publish(&rules);
        for check in &case.checks {
            // A source and destination of different families is not a packet a wire carries.
            if check.packet.src.is_ipv4() != check.packet.dst.is_ipv4() {
                skipped += 1;
                continue;
            }
            let addr = match check.packet.dst {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            engine.router.set_domains(addr, check.packet.domains.iter().map(|d| d.to_string()).collect()).unwrap();
            assert_eq!(engine.route(&check.packet), check.expected, "{}: {}", case.name, check.what);
            checked += 1;
        }
    }
    eprintln!("golden: {checked} checks agree in the kernel; {skipped} mixed-family checks skipped");
    assert!(checked > 50, "the table is not empty");
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// The Ethernet frame of a packet.
fn frame_of(packet: &Packet<'_>) -> Vec<u8> {
    let mut spec = match packet.l4 {
        L4::Udp => Spec::udp(&packet.src.to_string(), packet.sport, &packet.dst.to_string(), packet.dport),
        L4::Tcp => Spec::tcp(&packet.src.to_string(), packet.sport, &packet.dst.to_string(), packet.dport, 0x02),
    };
    spec.dscp = packet.dscp;
    spec.src_mac = packet.mac.unwrap_or([0x02, 0xEE, 0, 0, 0, 0xEE]);
    spec.build()
}

#[test]
fn xdp_drops_only_what_leading_address_only_rules_block() {
    if skip_unless_root("xdp_drops_only_what_leading_address_only_rules_block") {
        return;
    }
    let mut engine = Engine::new();
    let rules = RuleSet {
        rules: vec![
            Rule {
                terms: vec![term(Matcher::DstIp(vec![net("192.0.2.0/24")]))],
                action: to(Target::Block),
                span: None,
            },
            Rule {
                terms: vec![
                    term(Matcher::SrcIp(vec![net("10.9.0.0/16")])),
                    not(Matcher::DstIp(vec![net("192.0.2.0/24")])),
                ],
                action: to(group("proxy")),
                span: None,
            },
            Rule {
                terms: vec![term(Matcher::DstPort(vec![PortRange { start: 80, end: 80 }]))],
                action: to(group("hk")),
                span: None,
            },
            Rule {
                terms: vec![term(Matcher::DstIp(vec![net("198.51.100.0/24")]))],
                action: to(Target::Block),
                span: None,
            },
        ],
        fallback: Outbound::direct(),
    };
    engine.publish(&rules);
    let lan = |dst: &str, dport: u16| packet(PacketDirection::LanIn, Some("lan0"), dst, dport);
    assert!(engine.xdp_drops(&lan("192.0.2.5", 443)), "the first rule blocks by address: dropped in XDP");
    assert!(!engine.xdp_drops(&lan("192.0.2.5", 53)), "DNS is the forwarder's unless must");
    assert!(!engine.xdp_drops(&lan("198.51.100.5", 443)), "behind a port rule: tc decides");
    assert!(!engine.xdp_drops(&lan("203.0.113.1", 443)), "no address rule matches: tc decides");
    // tc agrees on everything XDP drops, and decides the rest.
    for p in [lan("192.0.2.5", 443), lan("198.51.100.5", 443), lan("203.0.113.1", 80)] {
        assert_eq!(engine.route(&p), reference::route(&rules, &p));
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    let (a, p) = s.split_once('/').unwrap();
    IpNet { addr: ip(a), prefix: p.parse().unwrap() }
}

fn term(matcher: Matcher) -> Term {
    Term { negated: false, matcher, span: None }
}

fn not(matcher: Matcher) -> Term {
    Term { negated: true, matcher, span: None }
}

fn to(target: Target) -> Action {
    Action::Outbound(Outbound { target, must: false, mark: 0 })
}

fn group(name: &str) -> Target {
    Target::Group(name.to_string())
}

fn packet<'a>(direction: PacketDirection, interface: Option<&'a str>, dst: &str, dport: u16) -> Packet<'a> {
    Packet {
        direction,
        interface,
        src: if dst.contains(':') { ip("fd00::2") } else { ip("10.0.0.2") },
        dst: ip(dst),
        sport: 40000,
        dport,
        l4: L4::Tcp,
        dscp: 0,
        mac: None,
        pname: None,
        domains: &[],
    }
}

#[test]
fn hand_written_cases_agree_with_the_reference() {
    if skip_unless_root("hand_written_cases_agree_with_the_reference") {
        return;
    }
    let mut engine = Engine::new();
    let iface = |zone, name: &str| InterfaceName { zone, name: name.to_string() };
    let rules = RuleSet {
        rules: vec![
            // must_rules marks and continues.
            Rule {
                terms: vec![term(Matcher::DstPort(vec![PortRange { start: 853, end: 853 }]))],
                action: Action::MustRules,
                span: None,
            },
            Rule {
                terms: vec![term(Matcher::DstIp(vec![net("192.0.2.0/24")]))],
                action: to(Target::Block),
                span: None,
            },
            Rule {
                terms: vec![
                    term(Matcher::DstIp(vec![net("198.51.100.0/24"), net("2001:db8::/32")])),
                    not(Matcher::DstPort(vec![PortRange { start: 443, end: 443 }])),
                ],
                action: Action::Outbound(Outbound { target: Target::Direct, must: false, mark: 0x800 }),
                span: None,
            },
            Rule {
                terms: vec![term(Matcher::Interface(vec![iface(Zone::Lan, "lan1")]))],
                action: to(group("hk")),
                span: None,
            },
            Rule {
                terms: vec![not(Matcher::Interface(vec![iface(Zone::Lan, "lan0"), iface(Zone::Wan, "wan0")]))],
                action: to(group("us")),
                span: None,
            },
            Rule {
                terms: vec![term(Matcher::Interface(vec![iface(Zone::Lan, "lan9-absent")]))],
                action: to(Target::Block),
                span: None,
            },
            Rule {
                terms: vec![
                    term(Matcher::L4Proto(L4Protos { tcp: false, udp: true })),
                    term(Matcher::IpVersion(IpVersions { v4: false, v6: true })),
                ],
                action: to(Target::Block),
                span: None,
            },
            Rule {
                terms: vec![term(Matcher::Dscp(vec![46]))],
                action: Action::Outbound(Outbound { target: group("proxy"), must: true, mark: 7 }),
                span: None,
            },
        ],
        fallback: Outbound { target: group("proxy"), must: false, mark: 0 },
    };
    engine.publish(&rules);
    use PacketDirection::{LanIn, WanOut};
    let mut cases = vec![
        packet(LanIn, Some("lan0"), "192.0.2.9", 80),
        packet(LanIn, Some("lan0"), "198.51.100.7", 80),
        packet(LanIn, Some("lan0"), "198.51.100.7", 443),
        packet(LanIn, Some("lan0"), "2001:db8::1", 22),
        packet(LanIn, Some("lan1"), "203.0.113.1", 80),
        packet(LanIn, Some("lan0"), "203.0.113.1", 80),
        packet(LanIn, None, "203.0.113.1", 80),
        packet(WanOut, Some("wan0"), "203.0.113.1", 80),
        packet(WanOut, Some("wan1"), "203.0.113.1", 80),
        packet(LanIn, Some("lan0"), "203.0.113.1", 853),
        packet(LanIn, Some("lan0"), "203.0.113.1", 53),
        packet(LanIn, Some("lan0"), "2001:db9::1", 53),
        packet(WanOut, Some("wan0"), "2001:db9::1", 80),
    ];
    let mut udp6 = packet(WanOut, Some("wan0"), "2001:db9::1", 5000);
    udp6.l4 = L4::Udp;
    cases.push(udp6);
    let mut ef = packet(WanOut, Some("wan0"), "203.0.113.1", 53);
    ef.dscp = 46;
    cases.push(ef);
    for p in &cases {
        assert_eq!(engine.route(p), reference::route(&rules, p), "{p:?}");
    }
    // Spot checks that the reference says what dae says.
    assert_eq!(
        reference::route(&rules, &cases[0]),
        Verdict::Outbound(Outbound { target: Target::Block, must: false, mark: 0 })
    );
    assert_eq!(
        reference::route(&rules, &cases[1]),
        Verdict::Outbound(Outbound { target: Target::Direct, must: false, mark: 0x800 })
    );
    assert_eq!(reference::route(&rules, &cases[10]), Verdict::Dns);
    assert!(matches!(reference::route(&rules, &cases[9]), Verdict::Outbound(Outbound { must: true, .. })));
}

#[test]
fn domains_learned_from_dns_route_the_following_connections() {
    if skip_unless_root("domains_learned_from_dns_route_the_following_connections") {
        return;
    }
    let mut engine = Engine::new();
    let set = DomainSet { suffix: vec!["example.com".into()], ..DomainSet::default() };
    let rules = RuleSet {
        rules: vec![
            Rule { terms: vec![term(Matcher::Domain(set.clone()))], action: to(group("proxy")), span: None },
            Rule {
                terms: vec![not(Matcher::Domain(DomainSet { full: vec!["a.test".into()], ..DomainSet::default() }))],
                action: to(group("us")),
                span: None,
            },
        ],
        fallback: Outbound::direct(),
    };
    engine.publish(&rules);
    let addr = |s: &str| match ip(s) {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    engine.router.set_domains(addr("203.0.113.5"), vec!["www.example.com".into()]).unwrap();
    engine.router.set_domains(addr("203.0.113.6"), vec!["a.test".into()]).unwrap();
    for (dst, names) in
        [("203.0.113.5", vec!["www.example.com"]), ("203.0.113.6", vec!["a.test"]), ("203.0.113.7", vec![])]
    {
        let mut p = packet(PacketDirection::LanIn, Some("lan0"), dst, 443);
        p.domains = &names;
        assert_eq!(engine.route(&p), reference::route(&rules, &p), "{dst}");
    }
    // A reload republishes what DNS taught into the new bank.
    engine.publish(&rules);
    let mut p = packet(PacketDirection::LanIn, Some("lan0"), "203.0.113.5", 443);
    let names = ["www.example.com"];
    p.domains = &names;
    assert_eq!(engine.route(&p), Verdict::Outbound(Outbound { target: group("proxy"), must: false, mark: 0 }));
}

// ---- differential property test ----

const DSTS: [&str; 6] = ["10.1.2.3", "10.1.200.1", "192.0.2.77", "2001:db8::5", "2001:db8:1::9", "fd00:5::1"];
const NETS: [&str; 8] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "192.0.2.0/25",
    "0.0.0.0/0",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "::/0",
];
const MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 0xA], [2, 0, 0, 0, 0, 0xB]];
const NAMES: [&str; 3] = ["www.example.com", "example.org", "news.site.test"];

fn arb_matcher() -> impl Strategy<Value = Matcher> {
    let nets = prop::collection::vec(prop::sample::select(NETS.to_vec()), 1..3)
        .prop_map(|v| v.iter().map(|n| net(n)).collect());
    let ports = prop::collection::vec((0u16..70, 0u16..5), 1..3).prop_map(|v| {
        v.into_iter()
            .map(|(s, len)| {
                let start = (u32::from(s) * 1000 % 65000) as u16;
                PortRange { start, end: start + len }
            })
            .collect::<Vec<_>>()
    });
    let zone = prop::sample::select(vec![Zone::Lan, Zone::Wan]);
    let ifaces =
        prop::collection::vec((zone, prop::sample::select(vec!["lan0", "lan1", "wan0", "wan1", "gone0"])), 1..3)
            .prop_map(|v| v.into_iter().map(|(zone, name)| InterfaceName { zone, name: name.to_string() }).collect());
    prop_oneof![
        nets.clone().prop_map(Matcher::DstIp),
        nets.prop_map(Matcher::SrcIp),
        ports.clone().prop_map(Matcher::DstPort),
        ports.prop_map(Matcher::SrcPort),
        (any::<bool>(), any::<bool>()).prop_map(|(tcp, udp)| Matcher::L4Proto(L4Protos { tcp, udp })),
        (any::<bool>(), any::<bool>()).prop_map(|(v4, v6)| Matcher::IpVersion(IpVersions { v4, v6 })),
        prop::collection::vec(0u8..4, 1..3).prop_map(|v| Matcher::Dscp(v.into_iter().map(|d| d * 10).collect())),
        prop::collection::vec(prop::sample::select(MACS.to_vec()), 1..2).prop_map(Matcher::Mac),
        ifaces.prop_map(Matcher::Interface),
        prop::sample::select(vec!["example.com", "org", "site"])
            .prop_map(|s| Matcher::Domain(DomainSet { suffix: vec![s.to_string()], ..DomainSet::default() })),
        prop::collection::vec(prop::sample::select(vec!["curl", "mosdns", "systemd-resolve"]), 1..3)
            .prop_map(|v| Matcher::ProcessName(v.into_iter().map(str::to_string).collect())),
    ]
}

fn arb_outbound() -> impl Strategy<Value = Outbound> {
    (0usize..5, any::<bool>(), prop::sample::select(vec![0u32, 0x800])).prop_map(|(t, must, mark)| {
        let target = match t {
            0 => Target::Direct,
            1 => Target::Block,
            i => Target::Group(GROUPS[i - 2].to_string()),
        };
        Outbound { target, must, mark }
    })
}

fn arb_rules() -> impl Strategy<Value = RuleSet> {
    let rule = (
        prop::collection::vec(
            (any::<bool>(), arb_matcher()).prop_map(|(negated, matcher)| Term { negated, matcher, span: None }),
            1..4,
        ),
        prop_oneof![4 => arb_outbound().prop_map(Action::Outbound), 1 => Just(Action::MustRules)],
    )
        .prop_map(|(terms, action)| Rule { terms, action, span: None });
    (prop::collection::vec(rule, 0..24), arb_outbound()).prop_map(|(rules, fallback)| RuleSet { rules, fallback })
}

#[derive(Debug, Clone)]
struct PacketSpec {
    direction: PacketDirection,
    interface: Option<&'static str>,
    dst: usize,
    sport: u16,
    dport: u16,
    udp: bool,
    dscp: u8,
    mac: Option<[u8; 6]>,
    pname: Option<&'static str>,
}

fn arb_packet() -> impl Strategy<Value = PacketSpec> {
    (
        prop::sample::select(vec![PacketDirection::LanIn, PacketDirection::WanOut]),
        prop::option::of(prop::sample::select(vec!["lan0", "lan1", "wan0", "wan1"])),
        0..DSTS.len(),
        prop::sample::select(vec![0u16, 1000, 1003, 5000, 40000]),
        prop::sample::select(vec![53u16, 80, 1000, 2002, 64000]),
        any::<bool>(),
        prop::sample::select(vec![0u8, 10, 20, 30]),
        prop::option::of(prop::sample::select(MACS.to_vec())),
        prop::option::of(prop::sample::select(vec!["curl", "mosdns", "nginx"])),
    )
        .prop_map(|(direction, interface, dst, sport, dport, udp, dscp, mac, pname)| PacketSpec {
            direction,
            interface,
            dst,
            sport,
            dport,
            udp,
            dscp,
            mac: if direction == PacketDirection::LanIn { mac } else { None },
            // Only gateway-originated packets have a socket whose creator the kernel knows.
            pname: if direction == PacketDirection::WanOut { pname } else { None },
        })
}

#[test]
fn kernel_and_reference_agree_on_generated_rules_and_packets() {
    if skip_unless_root("kernel_and_reference_agree_on_generated_rules_and_packets") {
        return;
    }
    let engine = std::cell::RefCell::new(Engine::new());
    let addr_of = |s: &str| match ip(s) {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    // Every destination is known by one name (the first two) or none, for domain rules.
    let known: Vec<Vec<&str>> =
        DSTS.iter().enumerate().map(|(i, _)| if i < NAMES.len() { vec![NAMES[i]] } else { vec![] }).collect();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 256, ..ProptestConfig::default() });
    runner
        .run(&(arb_rules(), prop::collection::vec(arb_packet(), 16)), |(rules, packets)| {
            let mut engine = engine.borrow_mut();
            engine.publish(&rules);
            for (i, names) in known.iter().enumerate() {
                if !names.is_empty() {
                    engine.router.set_domains(addr_of(DSTS[i]), names.iter().map(|s| s.to_string()).collect()).unwrap();
                }
            }
            for spec in &packets {
                let dst = ip(DSTS[spec.dst]);
                let p = Packet {
                    direction: spec.direction,
                    interface: spec.interface,
                    src: if dst.is_ipv4() { ip("10.1.2.99") } else { ip("2001:db8::99") },
                    dst,
                    sport: spec.sport,
                    dport: spec.dport,
                    l4: if spec.udp { L4::Udp } else { L4::Tcp },
                    dscp: spec.dscp,
                    mac: spec.mac,
                    pname: spec.pname,
                    domains: &known[spec.dst],
                };
                let expected = reference::route(&rules, &p);
                prop_assert_eq!(engine.route(&p), expected.clone(), "packet {:?}", p);
                if p.direction == PacketDirection::LanIn && engine.xdp_drops(&p) {
                    prop_assert!(
                        matches!(expected, Verdict::Outbound(Outbound { target: Target::Block, .. })),
                        "XDP dropped a packet the rules do not block: {:?}",
                        p
                    );
                }
            }
            Ok(())
        })
        .unwrap();
}
