//! DNS rules compiled for the forwarder: `qname` sets become routing's compiled domain matcher (hash probes per
//! label, Aho-Corasick, regexes), `interface(...)` is evaluated by routing's own zone function, so a DNS rule and a
//! routing rule written alike decide alike.

use std::net::IpAddr;

use super::{DnsConfig, DnsMatcher, DnsRules, RequestAction, ResponseAction, UpstreamId};
use crate::rules::ir::{InterfaceName, IpNet, PacketDirection};
use crate::rules::matcher::domain::DomainMatcher;
use crate::rules::reference::interface_term_matches;

/// What request rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryFacts<'a> {
    /// The question name: lower-case, no trailing dot (the root is `""`).
    pub qname: &'a str,
    /// The question type.
    pub qtype: u16,
    /// LAN-in (a client's query, from the datapath or received on a LAN interface) or WAN-out (the gateway's
    /// own); `None` when the query belongs to no zone (e.g. a local process asking the `bind` listener), and
    /// then no `interface(...)` term holds, negated or not.
    pub direction: Option<PacketDirection>,
    /// The interface of that direction, by name.
    pub interface: Option<&'a str>,
    /// The client's address, when known.
    pub src: Option<IpAddr>,
}

/// What response rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFacts<'a> {
    /// The query.
    pub query: QueryFacts<'a>,
    /// The upstream that answered.
    pub upstream: UpstreamId,
    /// Every A and AAAA address of the answer section.
    pub answer_ips: &'a [IpAddr],
}

enum Test {
    QName(u32),
    QType(Vec<u16>),
    Interface(Vec<InterfaceName>),
    SrcIp(Vec<IpNet>),
    Upstream(Vec<UpstreamId>),
    AnswerIp(Vec<IpNet>),
}

struct CompiledRule<A> {
    terms: Vec<(bool, Test)>,
    action: A,
}

/// Request and response rules of a [`DnsConfig`], ready to decide. Read-only: share it between workers and
/// replace it on reload.
pub struct DnsRouter {
    request: Vec<CompiledRule<RequestAction>>,
    request_fallback: RequestAction,
    response: Vec<CompiledRule<ResponseAction>>,
    response_fallback: ResponseAction,
    domains: Vec<DomainMatcher>,
}

impl std::fmt::Debug for DnsRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsRouter")
            .field("request_rules", &self.request.len())
            .field("response_rules", &self.response.len())
            .finish()
    }
}

const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<DnsRouter>();
};

impl DnsRouter {
    /// Compiles the rules of `dns`.
    pub fn new(dns: &DnsConfig) -> Self {
        let mut domains = Vec::new();
        let request = compile(&dns.request, &mut domains);
        let response = compile(&dns.response, &mut domains);
        Self {
            request,
            request_fallback: dns.request.fallback,
            response,
            response_fallback: dns.response.fallback,
            domains,
        }
    }

    /// The request decision for a query.
    pub fn request(&self, query: &QueryFacts<'_>) -> RequestAction {
        self.request
            .iter()
            .find(|rule| rule.terms.iter().all(|(negated, test)| self.term(*negated, test, query, None)))
            .map_or(self.request_fallback, |rule| rule.action)
    }

    /// The response decision for an answer.
    pub fn response(&self, response: &ResponseFacts<'_>) -> ResponseAction {
        self.response
            .iter()
            .find(|rule| {
                rule.terms.iter().all(|(negated, test)| self.term(*negated, test, &response.query, Some(response)))
            })
            .map_or(self.response_fallback, |rule| rule.action)
    }

    fn term(&self, negated: bool, test: &Test, query: &QueryFacts<'_>, response: Option<&ResponseFacts<'_>>) -> bool {
        match (test, query.direction) {
            // Zone-bound, as in routing: the negation is part of the interface function.
            (Test::Interface(names), Some(direction)) => {
                interface_term_matches(names, negated, direction, query.interface)
            }
            (Test::Interface(_), None) => false,
            _ => self.holds(test, query, response) != negated,
        }
    }

    fn holds(&self, test: &Test, query: &QueryFacts<'_>, response: Option<&ResponseFacts<'_>>) -> bool {
        match test {
            Test::QName(index) => self.domains[*index as usize].matches(query.qname),
            Test::QType(types) => types.contains(&query.qtype),
            Test::Interface(_) => unreachable!("interface terms are evaluated by `term` with their negation"),
            Test::SrcIp(nets) => query.src.is_some_and(|src| nets.iter().any(|net| net.contains(src))),
            Test::Upstream(ids) => response.is_some_and(|r| ids.contains(&r.upstream)),
            Test::AnswerIp(nets) => {
                response.is_some_and(|r| r.answer_ips.iter().any(|ip| nets.iter().any(|net| net.contains(*ip))))
            }
        }
    }
}

fn compile<A: Copy>(rules: &DnsRules<A>, domains: &mut Vec<DomainMatcher>) -> Vec<CompiledRule<A>> {
    rules
        .rules
        .iter()
        .map(|rule| CompiledRule {
            terms: rule
                .terms
                .iter()
                .map(|term| {
                    let test = match &term.matcher {
                        DnsMatcher::QName(set) => {
                            domains.push(DomainMatcher::new(set));
                            Test::QName((domains.len() - 1) as u32)
                        }
                        DnsMatcher::QType(types) => Test::QType(types.clone()),
                        DnsMatcher::Interface(names) => Test::Interface(names.clone()),
                        DnsMatcher::SrcIp(nets) => Test::SrcIp(nets.clone()),
                        DnsMatcher::Upstream(ids) => Test::Upstream(ids.clone()),
                        DnsMatcher::AnswerIp(nets) => Test::AnswerIp(nets.clone()),
                    };
                    (term.negated, test)
                })
                .collect(),
            action: rule.action,
        })
        .collect()
}
