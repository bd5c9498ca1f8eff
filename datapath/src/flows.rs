//! Reading the flow table: expiry (the janitor) and rendering for `dae flows`.

use std::time::Duration;

use datapath_abi::{
    Admission, Direction, FlowKey, FlowTag,
    flow::{FLOW_F_TCP_CLOSING, IPPROTO_TCP, IPPROTO_UDP},
};
use serde::Serialize;

use crate::{
    flow_table::{FlowTable, Sweep},
    links::LinkReader,
};

/// A TCP flow with no packet for this long is forgotten (dae: 120 s).
pub const TCP_IDLE: Duration = Duration::from_secs(120);
/// A TCP flow that saw FIN or RST is forgotten this long after its last packet (dae: 10 s).
pub const TCP_CLOSING_IDLE: Duration = Duration::from_secs(10);
/// A UDP flow with no packet for this long is forgotten (dae's kernel backstop: 120 s).
pub const UDP_IDLE: Duration = Duration::from_secs(120);

/// How long a flow may stay idle before the janitor removes it.
pub fn idle_limit(key: &FlowKey, tag: &FlowTag) -> Duration {
    match key.l4_proto {
        IPPROTO_TCP if tag.flags & FLOW_F_TCP_CLOSING != 0 => TCP_CLOSING_IDLE,
        IPPROTO_TCP => TCP_IDLE,
        _ => UDP_IDLE,
    }
}

/// Frees every flow idle past its limit. `clock` converts the kernel's ticks (the gate's sample); `now_ns` is
/// `CLOCK_MONOTONIC_COARSE`. `last_seen` is refreshed at most once a second, so a flow is kept up to a second
/// longer than its limit. Fails only if a window of the table cannot be mapped (nothing is freed past it).
pub fn sweep(table: &FlowTable, clock: &Admission, now_ns: u64) -> std::io::Result<Sweep> {
    table.expire(|key, tag| {
        now_ns.saturating_sub(clock.ticks_to_mono_ns(tag.last_seen)) > idle_limit(key, tag).as_nanos() as u64
    })
}

/// A flow as `dae flows` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FlowRow {
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// Source `ip:port` (`[v6]:port`).
    pub src: String,
    /// Destination `ip:port`.
    pub dst: String,
    /// `lan-in` or `wan-out`.
    pub direction: &'static str,
    /// Ingress interface index (0: originated on the gateway).
    pub ingress_ifindex: u32,
    /// Ingress interface name, `-` if none or unknown.
    pub ingress: String,
    /// Egress interface index (0: not known).
    pub egress_ifindex: u32,
    /// Egress interface name, `-` if none or unknown.
    pub egress: String,
    /// Since the first packet.
    pub age_ms: u64,
    /// Since the last refresh.
    pub idle_ms: u64,
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen.
    pub bytes: u64,
    /// A FIN or RST was seen.
    pub closing: bool,
}

impl FlowRow {
    /// Resolves interface names through `links` and ticks through `clock`, against `now_ns`.
    pub fn new(key: &FlowKey, tag: &FlowTag, links: &mut LinkReader, clock: &Admission, now_ns: u64) -> Self {
        let mut name = |index: u32| match index {
            0 => "-".to_string(),
            i => links.name(i).map_or_else(|| format!("#{i}"), str::to_string),
        };
        Self {
            proto: match key.l4_proto {
                IPPROTO_TCP => "tcp",
                IPPROTO_UDP => "udp",
                _ => "?",
            },
            src: std::net::SocketAddr::new(key.src_ip(), key.src_port()).to_string(),
            dst: std::net::SocketAddr::new(key.dst_ip(), key.dst_port()).to_string(),
            direction: Direction::from_u8(tag.direction).map_or("?", Direction::as_str),
            ingress_ifindex: tag.ingress_ifindex,
            ingress: name(tag.ingress_ifindex),
            egress_ifindex: tag.egress_ifindex,
            egress: name(tag.egress_ifindex),
            age_ms: now_ns.saturating_sub(clock.ticks_to_mono_ns(tag.first_seen)) / 1_000_000,
            idle_ms: now_ns.saturating_sub(clock.ticks_to_mono_ns(tag.last_seen)) / 1_000_000,
            packets: tag.packets,
            bytes: tag.bytes,
            closing: tag.flags & FLOW_F_TCP_CLOSING != 0,
        }
    }
}

/// Renders rows as an aligned table with a header line.
pub fn render_table(rows: &[FlowRow]) -> String {
    let header = ["PROTO", "SOURCE", "DESTINATION", "DIR", "IN", "OUT", "AGE", "IDLE", "PACKETS", "BYTES", "STATE"];
    let cells: Vec<[String; 11]> = rows
        .iter()
        .map(|r| {
            [
                r.proto.to_string(),
                r.src.clone(),
                r.dst.clone(),
                r.direction.to_string(),
                r.ingress.clone(),
                r.egress.clone(),
                seconds(r.age_ms),
                seconds(r.idle_ms),
                r.packets.to_string(),
                r.bytes.to_string(),
                if r.closing { "closing" } else { "active" }.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |fields: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = fields.zip(widths).map(|(f, w)| format!("{f:<w$}")).collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &cells {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn seconds(ms: u64) -> String {
    format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::{Framing, Link, LinkCache};

    fn tag(direction: Direction, last_seen: u64, flags: u8) -> FlowTag {
        FlowTag { first_seen: 0, last_seen, direction: direction as u8, flags, ..FlowTag::default() }
    }

    #[test]
    fn closing_tcp_flows_expire_sooner_than_open_ones() {
        let k = FlowKey::new("10.0.0.1".parse().unwrap(), 1, "10.0.0.2".parse().unwrap(), 2, IPPROTO_TCP);
        assert_eq!(idle_limit(&k, &tag(Direction::LanIn, 0, 0)), TCP_IDLE);
        assert_eq!(idle_limit(&k, &tag(Direction::LanIn, 0, FLOW_F_TCP_CLOSING)), TCP_CLOSING_IDLE);
        let u = FlowKey { l4_proto: IPPROTO_UDP, ..k };
        assert_eq!(idle_limit(&u, &tag(Direction::LanIn, 0, 0)), UDP_IDLE);
    }

    #[test]
    fn rows_resolve_names_and_mark_unknown_indexes() {
        let cache = LinkCache::new();
        cache.upsert(Link { index: 5, name: "lan0".into(), up: true, framing: Framing::Ethernet, xdp_prog_id: None });
        let mut reader = cache.reader();
        let k = FlowKey::new("fd00::2".parse().unwrap(), 4000, "fd01::2".parse().unwrap(), 53, IPPROTO_UDP);
        // 100 ticks a second; tick 0 was at 0 ns, so tick 200 is 2 s.
        let clock = Admission::open(1, 100, 0, 0);
        let t = FlowTag { ingress_ifindex: 5, egress_ifindex: 9, packets: 3, ..tag(Direction::LanIn, 200, 0) };
        let row = FlowRow::new(&k, &t, &mut reader, &clock, 3_500_000_000);
        assert_eq!((row.ingress.as_str(), row.egress.as_str()), ("lan0", "#9"));
        assert_eq!((row.src.as_str(), row.dst.as_str()), ("[fd00::2]:4000", "[fd01::2]:53"));
        assert_eq!((row.age_ms, row.idle_ms, row.direction), (3500, 1500, "lan-in"));
        let table = render_table(&[row]);
        assert!(table.starts_with("PROTO"), "{table}");
        assert!(table.contains("lan-in") && table.contains("3.5s"), "{table}");
    }
}
