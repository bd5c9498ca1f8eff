//! The rule IR: what a `routing` section means, independent of how it is evaluated.
//!
//! Both engines evaluate this one IR: the userspace [`super::matcher`] directly, the kernel after the datapath
//! compiles it into per-dimension rule bitmaps. A differential test holds them to the same answer for every
//! packet (DESIGN.md invariant 3).
//!
//! Semantics, as dae defines them:
//! - Rules are tried in order; the first whose every term matches decides.
//! - A term matches when any of its values matches, inverted when the term is negated (`!f(...)`).
//! - A rule whose action is [`Action::MustRules`] does not decide: it marks the packet `must` and evaluation
//!   continues with the next rule.
//! - When no rule decides, the fallback does.
//! - A DNS packet (destination port 53, TCP or UDP) whose decision is not `must` goes to the DNS forwarder
//!   instead of its outbound ([`Verdict::Dns`]).
//!
//! `interface(...)` terms are zone-bound: `interface(lan: x)` matches only LAN-ingress packets that entered on
//! `x`, `interface(wan: y)` only packets the gateway originates that leave by `y`; a negated term matches only
//! packets of a zone it names whose interface it does not list. See [`InterfaceName`] and `docs/routing.md`.

use std::net::IpAddr;

use crate::source::Span;

/// Where a decided packet goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Pass it on untouched (optionally with a mark).
    Direct,
    /// Drop it.
    Block,
    /// Proxy it through the named group.
    Group(String),
}

/// A decision: target, `must`, and the firewall mark to set (0: none).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Outbound {
    /// Where.
    pub target: Target,
    /// `must_*` / `(must)`: decided even for DNS, which otherwise goes to the forwarder.
    pub must: bool,
    /// `(mark: 0x..)`; 0 for none.
    pub mark: u32,
}

impl Outbound {
    /// `direct` without mark or must.
    pub const fn direct() -> Self {
        Self { target: Target::Direct, must: false, mark: 0 }
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Decide.
    Outbound(Outbound),
    /// `-> must_rules`: mark `must` and keep evaluating.
    MustRules,
}

/// An IP prefix. IPv4 prefixes stay IPv4 (they never match IPv6 packets, as in dae).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// The network address, host bits zero.
    pub addr: IpAddr,
    /// Prefix length: at most 32 for IPv4, 128 for IPv6.
    pub prefix: u8,
}

impl IpNet {
    /// Whether `ip` lies inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An inclusive port range; a single port is `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port.
    pub end: u16,
}

impl PortRange {
    /// Whether `port` lies inside.
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

/// Which side of the gateway an `interface(...)` value names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Zone {
    /// `lan:`: packets entering from a LAN interface (forwarded clients).
    Lan,
    /// `wan:`: packets the gateway originates, leaving by a WAN interface.
    Wan,
}

/// One value of `interface(...)`: a zone and an exact interface name (identity is the name, not the index).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InterfaceName {
    /// The zone.
    pub zone: Zone,
    /// The interface name.
    pub name: String,
}

/// The values of `domain(...)` (and of DNS `qname(...)`), lower-case, without a trailing dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainSet {
    /// `suffix:` (and unkeyed values, `domain:`): the name or any name under it.
    pub suffix: Vec<String>,
    /// `full:`: exactly the name.
    pub full: Vec<String>,
    /// `keyword:` (`contains:`): any name containing it.
    pub keyword: Vec<String>,
    /// `regex:`: any name it matches (Rust `regex` syntax, which accepts what dae's examples use).
    pub regex: Vec<String>,
}

/// The transports `l4proto(...)` names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct L4Protos {
    /// `tcp`.
    pub tcp: bool,
    /// `udp`.
    pub udp: bool,
}

/// The IP versions `ipversion(...)` names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct IpVersions {
    /// `4`.
    pub v4: bool,
    /// `6`.
    pub v6: bool,
}

/// One routing function with its values (all values of one function are alternatives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// `domain(...)`: the name the packet's destination is known by (DNS answer or sniffed).
    Domain(DomainSet),
    /// `dip(...)` / `ip(...)`.
    DstIp(Vec<IpNet>),
    /// `sip(...)`.
    SrcIp(Vec<IpNet>),
    /// `dport(...)` / `port(...)`.
    DstPort(Vec<PortRange>),
    /// `sport(...)`.
    SrcPort(Vec<PortRange>),
    /// `l4proto(...)`.
    L4Proto(L4Protos),
    /// `ipversion(...)`.
    IpVersion(IpVersions),
    /// `mac(...)`: the source MAC of a LAN-ingress packet.
    Mac(Vec<[u8; 6]>),
    /// `pname(...)`: the process that owns a gateway-originated packet's socket (at most 15 bytes, as the
    /// kernel's `comm`).
    ProcessName(Vec<String>),
    /// `dscp(...)`: 0..=63.
    Dscp(Vec<u8>),
    /// `interface(...)`.
    Interface(Vec<InterfaceName>),
}

impl Matcher {
    /// The function name as written in dae's language (canonical form).
    pub fn function_name(&self) -> &'static str {
        match self {
            Matcher::Domain(_) => "domain",
            Matcher::DstIp(_) => "dip",
            Matcher::SrcIp(_) => "sip",
            Matcher::DstPort(_) => "dport",
            Matcher::SrcPort(_) => "sport",
            Matcher::L4Proto(_) => "l4proto",
            Matcher::IpVersion(_) => "ipversion",
            Matcher::Mac(_) => "mac",
            Matcher::ProcessName(_) => "pname",
            Matcher::Dscp(_) => "dscp",
            Matcher::Interface(_) => "interface",
        }
    }
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// `!f(...)`.
    pub negated: bool,
    /// The function and its values.
    pub matcher: Matcher,
    /// Where it was written (None for rules built in code).
    pub span: Option<Span>,
}

/// `term && term ... -> action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// All must match.
    pub terms: Vec<Term>,
    /// What a match does.
    pub action: Action,
    /// Where it was written (None for rules built in code).
    pub span: Option<Span>,
}

/// A lowered `routing` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// In order.
    pub rules: Vec<Rule>,
    /// When no rule decides.
    pub fallback: Outbound,
}

/// The direction a packet was seen in, which decides which zone its interface belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketDirection {
    /// Forwarded client traffic entering a LAN interface.
    LanIn,
    /// Traffic the gateway originates, leaving a WAN interface.
    WanOut,
}

/// Transport of a routed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// What a routing decision may look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    /// LAN-in or WAN-out.
    pub direction: PacketDirection,
    /// Name of the interface of that direction (ingress for LAN-in, egress for WAN-out), if known.
    pub interface: Option<&'a str>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Transport.
    pub l4: L4,
    /// DSCP (0..=63).
    pub dscp: u8,
    /// Source MAC (LAN-in on Ethernet links).
    pub mac: Option<[u8; 6]>,
    /// Owning process name (WAN-out).
    pub pname: Option<&'a str>,
    /// Names the destination is known by (DNS answers, sniffing), lower-case.
    pub domains: &'a [&'a str],
}

/// The outcome of routing one packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The decided outbound.
    Outbound(Outbound),
    /// A DNS query whose decision is not `must`: the DNS forwarder answers it.
    Dns,
}

/// The DNS port: traffic to it goes to the forwarder unless decided `must`.
pub const DNS_PORT: u16 = 53;
