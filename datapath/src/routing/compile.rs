//! Compiling a rule set into the kernel's bit-vector classifier (layout in `datapath_abi::route`).
//!
//! For every dimension the compiler splits the value space into classes that no term can tell apart and, for
//! each class, computes the bitmap of rules whose terms in that dimension hold. Truth values come from the
//! reference evaluation (`config::rules::reference::term_matches`) applied to a representative packet, so the
//! kernel inherits the userspace semantics instead of restating them; addresses are the one exception, where a
//! class is a prefix and "holds" means "a prefix of the term covers it" (see [`ip_classes`]).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use config::rules::{
    Action, IpNet, L4, Matcher, Outbound, Packet, PacketDirection, Rule, RuleSet, Target, Term, Zone,
    reference::term_matches,
};
use datapath_abi::{
    Direction,
    route::{
        ACTION_MUST, MAX_CLASSES, MAX_RULES, RouteAction, RouteConfig, RuleBits, SMALL_DSCP, SMALL_SLOTS, dim, outbound,
    },
};

/// A rule set the kernel cannot take.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    /// More rules than the bitmaps hold.
    #[error("{rules} routing rules; the kernel engine holds at most {MAX_RULES}")]
    TooManyRules {
        /// How many there are.
        rules: usize,
    },
    /// More distinct classes than a bank holds.
    #[error("the rule set needs {classes} distinct value classes; a bank holds {MAX_CLASSES}")]
    TooManyClasses {
        /// How many.
        classes: usize,
    },
    /// An outbound names a group the gateway does not have.
    #[error("outbound group {0:?} is not defined in the group section")]
    UnknownGroup(String),
    /// More groups than outbound ids.
    #[error("group {0:?}: at most {max} groups fit the outbound ids", max = outbound::GROUP_MAX - outbound::GROUP_BASE + 1)]
    TooManyGroups(String),
}

/// An address prefix in the kernel's 128-bit key space: IPv4 as `::ffff:a.b.c.d/(96 + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LpmEntry {
    /// `dim::DST_IP` or `dim::SRC_IP`.
    pub dimension: u32,
    /// The address, 16 bytes.
    pub addr: [u8; 16],
    /// Prefix length in the 128-bit space.
    pub prefix: u8,
    /// The class.
    pub class: u32,
}

/// One bank's worth of classifier, ready to publish.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Per-bank settings.
    pub config: RouteConfig,
    /// Class id -> rule bitmap.
    pub classes: Vec<RuleBits>,
    /// Rule -> decision.
    pub actions: Vec<RouteAction>,
    /// Address prefixes.
    pub lpm: Vec<LpmEntry>,
    /// Destination then source port -> class (2 × 65,536).
    pub ports: Vec<u64>,
    /// Transport (4) then DSCP (64) -> class.
    pub small: Vec<u64>,
    /// (direction, interface name) -> class; the publisher resolves names to indexes from the link table.
    pub interfaces: Vec<(Direction, String, u32)>,
    /// Source MAC -> class.
    pub macs: Vec<([u8; 6], u32)>,
    /// Process name (`comm`, NUL-padded) -> class.
    pub pnames: Vec<([u8; datapath_abi::route::COMM_LEN], u32)>,
    /// The rules, kept to compute domain bitmaps for addresses the DNS forwarder learns.
    pub rules: RuleSet,
}

/// Interns rule bitmaps into class ids.
struct Classes {
    ids: HashMap<[u64; datapath_abi::route::RULE_WORDS], u32>,
    bits: Vec<RuleBits>,
}

impl Classes {
    fn intern(&mut self, bits: RuleBits) -> u32 {
        let next = self.bits.len() as u32;
        *self.ids.entry(bits.words).or_insert_with(|| {
            self.bits.push(bits);
            next
        })
    }
}

/// A packet with every field neutral, for asking one dimension at a time.
fn neutral<'a>() -> Packet<'a> {
    Packet {
        direction: PacketDirection::LanIn,
        interface: None,
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        sport: 0,
        dport: 0,
        l4: L4::Tcp,
        dscp: 0,
        mac: None,
        pname: None,
        domains: &[],
    }
}

/// The dimension a term belongs to.
fn dimension(matcher: &Matcher) -> u32 {
    match matcher {
        Matcher::DstIp(_) => dim::DST_IP,
        Matcher::SrcIp(_) => dim::SRC_IP,
        Matcher::DstPort(_) => dim::DST_PORT,
        Matcher::SrcPort(_) => dim::SRC_PORT,
        Matcher::L4Proto(_) | Matcher::IpVersion(_) => dim::TRANSPORT,
        Matcher::Dscp(_) => dim::DSCP,
        Matcher::Interface(_) => dim::IFACE,
        Matcher::Mac(_) => dim::MAC,
        Matcher::Domain(_) => dim::DOMAIN,
        Matcher::ProcessName(_) => dim::PNAME,
    }
}

/// The bitmap of rules whose every term in dimension `d` satisfies `holds`; rules without such a term are in.
fn bits_where(rules: &[Rule], d: u32, mut holds: impl FnMut(&Term) -> bool) -> RuleBits {
    let mut bits = RuleBits::default();
    for (i, rule) in rules.iter().enumerate() {
        if rule.terms.iter().filter(|t| dimension(&t.matcher) == d).all(&mut holds) {
            bits.set(i);
        }
    }
    bits
}

/// The bitmap for one representative packet in dimension `d`.
fn bits_for(rules: &[Rule], d: u32, packet: &Packet<'_>) -> RuleBits {
    bits_where(rules, d, |t| term_matches(t, packet))
}

/// Compiles `rules` for a gateway whose groups are `groups` (group `i` becomes outbound `GROUP_BASE + i`).
pub fn compile(rules: &RuleSet, groups: &[String]) -> Result<Compiled, CompileError> {
    let n = rules.rules.len();
    if n > MAX_RULES {
        return Err(CompileError::TooManyRules { rules: n });
    }
    let action_of = |o: &Outbound| -> Result<RouteAction, CompileError> {
        let outbound = match &o.target {
            Target::Direct => outbound::DIRECT,
            Target::Block => outbound::BLOCK,
            Target::Group(name) => {
                let i =
                    groups.iter().position(|g| g == name).ok_or_else(|| CompileError::UnknownGroup(name.clone()))?;
                let id = usize::from(outbound::GROUP_BASE) + i;
                if id > usize::from(outbound::GROUP_MAX) {
                    return Err(CompileError::TooManyGroups(name.clone()));
                }
                id as u8
            }
        };
        Ok(RouteAction { outbound, flags: if o.must { ACTION_MUST } else { 0 }, _pad: [0; 2], mark: o.mark })
    };
    let mut config = RouteConfig { words: n.div_ceil(64).max(1) as u32, ..RouteConfig::default() };
    let mut actions = Vec::with_capacity(n);
    for (i, rule) in rules.rules.iter().enumerate() {
        match &rule.action {
            Action::Outbound(o) => actions.push(action_of(o)?),
            Action::MustRules => {
                config.must_rules.set(i);
                actions.push(RouteAction::default());
            }
        }
        for term in &rule.terms {
            config.dims_used |= 1 << dimension(&term.matcher);
        }
    }
    config.fallback = action_of(&rules.fallback)?;
    // XDP on LAN interfaces may decide with the leading rules that test addresses only: no rule before them can
    // match a packet they do not see.
    for (i, rule) in rules.rules.iter().enumerate() {
        let address_only = !rule.terms.is_empty()
            && rule.terms.iter().all(|t| matches!(t.matcher, Matcher::DstIp(_) | Matcher::SrcIp(_)));
        if !address_only {
            break;
        }
        config.xdp_rules.set(i);
    }

    let r = &rules.rules;
    let mut classes = Classes { ids: HashMap::new(), bits: Vec::new() };
    // Class 0: the rules that exist. The kernel starts from it, and it is the answer for any value of a
    // dimension no term uses (bits past the last rule stay clear, so no phantom rule can win).
    let mut present = RuleBits::default();
    (0..n).for_each(|i| present.set(i));
    classes.intern(present);

    let mut lpm = Vec::new();
    for d in [dim::DST_IP, dim::SRC_IP] {
        let (entries, default) = ip_classes(r, d, &mut classes);
        lpm.extend(entries);
        config.default_class[d as usize] = default;
    }

    let mut ports = vec![0u64; 2 * 65_536];
    for (which, d) in [(0usize, dim::DST_PORT), (1, dim::SRC_PORT)] {
        for (start, end) in port_intervals(r, d) {
            let mut p = neutral();
            (p.dport, p.sport) = (start, start);
            let class = classes.intern(bits_for(r, d, &p));
            for port in start..=end {
                ports[which * 65_536 + usize::from(port)] = u64::from(class);
            }
        }
    }

    let mut small = vec![0u64; SMALL_SLOTS as usize];
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    for (slot, (l4, dst)) in
        [(L4::Tcp, None), (L4::Tcp, Some(v6)), (L4::Udp, None), (L4::Udp, Some(v6))].into_iter().enumerate()
    {
        let mut p = neutral();
        p.l4 = l4;
        if let Some(dst) = dst {
            p.dst = dst;
        }
        small[slot] = u64::from(classes.intern(bits_for(r, dim::TRANSPORT, &p)));
    }
    for dscp in 0..64u8 {
        let p = Packet { dscp, ..neutral() };
        small[(SMALL_DSCP + u32::from(dscp)) as usize] = u64::from(classes.intern(bits_for(r, dim::DSCP, &p)));
    }

    let mut interfaces = Vec::new();
    for (direction, pd, zone) in
        [(Direction::LanIn, PacketDirection::LanIn, Zone::Lan), (Direction::WanOut, PacketDirection::WanOut, Zone::Wan)]
    {
        let default = classes.intern(bits_for(r, dim::IFACE, &Packet { direction: pd, ..neutral() }));
        match direction {
            Direction::LanIn => config.default_class[dim::IFACE as usize] = default,
            Direction::WanOut => config.iface_wan_default = default,
        }
        let mut names: Vec<&str> = r
            .iter()
            .flat_map(|rule| &rule.terms)
            .filter_map(|t| match &t.matcher {
                Matcher::Interface(names) => Some(names),
                _ => None,
            })
            .flatten()
            .filter(|n| n.zone == zone)
            .map(|n| n.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let p = Packet { direction: pd, interface: Some(name), ..neutral() };
            interfaces.push((direction, name.to_string(), classes.intern(bits_for(r, dim::IFACE, &p))));
        }
    }

    config.default_class[dim::MAC as usize] = classes.intern(bits_for(r, dim::MAC, &neutral()));
    let mut macs: Vec<[u8; 6]> = r
        .iter()
        .flat_map(|rule| &rule.terms)
        .filter_map(|t| match &t.matcher {
            Matcher::Mac(macs) => Some(macs),
            _ => None,
        })
        .flatten()
        .copied()
        .collect();
    macs.sort_unstable();
    macs.dedup();
    let macs = macs
        .into_iter()
        .map(|mac| (mac, classes.intern(bits_for(r, dim::MAC, &Packet { mac: Some(mac), ..neutral() }))))
        .collect();

    config.default_class[dim::DOMAIN as usize] = classes.intern(bits_for(r, dim::DOMAIN, &neutral()));
    config.default_class[dim::PNAME as usize] = classes.intern(bits_for(r, dim::PNAME, &neutral()));
    let mut names: Vec<&str> = r
        .iter()
        .flat_map(|rule| &rule.terms)
        .filter_map(|t| match &t.matcher {
            Matcher::ProcessName(names) => Some(names),
            _ => None,
        })
        .flatten()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names.dedup();
    let pnames = names
        .into_iter()
        .map(|name| {
            let class = classes.intern(bits_for(r, dim::PNAME, &Packet { pname: Some(name), ..neutral() }));
            (datapath_abi::route::comm_of(name), class)
        })
        .collect();

    if classes.bits.len() > MAX_CLASSES as usize {
        return Err(CompileError::TooManyClasses { classes: classes.bits.len() });
    }
    Ok(Compiled {
        config,
        classes: classes.bits,
        actions,
        lpm,
        ports,
        small,
        interfaces,
        macs,
        pnames,
        rules: rules.clone(),
    })
}

/// The domain-dimension bitmap of a destination known by `names` (what `ROUTE_DOMAIN` holds for it).
pub fn domain_bits(rules: &RuleSet, names: &[&str]) -> RuleBits {
    let p = Packet { domains: names, ..neutral() };
    bits_for(&rules.rules, dim::DOMAIN, &p)
}

/// Elementary port intervals: maximal ranges no range boundary of dimension `d` cuts.
fn port_intervals(rules: &[Rule], d: u32) -> Vec<(u16, u16)> {
    let mut cuts: Vec<u32> = vec![0, 65_536];
    for term in rules.iter().flat_map(|r| &r.terms) {
        let ranges = match (&term.matcher, d) {
            (Matcher::DstPort(r), dim::DST_PORT) | (Matcher::SrcPort(r), dim::SRC_PORT) => r,
            _ => continue,
        };
        for range in ranges {
            cuts.push(u32::from(range.start));
            cuts.push(u32::from(range.end) + 1);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2).map(|w| (w[0] as u16, (w[1] - 1) as u16)).collect()
}

/// The LPM entries of address dimension `d` and its default class (an address no prefix covers).
///
/// Every prefix a term of `d` names becomes an entry; an address's longest matching entry `p` decides, and a
/// term holds for it exactly when one of the term's prefixes covers `p` (a covering prefix of the address that
/// is longer than `p` would itself be a longer match). IPv4 prefixes live under `::ffff:0:0/96`; that /96 is
/// always an entry so that a short IPv6 prefix never answers for an IPv4 address.
///
/// The terms covering a prefix are found by walking a binary trie of every prefix from the root down to it, so
/// the cost is (prefixes × 128) rather than prefixes × prefixes (an 8,000-prefix geoip set against itself).
fn ip_classes(rules: &[Rule], d: u32, classes: &mut Classes) -> (Vec<LpmEntry>, u32) {
    // Term ids are handed out rule by rule, so one rule's terms of this dimension form a contiguous range.
    let mut negated: Vec<bool> = Vec::new();
    let mut rule_of: Vec<usize> = Vec::new();
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::with_capacity(rules.len());
    // One trie per family: an IPv6 prefix never covers an IPv4 address, whatever the key space says.
    let mut tries = [PrefixTrie::default(), PrefixTrie::default()];
    for (r, rule) in rules.iter().enumerate() {
        let first = negated.len();
        for t in &rule.terms {
            if let Some(nets) = nets_of(t, d) {
                let id = negated.len();
                negated.push(t.negated);
                rule_of.push(r);
                for net in nets {
                    tries[usize::from(net.addr.is_ipv6())].insert(key_bits(net), id);
                }
            }
        }
        ranges.push(first..negated.len());
    }
    let default_bits = bits_where(rules, d, |t| nets_of(t, d).is_none() || t.negated);
    let default = classes.intern(default_bits);
    if negated.is_empty() {
        return (Vec::new(), default);
    }
    let mut regions: Vec<IpNet> =
        rules.iter().flat_map(|r| &r.terms).filter_map(|t| nets_of(t, d)).flatten().copied().collect();
    regions.push(IpNet { addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED), prefix: 0 });
    regions.sort_unstable_by_key(|n| (n.addr, n.prefix));
    regions.dedup();
    let mut entries = Vec::with_capacity(regions.len());
    let mut covered: Vec<usize> = Vec::new();
    for region in &regions {
        covered.clear();
        tries[usize::from(region.addr.is_ipv6())].covering(key_bits(region), &mut covered);
        covered.sort_unstable();
        covered.dedup();
        let mut bits = default_bits;
        let mut touched: Vec<usize> = covered.iter().map(|&id| rule_of[id]).collect();
        touched.dedup();
        for r in touched {
            // A term holds when one of its prefixes covers the region, inverted when negated.
            let all = ranges[r].clone().all(|id| covered.binary_search(&id).is_ok() != negated[id]);
            if all {
                bits.set(r);
            } else {
                bits.words[r / 64] &= !(1 << (r % 64));
            }
        }
        let class = classes.intern(bits);
        let (addr, prefix) = match region.addr {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), 96 + region.prefix),
            IpAddr::V6(v6) => (v6.octets(), region.prefix),
        };
        entries.push(LpmEntry { dimension: d, addr, prefix, class });
    }
    (entries, default)
}

/// A prefix as (128-bit key space bits, length): IPv4 under `::ffff:0:0/96`.
fn key_bits(net: &IpNet) -> (u128, u8) {
    match net.addr {
        IpAddr::V4(v4) => (u128::from(v4.to_ipv6_mapped()), 96 + net.prefix),
        IpAddr::V6(v6) => (u128::from(v6), net.prefix),
    }
}

/// A binary trie of prefixes, each node listing the term ids that name exactly its prefix.
#[derive(Default)]
struct PrefixTrie {
    /// Node 0 is the root; children by next bit.
    nodes: Vec<([u32; 2], Vec<usize>)>,
}

impl PrefixTrie {
    fn node(&mut self, (bits, len): (u128, u8)) -> usize {
        if self.nodes.is_empty() {
            self.nodes.push(([0; 2], Vec::new()));
        }
        let mut at = 0usize;
        for i in 0..len {
            let bit = ((bits >> (127 - i)) & 1) as usize;
            let next = self.nodes[at].0[bit];
            at = if next == 0 {
                self.nodes.push(([0; 2], Vec::new()));
                let id = self.nodes.len() - 1;
                self.nodes[at].0[bit] = id as u32;
                id
            } else {
                next as usize
            };
        }
        at
    }

    fn insert(&mut self, prefix: (u128, u8), term: usize) {
        let at = self.node(prefix);
        self.nodes[at].1.push(term);
    }

    /// Appends the ids of every term naming `prefix` or a shorter prefix covering it.
    fn covering(&self, (bits, len): (u128, u8), out: &mut Vec<usize>) {
        if self.nodes.is_empty() {
            return;
        }
        let mut at = 0usize;
        out.extend(&self.nodes[0].1);
        for i in 0..len {
            let bit = ((bits >> (127 - i)) & 1) as usize;
            match self.nodes[at].0[bit] {
                0 => return,
                next => at = next as usize,
            }
            out.extend(&self.nodes[at].1);
        }
    }
}

/// The prefixes of an address term of dimension `d`.
fn nets_of(t: &Term, d: u32) -> Option<&Vec<IpNet>> {
    match (&t.matcher, d) {
        (Matcher::DstIp(n), dim::DST_IP) | (Matcher::SrcIp(n), dim::SRC_IP) => Some(n),
        _ => None,
    }
}
