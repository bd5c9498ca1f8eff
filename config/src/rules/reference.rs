//! The reference evaluation of a [`RuleSet`]: the semantics written as plainly as possible, rule by rule and
//! value by value. It is the oracle the optimised matchers (userspace and kernel) are tested against, not the
//! path traffic takes.

use super::ir::{
    Action, DNS_PORT, DomainSet, InterfaceName, L4, Matcher, Packet, PacketDirection, Rule, RuleSet, Term, Verdict,
    Zone,
};

/// Routes `packet` through `rules`.
pub fn route(rules: &RuleSet, packet: &Packet<'_>) -> Verdict {
    let mut must = false;
    for rule in &rules.rules {
        if !rule_matches(rule, packet) {
            continue;
        }
        match &rule.action {
            Action::MustRules => must = true,
            Action::Outbound(outbound) => return finish(outbound.clone(), must, packet),
        }
    }
    finish(rules.fallback.clone(), must, packet)
}

fn finish(mut outbound: super::ir::Outbound, must: bool, packet: &Packet<'_>) -> Verdict {
    outbound.must |= must;
    if packet.dport == DNS_PORT && !outbound.must {
        return Verdict::Dns;
    }
    Verdict::Outbound(outbound)
}

/// Whether every term of `rule` matches.
pub fn rule_matches(rule: &Rule, packet: &Packet<'_>) -> bool {
    rule.terms.iter().all(|term| term_matches(term, packet))
}

/// Whether one term matches, negation included.
pub fn term_matches(term: &Term, packet: &Packet<'_>) -> bool {
    if let Matcher::Interface(names) = &term.matcher {
        return interface_term_matches(names, term.negated, packet.direction, packet.interface);
    }
    values_match(&term.matcher, packet) != term.negated
}

/// Whether an `interface(...)` term (`negated` for `!interface(...)`) matches a packet seen in `direction` on
/// `interface` (`None`: no live link of that name).
///
/// Zone-bound: a term only ever speaks about packets of the zones it names, negated or not. DNS request and
/// response rules use this same function.
pub fn interface_term_matches(
    names: &[InterfaceName],
    negated: bool,
    direction: PacketDirection,
    interface: Option<&str>,
) -> bool {
    let zone = match direction {
        PacketDirection::LanIn => Zone::Lan,
        PacketDirection::WanOut => Zone::Wan,
    };
    let mut of_zone = names.iter().filter(|n| n.zone == zone).peekable();
    if of_zone.peek().is_none() {
        return false;
    }
    let on_listed = interface.is_some_and(|ifname| of_zone.any(|n| n.name == ifname));
    on_listed != negated
}

fn values_match(matcher: &Matcher, p: &Packet<'_>) -> bool {
    match matcher {
        Matcher::Domain(set) => p.domains.iter().any(|d| domain_matches(set, d)),
        Matcher::DstIp(nets) => nets.iter().any(|n| n.contains(p.dst)),
        Matcher::SrcIp(nets) => nets.iter().any(|n| n.contains(p.src)),
        Matcher::DstPort(ranges) => ranges.iter().any(|r| r.contains(p.dport)),
        Matcher::SrcPort(ranges) => ranges.iter().any(|r| r.contains(p.sport)),
        Matcher::L4Proto(l4) => match p.l4 {
            L4::Tcp => l4.tcp,
            L4::Udp => l4.udp,
        },
        Matcher::IpVersion(v) => {
            if p.dst.is_ipv4() {
                v.v4
            } else {
                v.v6
            }
        }
        Matcher::Mac(macs) => p.mac.is_some_and(|m| macs.contains(&m)),
        Matcher::ProcessName(names) => p.pname.is_some_and(|n| names.iter().any(|x| x == n)),
        Matcher::Dscp(values) => values.contains(&p.dscp),
        Matcher::Interface(_) => unreachable!("handled by term_matches"),
    }
}

/// Whether `name` (lower-case, no trailing dot) is in `set`.
pub fn domain_matches(set: &DomainSet, name: &str) -> bool {
    set.full.iter().any(|f| f == name)
        || set
            .suffix
            .iter()
            .any(|s| name == s || (name.ends_with(s.as_str()) && name.as_bytes()[name.len() - s.len() - 1] == b'.'))
        || set.keyword.iter().any(|k| name.contains(k.as_str()))
        || set.regex.iter().any(|r| regex_lite::Regex::new(r).is_ok_and(|re| re.is_match(name)))
}
