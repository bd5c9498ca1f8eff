//! Lowering the `routing` section into a [`RuleSet`]: every function, key and outbound with dae's meaning,
//! values normalised, geosite/geoip tags expanded, and every problem reported at once with the span of its token.

pub(crate) mod functions;
pub(crate) mod interface;

use std::collections::HashSet;
use std::hash::Hash;

use super::assets::{AssetCache, Assets};
use super::ir::{Action, Matcher, Outbound, Rule, RuleSet, Target, Term};
use crate::ast::{Call, Function, Param, RoutingRule};
use crate::config::{Config, sort_errors};
use crate::error::{ConfigError, ConfigErrors, ErrorKind, Warning};
use crate::source::Span;
use crate::suggest::did_you_mean;
use crate::values::parse_mark;

/// A lowered `routing` section and what the user should hear about it.
#[derive(Debug, Clone)]
pub struct Lowered {
    /// The rules and fallback.
    pub rules: RuleSet,
    /// Accepted but worth telling: normalised CIDRs, truncated process names, ineffective marks.
    pub warnings: Vec<Warning>,
}

/// Every routing function, canonical names first, then dae's aliases (`ip` for `dip`, `port` for `dport`).
pub const ROUTING_FUNCTIONS: [&str; 13] = [
    "domain",
    "dip",
    "sip",
    "dport",
    "sport",
    "l4proto",
    "ipversion",
    "mac",
    "pname",
    "dscp",
    "interface",
    "ip",
    "port",
];

/// Lowers `config.routing` (no section: no rules, fallback `direct`) with geosite/geoip files from `assets`.
///
/// Errors point at the offending token: an unknown function at its name, a bad value at the value, an unknown
/// outbound at its name. All errors of the section are reported together, in file order.
pub fn lower(config: &Config, assets: &Assets) -> Result<Lowered, ConfigErrors> {
    let mut cx = Cx { config, assets: AssetCache::new(assets), errors: Vec::new(), warnings: Vec::new() };
    let mut rules = Vec::new();
    let mut fallback = Some(Outbound::direct());
    if let Some(routing) = &config.routing {
        rules = routing.rules.iter().filter_map(|rule| lower_rule(&mut cx, rule)).collect();
        if let Some(call) = &routing.fallback {
            fallback = match lower_outbound(&mut cx, call, true) {
                Some(Action::Outbound(outbound)) => Some(outbound),
                Some(Action::MustRules) => unreachable!("refused for the fallback by lower_outbound"),
                None => None,
            };
        }
    }
    if !cx.errors.is_empty() {
        sort_errors(&mut cx.errors);
        return Err(ConfigErrors::new(cx.errors, config.sources.clone()));
    }
    cx.warnings.sort_by_key(|warning| warning.span.map(|span| (span.file, span.start)));
    let rules = RuleSet { rules, fallback: fallback.expect("no errors, so the fallback lowered") };
    Ok(Lowered { rules, warnings: cx.warnings })
}

/// What lowering carries: the configuration (groups, interfaces), the asset files read so far, and the
/// errors and warnings found.
pub(crate) struct Cx<'c> {
    pub config: &'c Config,
    pub assets: AssetCache<'c>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<Warning>,
}

impl Cx<'_> {
    pub fn warn(&mut self, span: Span, message: impl Into<String>) {
        self.warnings.push(Warning::at(&self.config.sources, span, message));
    }

    pub fn error(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    /// An "invalid value in `function(...)`" error at `span`.
    pub fn invalid(&mut self, function: &str, span: Span, reason: impl Into<String>) {
        self.error(ConfigError::at(
            span,
            ErrorKind::InvalidArgument { function: function.to_owned(), reason: reason.into() },
        ));
    }

    /// The key of `param` when `function` takes it (`None` for an unkeyed value); records an error otherwise.
    pub fn key<'p>(&mut self, function: &str, param: &'p Param, allowed: &[&str]) -> Result<Option<&'p str>, ()> {
        let Some(key) = &param.key else { return Ok(None) };
        if allowed.contains(&key.name.as_str()) {
            return Ok(Some(key.name.as_str()));
        }
        let error = ConfigError::at(
            key.span,
            ErrorKind::UnknownParamKey {
                function: function.to_owned(),
                key: key.name.clone(),
                suggestion: did_you_mean(&key.name, allowed.iter().copied()),
            },
        );
        self.error(if allowed.is_empty() {
            error.with_hint(format!("hint: `{function}` takes values only, e.g. `{function}(value1, value2)`"))
        } else {
            error.with_hint(format!("hint: `{function}` takes the keys {}", quoted_list(allowed)))
        });
        Err(())
    }
}

/// `` `a`, `b`, `c` ``.
pub(crate) fn quoted_list<S: AsRef<str>>(items: &[S]) -> String {
    items.iter().map(|item| format!("`{}`", item.as_ref())).collect::<Vec<_>>().join(", ")
}

/// Removes repeats, keeping the first of each.
pub(crate) fn dedup_in_order<T: Hash + Eq + Clone>(values: &mut Vec<T>) {
    let mut seen = HashSet::with_capacity(values.len());
    values.retain(|value| seen.insert(value.clone()));
}

fn lower_rule(cx: &mut Cx<'_>, rule: &RoutingRule) -> Option<Rule> {
    let terms: Vec<Option<Term>> = rule.conditions.iter().map(|function| lower_term(cx, function)).collect();
    let action = lower_outbound(cx, &rule.outbound, false);
    let terms = terms.into_iter().collect::<Option<Vec<Term>>>()?;
    Some(Rule { terms, action: action?, span: Some(rule.span) })
}

fn lower_term(cx: &mut Cx<'_>, function: &Function) -> Option<Term> {
    let name = function.name.name.as_str();
    if function.params.is_empty() {
        cx.invalid(name, function.span, format!("`{name}()` needs at least one value"));
        return None;
    }
    let matcher = match name {
        "domain" => functions::domain(cx, function).map(Matcher::Domain),
        "dip" | "ip" => functions::ip_nets(cx, function).map(Matcher::DstIp),
        "sip" => functions::ip_nets(cx, function).map(Matcher::SrcIp),
        "dport" | "port" => functions::ports(cx, function).map(Matcher::DstPort),
        "sport" => functions::ports(cx, function).map(Matcher::SrcPort),
        "l4proto" => functions::l4proto(cx, function).map(Matcher::L4Proto),
        "ipversion" => functions::ipversion(cx, function).map(Matcher::IpVersion),
        "mac" => functions::macs(cx, function).map(Matcher::Mac),
        "pname" => functions::process_names(cx, function).map(Matcher::ProcessName),
        "dscp" => functions::dscps(cx, function).map(Matcher::Dscp),
        "interface" => interface::interfaces(cx, function).map(Matcher::Interface),
        _ => {
            cx.error(unknown_function(function));
            None
        }
    }?;
    Some(Term { negated: function.negated, matcher, span: Some(function.span) })
}

fn unknown_function(function: &Function) -> ConfigError {
    let name = &function.name.name;
    let error = ConfigError::at(
        function.name.span,
        ErrorKind::UnknownFunction { name: name.clone(), suggestion: did_you_mean(name, ROUTING_FUNCTIONS) },
    );
    match name.as_str() {
        "tos" => error.with_hint("hint: the function matching the DSCP/ToS field is `dscp`, e.g. `dscp(0x4)`"),
        "qname" | "qtype" | "upstream" => error.with_hint(format!(
            "hint: `{name}` is a DNS routing function; use it in `dns {{ routing {{ request {{ ... }} }} }}`"
        )),
        _ => error.with_hint(format!("hint: routing functions are {}", quoted_list(&ROUTING_FUNCTIONS[..11]))),
    }
}

/// `direct`, `block`, a group, their `must_` forms, with `(must)` and `(mark: ...)`; `must_rules` (not as
/// fallback).
fn lower_outbound(cx: &mut Cx<'_>, call: &Call, is_fallback: bool) -> Option<Action> {
    let written = call.name.name.as_str();
    if written == "must_rules" {
        if is_fallback {
            cx.invalid(
                written,
                call.name.span,
                "`must_rules` cannot be the fallback: it decides nothing; name an outbound such as `direct` or a group",
            );
            return None;
        }
        if let Some(param) = call.params.first() {
            cx.invalid(written, param.span, "`must_rules` takes no parameters");
            return None;
        }
        return Some(Action::MustRules);
    }
    let (base, mut must) = match written.strip_prefix("must_") {
        Some(base) => (base, true),
        None => (written, false),
    };
    let groups = &cx.config.group;
    let target = match base {
        "direct" => Some(Target::Direct),
        "block" => Some(Target::Block),
        _ if groups.iter().any(|group| group.name.name == base) => Some(Target::Group(base.to_owned())),
        _ => {
            let mut known: Vec<String> = ["direct", "block"].iter().map(|s| (*s).to_owned()).collect();
            known.extend(groups.iter().map(|group| group.name.name.clone()));
            let prefixed: Vec<String> = known.iter().map(|name| format!("must_{name}")).collect();
            known.extend(prefixed);
            if !is_fallback {
                known.push("must_rules".to_owned());
            }
            let suggestion = did_you_mean(written, known.iter().map(String::as_str));
            cx.error(ConfigError::at(
                call.name.span,
                ErrorKind::UnknownOutbound { name: written.to_owned(), suggestion },
            ));
            None
        }
    };
    let mut mark: Option<(u32, Span)> = None;
    let mut ok = true;
    for param in &call.params {
        let value = &param.value;
        match param.key.as_ref().map(|key| key.name.as_str()) {
            None if value.value == "must" => must = true,
            Some("mark") => match (parse_mark(&value.value), mark) {
                (_, Some((_, first))) => {
                    cx.error(
                        ConfigError::at(
                            param.span,
                            ErrorKind::InvalidArgument {
                                function: written.to_owned(),
                                reason: "`mark` is given more than once".to_owned(),
                            },
                        )
                        .with_note("first given", first),
                    );
                    ok = false;
                }
                (Ok(parsed), None) => {
                    if value.value.len() > 1
                        && value.value.starts_with('0')
                        && !value.value[1..].starts_with(['x', 'X'])
                    {
                        cx.warn(value.span, format!(
                            "mark `{0}` is read as decimal {parsed}; dae reads a leading 0 as octal: write `{parsed}` or `0x{parsed:x}`",
                            value.value
                        ));
                    }
                    mark = Some((parsed, param.span));
                }
                (Err(reason), None) => {
                    cx.invalid(written, value.value_span(), reason);
                    ok = false;
                }
            },
            Some(_) => {
                ok &= cx.key(written, param, &["mark"]).is_ok();
            }
            None => {
                cx.invalid(
                    written,
                    value.span,
                    format!("unknown parameter `{}`; an outbound takes `must` and `mark: 0x...`", value.value),
                );
                ok = false;
            }
        }
    }
    let mark = mark.map_or(0, |(mark, _)| mark);
    if target == Some(Target::Block) && mark != 0 {
        cx.warn(call.span, "a mark on `block` has no effect: blocked packets are dropped");
    }
    if !ok {
        return None;
    }
    Some(Action::Outbound(Outbound { target: target?, must, mark }))
}
