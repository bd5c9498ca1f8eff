//! The benchmark rule mix shared by the userspace and kernel benchmarks, modelled on a typical dae
//! configuration: per 100 match sets, 30 `dip` sets (the first of each 30 holds 8,000 prefixes like a
//! `geoip:cn` list, the others 20 to 200), 10 `dport` rules of 5 ports, 10 `l4proto && ipversion` rules, then
//! the fallback. "Match sets" count as dae counts them: one per IP set, one per port, one per function.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use super::ir::{IpNet, L4, Packet, PacketDirection};

/// Prefixes of the large `dip` set (about a `geoip:cn` list).
const LARGE_SET: usize = 8_000;
/// Size bounds of the other `dip` sets.
const SMALL_SET_MIN: u64 = 20;
const SMALL_SET_MAX: u64 = 200;
/// One large set per this many `dip` sets.
const DIP_SETS_PER_LARGE: usize = 30;
/// Ports per `dport` rule.
const PORTS_PER_RULE: u16 = 5;
/// `dport` rules use ports from here on, far from the benchmark packet's 443.
const FIRST_PORT: u16 = 10_000;

/// The destination of [`bench_packet`], which no `dip` set of the mix covers.
pub const BENCH_DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// A configuration whose `routing` section is the mix at `match_sets` match sets (rounded down to a multiple
/// of 10, at least 10): `3n/10` `dip` rules, `n/10` `dport` rules of 5 ports, `n/10` `l4proto && ipversion`
/// rules, `fallback: proxy`. Deterministic: the same `match_sets` always gives the same text.
pub fn bench_mix(match_sets: usize) -> String {
    let tenth = (match_sets / 10).max(1);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut text = String::from(
        "global {\n    lan_interface: eth0\n}\ngroup {\n    proxy {\n        policy: min\n    }\n}\nrouting {\n",
    );
    let outbounds = ["direct", "block", "proxy"];
    for set in 0..3 * tenth {
        let size =
            if set % DIP_SETS_PER_LARGE == 0 { LARGE_SET } else { rng.between(SMALL_SET_MIN, SMALL_SET_MAX) as usize };
        let nets: Vec<String> = (0..size).map(|_| random_net(&mut rng)).collect();
        let _ = writeln!(text, "    dip({}) -> {}", nets.join(", "), outbounds[set % 3]);
    }
    for rule in 0..tenth {
        let first = FIRST_PORT + rule as u16 * PORTS_PER_RULE;
        let ports: Vec<String> = (first..first + PORTS_PER_RULE).map(|p| p.to_string()).collect();
        let _ = writeln!(text, "    dport({}) -> {}", ports.join(", "), outbounds[rule % 3]);
    }
    let never_tcp_v4 = [("udp", 4), ("tcp", 6), ("udp", 6)];
    for rule in 0..tenth {
        let (l4, version) = never_tcp_v4[rule % 3];
        let _ = writeln!(text, "    l4proto({l4}) && ipversion({version}) -> {}", outbounds[rule % 3]);
    }
    text.push_str("    fallback: proxy\n}\n");
    text
}

/// A 64-byte IPv4 TCP SYN from a LAN client that no rule of [`bench_mix`] matches (it takes the fallback).
pub fn bench_packet() -> Packet<'static> {
    Packet {
        direction: PacketDirection::LanIn,
        interface: Some("eth0"),
        src: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10)),
        dst: IpAddr::V4(BENCH_DST),
        sport: 40_000,
        dport: 443,
        l4: L4::Tcp,
        dscp: 0,
        mac: Some([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]),
        pname: None,
        domains: &[],
    }
}

/// A prefix of /12 to /24 (the bulk of a country list) that does not cover [`BENCH_DST`].
fn random_net(rng: &mut XorShift) -> String {
    loop {
        let prefix = rng.between(12, 24) as u8;
        let mask = u32::MAX << (32 - u32::from(prefix));
        let addr = Ipv4Addr::from(rng.next() as u32 & mask);
        let net = IpNet { addr: IpAddr::V4(addr), prefix };
        if !net.contains(IpAddr::V4(BENCH_DST)) {
            return format!("{addr}/{prefix}");
        }
    }
}

/// xorshift64: reproducible without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}
