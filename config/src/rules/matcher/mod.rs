//! The userspace matcher: a [`RuleSet`] compiled for routing many packets, agreeing with
//! [`reference::route`](super::reference::route) on every packet.
//!
//! How it works: each dimension a rule can test (destination and source address, destination and source
//! port, transport, IP version, DSCP, MAC, process name, interface) has a table from the packet's value to a
//! precomputed bitset over rules: the rules that no term of that dimension rules out. ANDing the bitsets of
//! the packet's values, 64 rules per step, leaves the candidate rules; the first candidate that also passes its
//! `domain(...)` terms (checked per name, only when reached) decides, `must_rules` candidates on the way set
//! `must`. A packet costs one lookup per dimension in use plus one AND per dimension per 64 rules, and no
//! allocation once warm ([`Compiled::decide`]).

mod classes;
pub(crate) mod domain;

use std::net::IpAddr;

use classes::{DimTerm, Intervals, IpTable, Listed, SetTable, neutral_packet};
use domain::DomainMatcher;

use super::ir::{Action, DNS_PORT, L4, Matcher, Outbound, Packet, PacketDirection, RuleSet, Verdict};

/// The dimensions besides `domain`; a packet reads at most one set per dimension.
const DIMENSIONS: usize = 10;

/// What [`Compiled::decide`] found, borrowing the outbound from the compiled rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// The packet goes to `outbound`; `must` is the final flag (the outbound's own or set by `must_rules`).
    Outbound {
        /// The deciding rule's (or the fallback's) outbound, as written.
        outbound: &'a Outbound,
        /// `outbound.must`, or set by a `must_rules` rule that matched first.
        must: bool,
    },
    /// A DNS query not decided `must`: the DNS forwarder answers it.
    Dns,
}

impl Decision<'_> {
    /// The owned [`Verdict`] (clones a group name).
    pub fn to_verdict(&self) -> Verdict {
        match *self {
            Decision::Dns => Verdict::Dns,
            Decision::Outbound { outbound, must } => {
                Verdict::Outbound(Outbound { target: outbound.target.clone(), must, mark: outbound.mark })
            }
        }
    }
}

/// The table of one dimension.
enum Lookup {
    DstIp(IpTable),
    SrcIp(IpTable),
    DstPort(Intervals<u16>),
    SrcPort(Intervals<u16>),
    /// By transport: TCP, UDP.
    L4([u32; 2]),
    /// By the destination's family: IPv4, IPv6.
    IpVersion([u32; 2]),
    /// By DSCP value (the packet field is a byte).
    Dscp(Box<[u32; 256]>),
    Mac(Listed<[u8; 6]>),
    ProcessName(Listed<Box<str>>),
    /// LAN-in, WAN-out.
    Interface([Listed<Box<str>>; 2]),
}

impl Lookup {
    #[inline]
    fn get(&self, packet: &Packet<'_>) -> u32 {
        let ip = |table: &IpTable, addr: IpAddr| match addr {
            IpAddr::V4(v4) => table.v4.get(u32::from(v4)),
            IpAddr::V6(v6) => table.v6.get(u128::from(v6)),
        };
        match self {
            Lookup::DstIp(table) => ip(table, packet.dst),
            Lookup::SrcIp(table) => ip(table, packet.src),
            Lookup::DstPort(table) => table.get(packet.dport),
            Lookup::SrcPort(table) => table.get(packet.sport),
            Lookup::L4(ids) => ids[usize::from(packet.l4 == L4::Udp)],
            Lookup::IpVersion(ids) => ids[usize::from(packet.dst.is_ipv6())],
            Lookup::Dscp(ids) => ids[usize::from(packet.dscp)],
            Lookup::Mac(listed) => listed.get(packet.mac.as_ref()),
            Lookup::ProcessName(listed) => listed.get(packet.pname),
            Lookup::Interface(by_direction) => {
                by_direction[usize::from(packet.direction == PacketDirection::WanOut)].get(packet.interface)
            }
        }
    }
}

struct CompiledRule {
    action: Action,
    /// `(negated, matcher)` of each `domain(...)` term.
    domain_terms: Vec<(bool, u32)>,
}

/// A [`RuleSet`] compiled for the userspace datapath (sniffed-domain re-routing, DNS rules). Read-only once
/// built: share it between worker threads (it is `Send + Sync`) and swap in a new one on reload.
pub struct Compiled {
    rules: Vec<CompiledRule>,
    /// u64 words per rule bitset.
    words: usize,
    /// Every rule.
    all: Vec<u64>,
    /// The distinct pass sets, `words` each.
    sets: Vec<u64>,
    lookups: Vec<Lookup>,
    domains: Vec<DomainMatcher>,
    fallback: Outbound,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("rules", &self.rules.len())
            .field("dimensions", &self.lookups.len())
            .field("distinct_sets", &(self.sets.len() / self.words.max(1)))
            .field("domain_matchers", &self.domains.len())
            .finish()
    }
}

impl Compiled {
    /// Compiles `rules`. Cost grows with the number of address prefixes times rules / 64 (a sweep over prefix
    /// bounds).
    pub fn new(rules: &RuleSet) -> Self {
        let words = rules.rules.len().div_ceil(64).max(1);
        let mut all = vec![0u64; words];
        for index in 0..rules.rules.len() {
            all[index / 64] |= 1 << (index % 64);
        }
        let mut sets = SetTable::new(words);
        let mut by_dimension: [Vec<DimTerm<'_>>; DIMENSIONS] = Default::default();
        let mut domains = Vec::new();
        let mut compiled_rules = Vec::with_capacity(rules.rules.len());
        for (index, rule) in rules.rules.iter().enumerate() {
            let mut domain_terms = Vec::new();
            for term in &rule.terms {
                let dimension = match &term.matcher {
                    Matcher::Domain(set) => {
                        domain_terms.push((term.negated, domains.len() as u32));
                        domains.push(DomainMatcher::new(set));
                        continue;
                    }
                    Matcher::DstIp(_) => 0,
                    Matcher::SrcIp(_) => 1,
                    Matcher::DstPort(_) => 2,
                    Matcher::SrcPort(_) => 3,
                    Matcher::L4Proto(_) => 4,
                    Matcher::IpVersion(_) => 5,
                    Matcher::Dscp(_) => 6,
                    Matcher::Mac(_) => 7,
                    Matcher::ProcessName(_) => 8,
                    Matcher::Interface(_) => 9,
                };
                by_dimension[dimension].push(DimTerm { rule: index, term });
            }
            compiled_rules.push(CompiledRule { action: rule.action.clone(), domain_terms });
        }
        let lookups = by_dimension
            .iter()
            .enumerate()
            .filter(|(_, terms)| !terms.is_empty())
            .map(|(dimension, terms)| build_lookup(dimension, &all, terms, &mut sets))
            .collect();
        Self { rules: compiled_rules, words, all, sets: sets.data, lookups, domains, fallback: rules.fallback.clone() }
    }

    /// Routes `packet`, allocating nothing (a `regex:` term allocates its matching cache once, on its first use
    /// by a thread).
    pub fn decide(&self, packet: &Packet<'_>) -> Decision<'_> {
        let mut ids = [0u32; DIMENSIONS];
        for (slot, lookup) in ids.iter_mut().zip(&self.lookups) {
            *slot = lookup.get(packet);
        }
        let ids = &ids[..self.lookups.len()];
        let mut must = false;
        for word_index in 0..self.words {
            let mut word = self.all[word_index];
            for &id in ids {
                word &= self.sets[id as usize * self.words + word_index];
            }
            while word != 0 {
                let rule_index = word_index * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                let rule = &self.rules[rule_index];
                if !rule.domain_terms.iter().all(|&(negated, matcher)| self.domain_term(negated, matcher, packet)) {
                    continue;
                }
                match &rule.action {
                    Action::MustRules => must = true,
                    Action::Outbound(outbound) => return finish(outbound, must, packet),
                }
            }
        }
        finish(&self.fallback, must, packet)
    }

    /// Routes `packet` into an owned [`Verdict`] (as [`reference::route`](super::reference::route) does).
    pub fn route(&self, packet: &Packet<'_>) -> Verdict {
        self.decide(packet).to_verdict()
    }

    fn domain_term(&self, negated: bool, matcher: u32, packet: &Packet<'_>) -> bool {
        let matcher = &self.domains[matcher as usize];
        packet.domains.iter().any(|name| matcher.matches(name)) != negated
    }
}

const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Compiled>();
};

fn finish<'a>(outbound: &'a Outbound, must_rules: bool, packet: &Packet<'_>) -> Decision<'a> {
    let must = outbound.must || must_rules;
    if packet.dport == DNS_PORT && !must {
        return Decision::Dns;
    }
    Decision::Outbound { outbound, must }
}

fn build_lookup(dimension: usize, all: &[u64], terms: &[DimTerm<'_>], sets: &mut SetTable) -> Lookup {
    let base = neutral_packet();
    match dimension {
        0 => Lookup::DstIp(classes::ip_table(all, terms, sets)),
        1 => Lookup::SrcIp(classes::ip_table(all, terms, sets)),
        2 => Lookup::DstPort(classes::port_table(all, terms, sets)),
        3 => Lookup::SrcPort(classes::port_table(all, terms, sets)),
        4 => {
            let packets = [L4::Tcp, L4::Udp].map(|l4| Packet { l4, ..base.clone() });
            Lookup::L4(classes::finite(all, terms, packets, sets).try_into().expect("two transports"))
        }
        5 => {
            let packets = [IpAddr::from([0u8; 4]), IpAddr::from([0u8; 16])].map(|dst| Packet { dst, ..base.clone() });
            Lookup::IpVersion(classes::finite(all, terms, packets, sets).try_into().expect("two families"))
        }
        6 => {
            let packets = (0..=u8::MAX).map(|dscp| Packet { dscp, ..base.clone() });
            let ids: Box<[u32; 256]> =
                classes::finite(all, terms, packets, sets).into_boxed_slice().try_into().expect("256 values");
            Lookup::Dscp(ids)
        }
        7 => {
            let mut keys: Vec<[u8; 6]> = terms
                .iter()
                .flat_map(|t| match &t.term.matcher {
                    Matcher::Mac(macs) => macs.clone(),
                    _ => unreachable!(),
                })
                .collect();
            keys.sort_unstable();
            keys.dedup();
            let ids =
                classes::finite(all, terms, keys.iter().map(|mac| Packet { mac: Some(*mac), ..base.clone() }), sets);
            let unlisted = classes::finite(all, terms, [base.clone()], sets)[0];
            Lookup::Mac(Listed { keys, ids, unlisted })
        }
        8 => {
            let keys = sorted_names(terms.iter().flat_map(|t| match &t.term.matcher {
                Matcher::ProcessName(names) => names.iter().map(String::as_str).collect::<Vec<_>>(),
                _ => unreachable!(),
            }));
            let ids =
                classes::finite(all, terms, keys.iter().map(|name| Packet { pname: Some(name), ..base.clone() }), sets);
            let unlisted = classes::finite(all, terms, [base.clone()], sets)[0];
            Lookup::ProcessName(Listed { keys, ids, unlisted })
        }
        9 => {
            let keys = sorted_names(terms.iter().flat_map(|t| match &t.term.matcher {
                Matcher::Interface(names) => names.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
                _ => unreachable!(),
            }));
            let by_direction = [PacketDirection::LanIn, PacketDirection::WanOut].map(|direction| {
                let packet = |interface| Packet { direction, interface, ..base.clone() };
                let ids = classes::finite(all, terms, keys.iter().map(|name| packet(Some(name))), sets);
                let unlisted = classes::finite(all, terms, [packet(None)], sets)[0];
                Listed { keys: keys.clone(), ids, unlisted }
            });
            Lookup::Interface(by_direction)
        }
        _ => unreachable!("{DIMENSIONS} dimensions"),
    }
}

fn sorted_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<Box<str>> {
    let mut keys: Vec<Box<str>> = names.map(Box::from).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}
