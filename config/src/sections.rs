//! The sections besides `global`: `subscription`, `node`, `group`, `routing` and `dns`.
//!
//! Their shape is checked (which keys, sub-sections and kinds of item each may hold, required keys, unique
//! names) and their content is kept as syntax tree: lowering rules and links is a later stage.

use std::collections::HashMap;

use crate::ast::{Annotation, Call, Declaration, Function, Ident, Item, Literal, RoutingRule, Section, Value};
use crate::error::{ConfigError, ErrorKind};
use crate::source::Span;
use crate::suggest::did_you_mean;
use crate::values::{invalid, no_annotation, single};

/// A link in `subscription` or `node`: `'link'` or `tag: 'link'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedLink {
    /// The tag, when written.
    pub tag: Option<Ident>,
    /// The link.
    pub link: Literal,
    /// The whole entry.
    pub span: Span,
}

/// A `filter:` line of a group: conditions joined by `&&` and an optional annotation such as
/// `[add_latency: -500ms]`. Several filters in one group are alternatives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The conditions, all of which must hold.
    pub conditions: Vec<Function>,
    /// The annotation, when written.
    pub annotation: Option<Annotation>,
    /// The whole declaration.
    pub span: Span,
}

/// One group of the `group` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group name.
    pub name: Ident,
    /// `filter:` lines, in order; none means every node.
    pub filters: Vec<Filter>,
    /// `policy:`, e.g. `min_avg10` or `fixed(0)`.
    pub policy: Call,
    /// Per-group health-check overrides (`tcp_check_url`, `check_interval`, ...), as written.
    pub options: Vec<Declaration>,
    /// The whole group.
    pub span: Span,
}

/// Rules and a fallback: the `routing` section and the `request`/`response` blocks of `dns.routing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingSection {
    /// The rules, in order (entry file first, then includes).
    pub rules: Vec<RoutingRule>,
    /// `fallback:`. In `routing` it may be omitted and then means `direct`; in `dns.routing` blocks it is
    /// required.
    pub fallback: Option<Call>,
    /// The (first) section.
    pub span: Span,
}

impl RoutingSection {
    /// dae's fallback of the `routing` section when none is written.
    pub const DEFAULT_FALLBACK: &'static str = "direct";
}

/// A named DNS upstream: `name: 'scheme://host:port'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsUpstream {
    /// The name rules refer to.
    pub name: Ident,
    /// The upstream address.
    pub url: Literal,
    /// The whole entry.
    pub span: Span,
}

/// The `dns` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSection {
    /// `upstream { ... }`.
    pub upstreams: Vec<DnsUpstream>,
    /// `routing { request { ... } }`.
    pub request: Option<RoutingSection>,
    /// `routing { response { ... } }`.
    pub response: Option<RoutingSection>,
    /// `fixed_domain_ttl { ... }`, as written.
    pub fixed_domain_ttl: Option<Section>,
    /// Other declarations (`ipversion_prefer`, `optimistic_cache`, ...), as written.
    pub options: Vec<Declaration>,
    /// The (first) section.
    pub span: Span,
}

const GROUP_KEYS: [&str; 7] = [
    "filter",
    "policy",
    "tcp_check_url",
    "tcp_check_http_method",
    "udp_check_dns",
    "check_interval",
    "check_tolerance",
];
const DNS_OPTIONS: [&str; 5] =
    ["ipversion_prefer", "bind", "optimistic_cache", "optimistic_cache_ttl", "max_cache_size"];
const DNS_SECTIONS: [&str; 3] = ["upstream", "routing", "fixed_domain_ttl"];

fn misplaced(item: &Item, section: &str, expected: &str) -> ConfigError {
    let what = match item {
        Item::Section(_) => "a section",
        Item::Rule(_) => "a routing rule",
        Item::Literal(_) => "a value without a key",
        Item::Declaration(_) => "a declaration",
    };
    ConfigError::at(
        item.span(),
        ErrorKind::Misplaced { what, section: section.to_owned(), expected: expected.to_owned() },
    )
}

fn unknown_key(section: &str, key: &Ident, known: &[&'static str]) -> ConfigError {
    ConfigError::at(
        key.span,
        ErrorKind::UnknownKey {
            section: section.to_owned(),
            key: key.name.clone(),
            suggestion: did_you_mean(&key.name, known.iter().copied()),
        },
    )
}

fn duplicate_key(section: &str, key: &Ident, first: Span) -> ConfigError {
    ConfigError::at(key.span, ErrorKind::DuplicateKey { section: section.to_owned(), key: key.name.clone() })
        .with_note("first set", first)
}

/// Records `name` and reports it when an earlier entry used it.
fn unique(seen: &mut HashMap<String, Span>, what: &'static str, name: &Ident) -> Result<(), ConfigError> {
    match seen.insert(name.name.clone(), name.span) {
        Some(first) => Err(ConfigError::at(name.span, ErrorKind::DuplicateName { what, name: name.name.clone() })
            .with_note("first defined", first)),
        None => Ok(()),
    }
}

/// A declaration value that names one outbound or policy: `name` or `name(params)`.
fn call(key: &str, declaration: &Declaration) -> Result<Call, ConfigError> {
    no_annotation(key, declaration)?;
    match &declaration.value {
        Value::Literals(_) => {
            let literal = single(key, declaration)?;
            Ok(Call {
                name: Ident { name: literal.value.clone(), span: literal.span },
                params: Vec::new(),
                span: literal.span,
            })
        }
        Value::Functions(functions) => match functions.as_slice() {
            [function] if function.negated => Err(invalid(key, function.span, "cannot be negated with `!`")),
            [function] => {
                Ok(Call { name: function.name.clone(), params: function.params.clone(), span: function.span })
            }
            [_, second, ..] => Err(invalid(key, second.span, "expected one name or call, not a `&&` chain")),
            [] => unreachable!("the parser never builds an empty function list"),
        },
    }
}

/// `subscription` and `node`: links, each optionally tagged; tags are unique.
pub(crate) fn decode_links(section: &Section, errors: &mut Vec<ConfigError>) -> Vec<NamedLink> {
    let name = section.name.name.as_str();
    let mut seen = HashMap::new();
    let mut links = Vec::new();
    for item in &section.items {
        match item {
            Item::Literal(link) => links.push(NamedLink { tag: None, link: link.clone(), span: link.span }),
            Item::Declaration(declaration) => {
                let tagged = single(&format!("{name}.{}", declaration.key.name), declaration)
                    .and_then(|link| unique(&mut seen, "tag", &declaration.key).map(|()| link));
                match tagged {
                    Ok(link) => links.push(NamedLink {
                        tag: Some(declaration.key.clone()),
                        link: link.clone(),
                        span: declaration.span,
                    }),
                    Err(error) => errors.push(error),
                }
            }
            other => errors.push(misplaced(other, name, "it holds links: `'link'` or `tag: 'link'`")),
        }
    }
    links
}

/// The `group` section: one sub-section per group.
pub(crate) fn decode_groups(section: &Section, errors: &mut Vec<ConfigError>) -> Vec<Group> {
    let mut seen = HashMap::new();
    let mut groups = Vec::new();
    for item in &section.items {
        let Item::Section(group) = item else {
            errors.push(misplaced(item, "group", "it holds groups: `name { policy: ... }`"));
            continue;
        };
        if let Err(error) = unique(&mut seen, "group", &group.name) {
            errors.push(error);
        }
        if let Some(group) = decode_group(group, errors) {
            groups.push(group);
        }
    }
    groups
}

fn decode_group(section: &Section, errors: &mut Vec<ConfigError>) -> Option<Group> {
    let path = format!("group.{}", section.name.name);
    let mut filters = Vec::new();
    let mut policy: Option<(Call, Span)> = None;
    let mut options = Vec::new();
    let mut seen_options: HashMap<&str, Span> = HashMap::new();
    for item in &section.items {
        let Item::Declaration(declaration) = item else {
            errors.push(misplaced(item, &path, "it holds `filter:`, `policy:` and check settings"));
            continue;
        };
        let key = &declaration.key;
        let full_key = format!("{path}.{}", key.name);
        match key.name.as_str() {
            "filter" => match &declaration.value {
                Value::Functions(conditions) => filters.push(Filter {
                    conditions: conditions.clone(),
                    annotation: declaration.annotation.clone(),
                    span: declaration.span,
                }),
                Value::Literals(literals) => errors.push(invalid(
                    &full_key,
                    literals[0].span,
                    "expected conditions such as `name(node1)` or `subtag(regex: '^my_')`",
                )),
            },
            "policy" => match (&policy, call(&full_key, declaration)) {
                (Some((_, first)), _) => errors.push(duplicate_key(&path, key, *first)),
                (None, Ok(call)) => policy = Some((call, key.span)),
                (None, Err(error)) => errors.push(error),
            },
            name if GROUP_KEYS.contains(&name) => match seen_options.insert(name, key.span) {
                Some(first) => errors.push(duplicate_key(&path, key, first)),
                None => options.push(declaration.clone()),
            },
            _ => errors.push(unknown_key(&path, key, &GROUP_KEYS)),
        }
    }
    let Some((policy, _)) = policy else {
        errors.push(
            ConfigError::at(section.name.span, ErrorKind::MissingKey { section: path, key: "policy" }).with_hint(
                "hint: add e.g. `policy: min_moving_avg`; dae offers random, fixed(N), min, min_avg10, min_moving_avg",
            ),
        );
        return None;
    };
    Some(Group { name: section.name.clone(), filters, policy, options, span: section.span })
}

/// Rules and `fallback:` (the `routing` section and `dns.routing.request`/`response`).
pub(crate) fn decode_rules(
    section: &Section,
    path: &str,
    fallback_required: bool,
    errors: &mut Vec<ConfigError>,
) -> RoutingSection {
    let mut rules = Vec::new();
    let mut fallback: Option<(Call, Span)> = None;
    for item in &section.items {
        match item {
            Item::Rule(rule) => rules.push(rule.clone()),
            Item::Declaration(declaration) if declaration.key.name == "fallback" => {
                match (&fallback, call(&format!("{path}.fallback"), declaration)) {
                    (Some((_, first)), _) => errors.push(duplicate_key(path, &declaration.key, *first)),
                    (None, Ok(call)) => fallback = Some((call, declaration.key.span)),
                    (None, Err(error)) => errors.push(error),
                }
            }
            Item::Declaration(declaration) => errors.push(unknown_key(path, &declaration.key, &["fallback"])),
            other => errors.push(misplaced(other, path, "it holds rules `f(...) -> outbound` and `fallback:`")),
        }
    }
    if fallback.is_none() && fallback_required {
        errors.push(ConfigError::at(
            section.name.span,
            ErrorKind::MissingKey { section: path.to_owned(), key: "fallback" },
        ));
    }
    RoutingSection { rules, fallback: fallback.map(|(call, _)| call), span: section.span }
}

/// The `dns` section.
pub(crate) fn decode_dns(section: &Section, errors: &mut Vec<ConfigError>) -> DnsSection {
    let mut dns = DnsSection {
        upstreams: Vec::new(),
        request: None,
        response: None,
        fixed_domain_ttl: None,
        options: Vec::new(),
        span: section.span,
    };
    let mut seen_upstreams = HashMap::new();
    let mut seen_keys: HashMap<String, Span> = HashMap::new();
    let known: Vec<&str> = DNS_SECTIONS.iter().chain(&DNS_OPTIONS).copied().collect();
    for item in &section.items {
        match item {
            Item::Section(sub) if sub.name.name == "upstream" => {
                decode_upstreams(sub, &mut seen_upstreams, &mut dns.upstreams, errors);
            }
            Item::Section(sub) if DNS_SECTIONS.contains(&sub.name.name.as_str()) => {
                if let Some(&first) = seen_keys.get(&sub.name.name) {
                    errors.push(duplicate_key("dns", &sub.name, first));
                    continue;
                }
                seen_keys.insert(sub.name.name.clone(), sub.name.span);
                if sub.name.name == "routing" {
                    decode_dns_routing(sub, &mut dns, errors);
                } else {
                    dns.fixed_domain_ttl = Some(sub.clone());
                }
            }
            Item::Section(sub) => errors.push(unknown_key("dns", &sub.name, &known)),
            Item::Declaration(declaration) if DNS_OPTIONS.contains(&declaration.key.name.as_str()) => {
                match seen_keys.insert(declaration.key.name.clone(), declaration.key.span) {
                    Some(first) => errors.push(duplicate_key("dns", &declaration.key, first)),
                    None => dns.options.push(declaration.clone()),
                }
            }
            Item::Declaration(declaration) => errors.push(unknown_key("dns", &declaration.key, &known)),
            other => errors.push(misplaced(other, "dns", "it holds `upstream { }`, `routing { }` and DNS options")),
        }
    }
    dns
}

fn decode_upstreams(
    section: &Section,
    seen: &mut HashMap<String, Span>,
    upstreams: &mut Vec<DnsUpstream>,
    errors: &mut Vec<ConfigError>,
) {
    for item in &section.items {
        let Item::Declaration(declaration) = item else {
            errors.push(misplaced(item, "dns.upstream", "each upstream needs a name: `name: 'udp://host:53'`"));
            continue;
        };
        let url = single(&format!("dns.upstream.{}", declaration.key.name), declaration)
            .and_then(|url| unique(seen, "DNS upstream", &declaration.key).map(|()| url));
        match url {
            Ok(url) => {
                upstreams.push(DnsUpstream { name: declaration.key.clone(), url: url.clone(), span: declaration.span })
            }
            Err(error) => errors.push(error),
        }
    }
}

fn decode_dns_routing(section: &Section, dns: &mut DnsSection, errors: &mut Vec<ConfigError>) {
    const BLOCKS: [&str; 2] = ["request", "response"];
    for item in &section.items {
        let Item::Section(block) = item else {
            errors.push(misplaced(item, "dns.routing", "it holds `request { }` and `response { }`"));
            continue;
        };
        let slot = match block.name.name.as_str() {
            "request" => &mut dns.request,
            "response" => &mut dns.response,
            _ => {
                errors.push(unknown_key("dns.routing", &block.name, &BLOCKS));
                continue;
            }
        };
        if let Some(first) = slot {
            errors.push(duplicate_key("dns.routing", &block.name, first.span));
            continue;
        }
        let path = format!("dns.routing.{}", block.name.name);
        *slot = Some(decode_rules(block, &path, true, errors));
    }
}
