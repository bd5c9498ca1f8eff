//! The userspace matcher agrees with the reference evaluation on generated rule sets and packets: every
//! function, negation, interface zones and directions, `must_rules`, marks and DNS port 53. Values come from
//! small pools so rules and packets collide often.

use std::net::IpAddr;

use config::rules::geodata::to_ipnet;
use config::rules::{
    Action, Compiled, DomainSet, InterfaceName, IpNet, IpVersions, L4, L4Protos, Matcher, Outbound, Packet,
    PacketDirection, PortRange, Rule, RuleSet, Target, Term, Zone, reference,
};
use proptest::prelude::*;

const ADDRS: &[&str] = &[
    "10.0.0.1",
    "10.0.1.255",
    "10.1.2.3",
    "192.168.1.2",
    "8.8.8.8",
    "0.0.0.0",
    "255.255.255.255",
    "2001:db8::1",
    "fd00::5",
    "::1",
    "ffff::",
];
const NET_BASES: &[&str] =
    &["10.0.0.0", "10.0.1.7", "10.1.0.0", "192.168.1.2", "0.0.0.0", "8.8.8.8", "2001:db8::", "fd00::5", "::"];
const PREFIXES: &[u8] = &[0, 1, 8, 16, 24, 31, 32, 64, 127, 128];
const PORTS: &[u16] = &[0, 52, 53, 54, 80, 443, 65535];
const MACS: &[[u8; 6]] = &[[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [0xff; 6]];
const PNAMES: &[&str] = &["curl", "wget", "a"];
const DSCPS: &[u8] = &[0, 4, 46, 63, 200];
const IFNAMES: &[&str] = &["lan0", "lan1", "wan0", "x"];
const NAMES: &[&str] = &["example.com", "www.example.com", "a.b", "badexample.com", "", "x.com.", "a..example.com"];
const SUFFIXES: &[&str] = &["example.com", "com", "", "b"];
const FULLS: &[&str] = &["example.com", "a.b", ""];
const KEYWORDS: &[&str] = &["exa", "b", "", ".."];
const REGEXES: &[&str] = &["^a", "com$", "(", r"\.b$"];

fn pick<T: Clone + std::fmt::Debug + 'static>(pool: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(pool)
}

fn subset(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(pick(pool).prop_map(str::to_owned), 0..3)
}

fn net() -> impl Strategy<Value = IpNet> {
    (pick(NET_BASES), pick(PREFIXES)).prop_map(|(base, prefix)| {
        let addr: IpAddr = base.parse().unwrap();
        let prefix = if addr.is_ipv4() { prefix.min(32) } else { prefix };
        to_ipnet(addr, prefix).unwrap()
    })
}

fn port_range() -> impl Strategy<Value = PortRange> {
    (pick(PORTS), pick(PORTS)).prop_map(|(a, b)| PortRange { start: a.min(b), end: a.max(b) })
}

fn matcher() -> impl Strategy<Value = Matcher> {
    prop_oneof![
        (subset(SUFFIXES), subset(FULLS), subset(KEYWORDS), subset(REGEXES))
            .prop_map(|(suffix, full, keyword, regex)| Matcher::Domain(DomainSet { suffix, full, keyword, regex })),
        proptest::collection::vec(net(), 0..4).prop_map(Matcher::DstIp),
        proptest::collection::vec(net(), 0..4).prop_map(Matcher::SrcIp),
        proptest::collection::vec(port_range(), 0..3).prop_map(Matcher::DstPort),
        proptest::collection::vec(port_range(), 0..3).prop_map(Matcher::SrcPort),
        (any::<bool>(), any::<bool>()).prop_map(|(tcp, udp)| Matcher::L4Proto(L4Protos { tcp, udp })),
        (any::<bool>(), any::<bool>()).prop_map(|(v4, v6)| Matcher::IpVersion(IpVersions { v4, v6 })),
        proptest::collection::vec(pick(MACS), 0..3).prop_map(Matcher::Mac),
        proptest::collection::vec(pick(PNAMES).prop_map(str::to_owned), 0..3).prop_map(Matcher::ProcessName),
        proptest::collection::vec(pick(DSCPS).prop_map(|d| d.min(63)), 0..3).prop_map(Matcher::Dscp),
        proptest::collection::vec(
            (any::<bool>(), pick(IFNAMES)).prop_map(|(lan, name)| InterfaceName {
                zone: if lan { Zone::Lan } else { Zone::Wan },
                name: name.to_owned(),
            }),
            0..3
        )
        .prop_map(Matcher::Interface),
    ]
}

fn outbound() -> impl Strategy<Value = Outbound> {
    (0..3u8, any::<bool>(), pick(&[0u32, 1, 0x800][..])).prop_map(|(target, must, mark)| Outbound {
        target: match target {
            0 => Target::Direct,
            1 => Target::Block,
            _ => Target::Group("g".into()),
        },
        must,
        mark,
    })
}

fn rule() -> impl Strategy<Value = Rule> {
    let term = (any::<bool>(), matcher()).prop_map(|(negated, matcher)| Term { negated, matcher, span: None });
    let action = prop_oneof![1 => Just(Action::MustRules), 6 => outbound().prop_map(Action::Outbound)];
    (proptest::collection::vec(term, 1..4), action).prop_map(|(terms, action)| Rule { terms, action, span: None })
}

fn rule_set(max_rules: usize) -> impl Strategy<Value = RuleSet> {
    (proptest::collection::vec(rule(), 0..max_rules), outbound())
        .prop_map(|(rules, fallback)| RuleSet { rules, fallback })
}

/// A packet's owned parts (a [`Packet`] borrows its names).
#[derive(Debug, Clone)]
struct OwnedPacket {
    lan: bool,
    interface: Option<&'static str>,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    udp: bool,
    dscp: u8,
    mac: Option<[u8; 6]>,
    pname: Option<&'static str>,
    domains: Vec<&'static str>,
}

impl OwnedPacket {
    fn packet(&self) -> Packet<'_> {
        Packet {
            direction: if self.lan { PacketDirection::LanIn } else { PacketDirection::WanOut },
            interface: self.interface,
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
            l4: if self.udp { L4::Udp } else { L4::Tcp },
            dscp: self.dscp,
            mac: self.mac,
            pname: self.pname,
            domains: &self.domains,
        }
    }
}

fn packet() -> impl Strategy<Value = OwnedPacket> {
    let addr = || pick(ADDRS).prop_map(|a| a.parse::<IpAddr>().unwrap());
    (
        (any::<bool>(), proptest::option::of(pick(IFNAMES)), addr(), addr(), pick(PORTS), pick(PORTS)),
        (any::<bool>(), pick(DSCPS), proptest::option::of(pick(MACS)), proptest::option::of(pick(PNAMES))),
        proptest::collection::vec(pick(NAMES), 0..3),
    )
        .prop_map(|((lan, interface, src, dst, sport, dport), (udp, dscp, mac, pname), domains)| OwnedPacket {
            lan,
            interface,
            src,
            dst,
            sport,
            dport,
            udp,
            dscp,
            mac,
            pname,
            domains,
        })
}

fn agree(rules: &RuleSet, packets: &[OwnedPacket]) -> Result<(), TestCaseError> {
    let compiled = Compiled::new(rules);
    for owned in packets {
        let packet = owned.packet();
        prop_assert_eq!(compiled.route(&packet), reference::route(rules, &packet), "packet {:?}", owned);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn compiled_matcher_agrees_with_reference_on_small_rule_sets(
        rules in rule_set(12),
        packets in proptest::collection::vec(packet(), 24),
    ) {
        agree(&rules, &packets)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Past 64 rules the bitsets span several words; the first match may sit in any of them.
    #[test]
    fn compiled_matcher_agrees_with_reference_past_one_bitset_word(
        rules in rule_set(200),
        packets in proptest::collection::vec(packet(), 64),
    ) {
        agree(&rules, &packets)?;
    }
}

/// The benchmark mix's 8,000-prefix set makes the IPv4 tables large enough for their /16 index; probe random
/// addresses and the edges of every prefix.
#[test]
fn compiled_matcher_agrees_with_reference_on_large_address_sets() {
    let loaded = config::load_str("mix.dae", &config::rules::bench_mix(10)).unwrap();
    let rules = config::rules::lower(&loaded.config, &config::rules::Assets::none()).unwrap().rules;
    let compiled = Compiled::new(&rules);
    let mut probes: Vec<u32> = vec![0, u32::MAX, 1 << 16, (1 << 16) - 1];
    for rule in &rules.rules {
        if let Matcher::DstIp(nets) = &rule.terms[0].matcher {
            for net in nets.iter().step_by(7) {
                let IpAddr::V4(start) = net.addr else { continue };
                let start = u32::from(start);
                let end = start | (u32::MAX >> net.prefix);
                probes.extend([start, end, start.wrapping_sub(1), end.wrapping_add(1)]);
            }
        }
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    probes.extend((0..2000).map(|_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u32
    }));
    let mut packet = config::rules::bench_packet();
    for dst in probes {
        packet.dst = IpAddr::V4(dst.into());
        assert_eq!(compiled.route(&packet), reference::route(&rules, &packet), "dst {}", packet.dst);
    }
}
