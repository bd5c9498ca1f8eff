//! The `dns` section lowered: upstream addresses parsed, request and response rules turned into an IR that
//! shares its value types and matching code with `routing` ([`DomainSet`], `interface(...)` zones, IP sets),
//! options typed with dae's defaults.
//!
//! ```
//! let text = "global { lan_interface: lan0 }
//! dns {
//!     upstream { a: 'udp://10.0.0.1:53' }
//!     routing { request { qname(suffix: example.com) && interface(lan: lan0) -> a
//!                         qtype(https) -> reject
//!                         fallback: asis }
//!               response { fallback: accept } }
//! }";
//! let loaded = config::load_str("t.dae", text).unwrap();
//! let dns = config::dns::lower(&loaded.config, &config::rules::Assets::none()).unwrap().dns;
//! assert_eq!(dns.upstreams[0].addr.to_string(), "udp://10.0.0.1:53");
//! assert!(dns.uses_interface);
//! ```
//!
//! Semantics (dae's, `docs/dns.md`): request rules are tried in order, the first whose every term holds picks
//! an upstream, `asis` (the server the client asked) or `reject` (an empty NOERROR answer); `fallback` decides
//! otherwise (`asis` when the block is absent). Response rules look at the answer: `accept`, `reject` (empty
//! answer) or another upstream (the query is sent again there, at most [`MAX_LOOKUP_DEPTH`] upstreams in all).

mod matcher;
mod rules;
mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use matcher::{DnsRouter, QueryFacts, ResponseFacts};
pub use upstream::{DEFAULT_DOH_PATH, Host, Scheme, UpstreamAddr};

use crate::ast::{Declaration, Item};
use crate::config::{Config, sort_errors};
use crate::error::{ConfigError, ConfigErrors, ErrorKind, Warning};
use crate::rules::Assets;
use crate::rules::assets::AssetCache;
use crate::rules::ir;
use crate::rules::ir::{DomainSet, InterfaceName, IpNet};
use crate::rules::lower::Cx;
use crate::source::Span;
use crate::values::{invalid, parse_bool, parse_integer, single};

/// dae's `MaxDnsLookupDepth`: a query visits at most this many upstreams through response rules.
pub const MAX_LOOKUP_DEPTH: usize = 3;
/// `optimistic_cache_ttl` when not written: serve a stale answer for up to 60 s after it expires (dae).
pub const DEFAULT_OPTIMISTIC_CACHE_TTL: Duration = Duration::from_secs(60);
/// The entry bound of the answer cache when `max_cache_size` is 0 or absent. dae treats 0 as unlimited; dae-rs
/// bounds every cache (DESIGN.md invariant 7) and picks a bound far above a home or office working set.
pub const DEFAULT_MAX_CACHE_ENTRIES: usize = 262_144;
/// The largest `fixed_domain_ttl` dae accepts is a year; so do we.
pub const MAX_FIXED_TTL: u64 = 365 * 24 * 3600;

/// An upstream by index into [`DnsConfig::upstreams`].
pub type UpstreamId = usize;

/// One named upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The name rules use.
    pub name: String,
    /// Where and how.
    pub addr: UpstreamAddr,
    /// The declaration.
    pub span: Span,
}

/// What a request rule (or the request fallback) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestAction {
    /// Forward to this upstream.
    Upstream(UpstreamId),
    /// Forward to the server the client addressed (intercepted DNS); the `bind` listener has none and answers
    /// SERVFAIL.
    AsIs,
    /// Answer NOERROR with an empty answer section, without asking anyone (dae).
    Reject,
}

/// What a response rule (or the response fallback) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseAction {
    /// Pass the answer on.
    Accept,
    /// Replace the answer by an empty NOERROR one.
    Reject,
    /// Ask this upstream instead.
    Upstream(UpstreamId),
}

/// One function of a DNS rule with its values; the values of one function are alternatives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsMatcher {
    /// `qname(...)`: the question name, with `domain(...)`'s keys.
    QName(DomainSet),
    /// `qtype(...)`: record types by number.
    QType(Vec<u16>),
    /// `interface(...)`: where the query came from, with routing's zone semantics (request and response).
    Interface(Vec<InterfaceName>),
    /// `sip(...)`: the client's address (request only).
    SrcIp(Vec<IpNet>),
    /// `upstream(...)`: the upstream that answered (response only).
    Upstream(Vec<UpstreamId>),
    /// `ip(...)`: any A/AAAA address of the answer section (response only).
    AnswerIp(Vec<IpNet>),
}

/// A condition: a function, possibly negated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTerm {
    /// `!f(...)`.
    pub negated: bool,
    /// The function.
    pub matcher: DnsMatcher,
    /// Where it was written.
    pub span: Option<Span>,
}

/// `term && term -> action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRule<A> {
    /// All must hold.
    pub terms: Vec<DnsTerm>,
    /// What a match does.
    pub action: A,
    /// Where it was written.
    pub span: Option<Span>,
}

/// Rules and their fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRules<A> {
    /// In order.
    pub rules: Vec<DnsRule<A>>,
    /// When no rule matches.
    pub fallback: A,
}

/// `dns.bind`: a local listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bind {
    /// Address and port.
    pub addr: SocketAddr,
    /// Listen on UDP.
    pub udp: bool,
    /// Listen on TCP.
    pub tcp: bool,
}

/// `ipversion_prefer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersionPrefer {
    /// `4`: AAAA questions get an empty answer when the name has A records.
    V4,
    /// `6`: A questions get an empty answer when the name has AAAA records.
    V6,
}

/// The lowered `dns` section. [`Default`] is what an absent section means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Upstreams in declaration order; rules refer to them by index.
    pub upstreams: Vec<Upstream>,
    /// Request routing (fallback `asis` when absent).
    pub request: DnsRules<RequestAction>,
    /// Response routing (fallback `accept` when absent).
    pub response: DnsRules<ResponseAction>,
    /// `fixed_domain_ttl`: exact (lower-case) name -> TTL in seconds; 0 means never cache.
    pub fixed_domain_ttl: Vec<(String, u32)>,
    /// `ipversion_prefer`.
    pub ipversion_prefer: Option<IpVersionPrefer>,
    /// `optimistic_cache` (RFC 8767 serve-stale). Default: on.
    pub optimistic_cache: bool,
    /// `optimistic_cache_ttl`: how long past expiry a stale answer may be served; `None` for forever (written
    /// as 0). Default: 60 s.
    pub optimistic_cache_ttl: Option<Duration>,
    /// `max_cache_size` in entries; [`DEFAULT_MAX_CACHE_ENTRIES`] when 0 or absent.
    pub max_cache_entries: usize,
    /// `bind` listeners.
    pub bind: Vec<Bind>,
    /// Whether a request or response rule uses `interface(...)`: then the interface is part of the cache and
    /// singleflight scope.
    pub uses_interface: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            request: DnsRules { rules: Vec::new(), fallback: RequestAction::AsIs },
            response: DnsRules { rules: Vec::new(), fallback: ResponseAction::Accept },
            fixed_domain_ttl: Vec::new(),
            ipversion_prefer: None,
            optimistic_cache: true,
            optimistic_cache_ttl: Some(DEFAULT_OPTIMISTIC_CACHE_TTL),
            max_cache_entries: DEFAULT_MAX_CACHE_ENTRIES,
            bind: Vec::new(),
            uses_interface: false,
        }
    }
}

impl DnsConfig {
    /// The upstream named `name`.
    pub fn upstream_id(&self, name: &str) -> Option<UpstreamId> {
        self.upstreams.iter().position(|upstream| upstream.name == name)
    }
}

/// A lowered `dns` section and what the user should hear about it.
#[derive(Debug, Clone)]
pub struct LoweredDns {
    /// The configuration.
    pub dns: DnsConfig,
    /// Accepted but worth telling.
    pub warnings: Vec<Warning>,
}

/// Lowers `config.dns` with geosite/geoip files from `assets`. Every error of the section comes at once, in
/// file order, each at its token.
pub fn lower(config: &Config, assets: &Assets) -> Result<LoweredDns, ConfigErrors> {
    let mut cx = Cx { config, assets: AssetCache::new(assets), errors: Vec::new(), warnings: Vec::new() };
    let mut dns = DnsConfig::default();
    if let Some(section) = &config.dns {
        for upstream in &section.upstreams {
            let key = format!("dns.upstream.{}", upstream.name.name);
            match upstream::parse_upstream(&upstream.url.value) {
                Ok(addr) => {
                    dns.upstreams.push(Upstream { name: upstream.name.name.clone(), addr, span: upstream.span })
                }
                Err(upstream::UpstreamError::Invalid(reason)) => {
                    cx.error(invalid(&key, upstream.url.value_span(), reason))
                }
                Err(upstream::UpstreamError::NotImplemented(reason)) => cx.error(ConfigError::at(
                    upstream.url.value_span(),
                    ErrorKind::NotImplemented { what: format!("upstream `{}`", upstream.name.name), reason },
                )),
            }
        }
        // Rules may name upstreams whose address failed to parse; resolve names against every declared one so
        // such a rule reports only the address error.
        let names: Vec<String> = section.upstreams.iter().map(|u| u.name.name.clone()).collect();
        if let Some(request) = &section.request {
            dns.request = rules::lower_request(&mut cx, request, &names);
        }
        if let Some(response) = &section.response {
            dns.response = rules::lower_response(&mut cx, response, &names);
        }
        if let Some(fixed) = &section.fixed_domain_ttl {
            dns.fixed_domain_ttl = fixed_ttls(&mut cx, &fixed.items);
        }
        options(&mut cx, &section.options, &mut dns);
    }
    let interface_term = |term: &DnsTerm| matches!(term.matcher, DnsMatcher::Interface(_));
    dns.uses_interface = dns.request.rules.iter().any(|rule| rule.terms.iter().any(interface_term))
        || dns.response.rules.iter().any(|rule| rule.terms.iter().any(interface_term));
    if !cx.errors.is_empty() {
        sort_errors(&mut cx.errors);
        return Err(ConfigErrors::new(cx.errors, config.sources.clone()));
    }
    cx.warnings.sort_by_key(|warning| warning.span.map(|span| (span.file, span.start)));
    Ok(LoweredDns { dns, warnings: cx.warnings })
}

fn fixed_ttls(cx: &mut Cx<'_>, items: &[Item]) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for item in items {
        let Item::Declaration(declaration) = item else {
            cx.error(invalid("dns.fixed_domain_ttl", item.span(), "expected `name: seconds`"));
            continue;
        };
        let key = format!("dns.fixed_domain_ttl.{}", declaration.key.name);
        let ttl = single(&key, declaration).and_then(|literal| {
            parse_integer(&literal.value, 0, MAX_FIXED_TTL)
                .map_err(|reason| invalid(&key, literal.value_span(), reason))
        });
        match ttl {
            Ok(ttl) => {
                let name = declaration.key.name.trim_end_matches('.').to_ascii_lowercase();
                if out.iter().any(|(seen, _)| *seen == name) {
                    cx.error(ConfigError::at(
                        declaration.key.span,
                        ErrorKind::DuplicateKey { section: "dns.fixed_domain_ttl".into(), key: name },
                    ));
                    continue;
                }
                out.push((name, ttl as u32));
            }
            Err(error) => cx.error(error),
        }
    }
    out
}

fn options(cx: &mut Cx<'_>, declarations: &[Declaration], dns: &mut DnsConfig) {
    for declaration in declarations {
        let name = declaration.key.name.as_str();
        let key = format!("dns.{name}");
        let literal = match single(&key, declaration) {
            Ok(literal) => literal,
            Err(error) => {
                cx.error(error);
                continue;
            }
        };
        let text = literal.value.as_str();
        let span = literal.value_span();
        let result: Result<(), String> = match name {
            "ipversion_prefer" => match text {
                "4" | "6" | "0" => {
                    dns.ipversion_prefer = match text {
                        "4" => Some(IpVersionPrefer::V4),
                        "6" => Some(IpVersionPrefer::V6),
                        _ => None,
                    };
                    Ok(())
                }
                _ => Err(format!("expected `4` or `6`, found `{text}`")),
            },
            "optimistic_cache" => parse_bool(text).map(|on| dns.optimistic_cache = on),
            "optimistic_cache_ttl" => parse_cache_ttl(text).map(|ttl| dns.optimistic_cache_ttl = ttl),
            "max_cache_size" => parse_integer(text, 0, u32::MAX.into()).map(|size| {
                dns.max_cache_entries = if size == 0 { DEFAULT_MAX_CACHE_ENTRIES } else { size as usize };
            }),
            "bind" => parse_bind(text).map(|bind| dns.bind.push(bind)),
            other => unreachable!("`dns.{other}` passed the section's key check"),
        };
        if let Err(reason) = result {
            cx.error(invalid(&key, span, reason));
        }
    }
}

/// Seconds as dae writes them (`60`), or a duration (`60s`, `1m`); 0 means "forever" (`None`).
fn parse_cache_ttl(text: &str) -> Result<Option<Duration>, String> {
    let duration = if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
        Duration::from_secs(parse_integer(text, 0, MAX_FIXED_TTL)?)
    } else {
        crate::duration::parse_duration(text).map_err(|error| format!("{error}; or write whole seconds, e.g. `60`"))?
    };
    Ok((!duration.is_zero()).then_some(duration))
}

/// `udp://ip:port`, `tcp://ip:port`, `tcp+udp://ip:port`, or bare `ip:port` (UDP), as dae reads `dns.bind`.
fn parse_bind(text: &str) -> Result<Bind, String> {
    let (udp, tcp, rest) = match text.split_once("://") {
        None => (true, false, text),
        Some(("udp", rest)) => (true, false, rest),
        Some(("tcp", rest)) => (false, true, rest),
        Some(("tcp+udp" | "udp+tcp", rest)) => (true, true, rest),
        Some((scheme, _)) => return Err(format!("unknown scheme `{scheme}`; use `udp`, `tcp` or `tcp+udp`")),
    };
    let addr: SocketAddr = rest.parse().map_err(|_| {
        format!("`{rest}` is not `ip:port`; write e.g. `127.0.0.1:5353` or `[::1]:5353` (a host name is not allowed)")
    })?;
    if addr.port() == 0 {
        return Err("the port must be from 1 to 65535".to_owned());
    }
    Ok(Bind { addr, udp, tcp })
}

/// Record type names `qtype(...)` accepts (lower-case), with their numbers (IANA).
pub const QTYPE_NAMES: [(&str, u16); 26] = [
    ("a", 1),
    ("ns", 2),
    ("cname", 5),
    ("soa", 6),
    ("ptr", 12),
    ("hinfo", 13),
    ("mx", 15),
    ("txt", 16),
    ("rp", 17),
    ("aaaa", 28),
    ("srv", 33),
    ("naptr", 35),
    ("dname", 39),
    ("opt", 41),
    ("ds", 43),
    ("sshfp", 44),
    ("rrsig", 46),
    ("nsec", 47),
    ("dnskey", 48),
    ("tlsa", 52),
    ("svcb", 64),
    ("https", 65),
    ("spf", 99),
    ("axfr", 252),
    ("any", 255),
    ("caa", 257),
];

/// What a query looks like to the address-matching side of DNS rules (for tests and tools).
pub fn ip_in(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|net| net.contains(ip))
}

/// Re-exported for rule authors: the direction a query was seen in.
pub use ir::PacketDirection;

#[cfg(test)]
mod tests;
