//! The kernel routing engine under BPF_PROG_TEST_RUN, net of the empty tc program measured beside it.
//!
//! - `route_miss_ns_net_{10,100,1000}`: a flow's first packet, which is routed (`route_probe`: parse + route,
//!   no flow table), at dae's rule-mix sizes counted in dae's match sets.
//! - `route_hit_ns_net_100`: every later packet of a flow (the tc LAN program with 100 match sets published:
//!   flow lookup, refresh, decision applied).
//! - `route_compile_ms_1000`: compiling the 1000-match-set mix for the kernel, baseline the 100 mix.
//!
//! The mix (issue 3, comparable with dae's figure of ~4,800 ns for its LAN-ingress program on the 100 mix):
//! 30 `dip` sets (one of 8,000 prefixes, the rest 20-200 each), 10 `dport` rules of 5 ports, 10
//! `l4proto && ipversion` rules, then the fallback; scaled by 1/10 and 10 for the other sizes. The packet (TCP,
//! IPv4, 64 bytes) matches none of them.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use aya::programs::{Program, SchedClassifier, TestRun, TestRunOptions};
use bench_lab::packet::Spec;
use config::rules::{Action, IpNet, IpVersions, L4Protos, Matcher, Outbound, PortRange, Rule, RuleSet, Target, Term};
use datapath::{
    links::LinkCache,
    maps::Maps,
    object,
    routing::{RouteMaps, Router, compile},
};
use datapath_abi::{
    Admission, Direction,
    gate::GATE_OPEN,
    names::{PROG_BENCH_EMPTY_TC, PROG_ROUTE_PROBE, PROG_TC_LAN_INGRESS_L2},
    route::RouteProbe,
};

use crate::report::{Figure, median};

const ROUNDS: usize = 9;
const REPEAT: u32 = 200_000;

/// A pseudo-random generator good enough to spread prefixes (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn term(matcher: Matcher) -> Term {
    Term { negated: false, matcher, span: None }
}

/// The mix for `match_sets` of dae's match sets (10, 100 or 1000).
pub fn mix(match_sets: usize) -> RuleSet {
    let scale = match_sets / 100;
    let scale_up = |n: usize| if match_sets < 100 { n / 10 } else { n * scale };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut prefixes = |count: usize| -> Vec<IpNet> {
        (0..count)
            .map(|_| {
                let len = 16 + (rng.next() % 9) as u8;
                // 1.0.0.0 - 126.255.255.255: never the test packet's 203.0.113.1.
                let raw = ((1 + rng.next() % 126) << 24 | (rng.next() & 0x00FF_FFFF)) as u32;
                let addr = Ipv4Addr::from(raw & (u32::MAX << (32 - u32::from(len))));
                IpNet { addr: IpAddr::V4(addr), prefix: len }
            })
            .collect()
    };
    let proxy = || Action::Outbound(Outbound { target: Target::Group("proxy".into()), must: false, mark: 0 });
    let mut rules = Vec::new();
    for i in 0..scale_up(30) {
        let count = if i == 0 { 8_000 } else { 20 + (i * 37) % 181 };
        rules.push(Rule { terms: vec![term(Matcher::DstIp(prefixes(count)))], action: proxy(), span: None });
    }
    for i in 0..scale_up(10) {
        let ports = (0..5).map(|k| {
            let p = 10_000 + (i * 5 + k) as u16;
            PortRange { start: p, end: p }
        });
        rules.push(Rule { terms: vec![term(Matcher::DstPort(ports.collect()))], action: proxy(), span: None });
    }
    for i in 0..scale_up(10) {
        let (l4, v) = match i % 3 {
            0 => (L4Protos { tcp: false, udp: true }, IpVersions { v4: true, v6: false }),
            1 => (L4Protos { tcp: false, udp: true }, IpVersions { v4: false, v6: true }),
            _ => (L4Protos { tcp: true, udp: false }, IpVersions { v4: false, v6: true }),
        };
        rules.push(Rule {
            terms: vec![term(Matcher::L4Proto(l4)), term(Matcher::IpVersion(v))],
            action: proxy(),
            span: None,
        });
    }
    RuleSet { rules, fallback: Outbound::direct() }
}

fn run(loaded: &mut object::Loaded, name: &str, frame: &[u8]) -> anyhow::Result<f64> {
    let Some(Program::SchedClassifier(p)) = loaded.ebpf.program_mut(name) else { anyhow::bail!("no program {name}") };
    let opts = TestRunOptions { data_in: Some(frame), repeat: REPEAT, ..Default::default() };
    Ok(<SchedClassifier as TestRun>::test_run(p, opts)?.duration.as_nanos() as f64)
}

/// Median over rounds of (program − mean of the two empty runs around it), and the baseline's median.
fn net(loaded: &mut object::Loaded, name: &str, frame: &[u8]) -> anyhow::Result<(f64, f64)> {
    let (mut nets, mut bases) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let before = run(loaded, PROG_BENCH_EMPTY_TC, frame)?;
        let gross = run(loaded, name, frame)?;
        let after = run(loaded, PROG_BENCH_EMPTY_TC, frame)?;
        let base = (before + after) / 2.0;
        nets.push(gross - base);
        bases.push(base);
    }
    Ok((median(&mut nets), median(&mut bases)))
}

/// The routing figures.
pub fn bench() -> anyhow::Result<Vec<Figure>> {
    let mut loaded = object::load(datapath_abi::flow::FLOW_TABLE_DEFAULT_ENTRIES)?;
    let mut maps = Maps::take(&mut loaded.ebpf, None)?;
    maps.set_gate(Admission { state: GATE_OPEN, lease_until: u64::MAX, ticks_per_sec: 250, ..Admission::default() })?;
    let mut router = Router::new(RouteMaps::take(&mut loaded.ebpf)?);
    let links = LinkCache::new();
    let groups = vec!["proxy".to_string()];
    let frame = Spec { frame_len: 64, ..Spec::tcp("10.77.10.2", 40000, "203.0.113.1", 443, 0x10) }.build();
    router.probe().set(0, RouteProbe { direction: Direction::LanIn as u8, ifindex: 1, ..RouteProbe::default() }, 0)?;

    let mut figures = Vec::new();
    let mut compile_ms = Vec::new();
    let mut miss = Vec::new();
    for sets in [10, 100, 1000] {
        let rules = mix(sets);
        let start = Instant::now();
        let compiled = compile(&rules, &groups)?;
        compile_ms.push(start.elapsed().as_secs_f64() * 1e3);
        router.publish(compiled, &links.snapshot())?;
        let (value, base) = net(&mut loaded, PROG_ROUTE_PROBE, &frame)?;
        miss.push(value);
        figures.push(Figure {
            name: format!("route_miss_ns_net_{sets}"),
            value,
            unit: "ns",
            baseline: base,
            ratio: (value + base) / base,
        });
        if sets == 100 {
            let (hit, base) = net(&mut loaded, PROG_TC_LAN_INGRESS_L2, &frame)?;
            figures.push(Figure {
                name: "route_hit_ns_net_100".into(),
                value: hit,
                unit: "ns",
                baseline: base,
                ratio: (hit + base) / base,
            });
        }
    }
    figures.push(Figure {
        name: "route_miss_1000_vs_100".into(),
        value: miss[2] / miss[1],
        unit: "x",
        baseline: 1.0,
        ratio: miss[2] / miss[1],
    });
    figures.push(Figure {
        name: "route_compile_ms_1000".into(),
        value: compile_ms[2],
        unit: "ms",
        baseline: compile_ms[1],
        ratio: compile_ms[2] / compile_ms[1],
    });
    Ok(figures)
}
