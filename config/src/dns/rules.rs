//! Lowering `dns.routing.request` and `dns.routing.response` rules. Value parsing is the routing section's own
//! code: `qname` is `domain`, `ip` / `sip` are `dip` / `sip`, `interface` is `interface`.

use super::{DnsMatcher, DnsRule, DnsRules, DnsTerm, QTYPE_NAMES, RequestAction, ResponseAction, UpstreamId};
use crate::ast::{Call, Function, RoutingRule};
use crate::error::{ConfigError, ErrorKind};
use crate::rules::lower::{Cx, dedup_in_order, functions, interface, quoted_list};
use crate::sections::RoutingSection;
use crate::suggest::did_you_mean;
use crate::values::parse_integer;

/// Functions of request rules.
pub const REQUEST_FUNCTIONS: [&str; 4] = ["qname", "qtype", "interface", "sip"];
/// Functions of response rules.
pub const RESPONSE_FUNCTIONS: [&str; 5] = ["qname", "qtype", "interface", "upstream", "ip"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Request,
    Response,
}

impl Block {
    fn path(self) -> &'static str {
        match self {
            Block::Request => "dns.routing.request",
            Block::Response => "dns.routing.response",
        }
    }

    fn functions(self) -> &'static [&'static str] {
        match self {
            Block::Request => &REQUEST_FUNCTIONS,
            Block::Response => &RESPONSE_FUNCTIONS,
        }
    }
}

pub(super) fn lower_request(cx: &mut Cx<'_>, section: &RoutingSection, names: &[String]) -> DnsRules<RequestAction> {
    let rules =
        section.rules.iter().filter_map(|rule| lower_rule(cx, rule, Block::Request, names, request_action)).collect();
    let fallback =
        section.fallback.as_ref().and_then(|call| request_action(cx, call, names)).unwrap_or(RequestAction::AsIs);
    DnsRules { rules, fallback }
}

pub(super) fn lower_response(cx: &mut Cx<'_>, section: &RoutingSection, names: &[String]) -> DnsRules<ResponseAction> {
    let rules =
        section.rules.iter().filter_map(|rule| lower_rule(cx, rule, Block::Response, names, response_action)).collect();
    let fallback =
        section.fallback.as_ref().and_then(|call| response_action(cx, call, names)).unwrap_or(ResponseAction::Accept);
    DnsRules { rules, fallback }
}

fn lower_rule<A>(
    cx: &mut Cx<'_>,
    rule: &RoutingRule,
    block: Block,
    names: &[String],
    action: fn(&mut Cx<'_>, &Call, &[String]) -> Option<A>,
) -> Option<DnsRule<A>> {
    let terms: Vec<Option<DnsTerm>> = rule.conditions.iter().map(|f| lower_term(cx, f, block, names)).collect();
    let action = action(cx, &rule.outbound, names);
    let terms = terms.into_iter().collect::<Option<Vec<_>>>()?;
    Some(DnsRule { terms, action: action?, span: Some(rule.span) })
}

fn lower_term(cx: &mut Cx<'_>, function: &Function, block: Block, names: &[String]) -> Option<DnsTerm> {
    let name = function.name.name.as_str();
    if function.params.is_empty() {
        cx.invalid(name, function.span, format!("`{name}()` needs at least one value"));
        return None;
    }
    let matcher = match (block, name) {
        (_, "qname") => functions::domain(cx, function).map(DnsMatcher::QName),
        (_, "qtype") => qtypes(cx, function).map(DnsMatcher::QType),
        (_, "interface") => interface::interfaces(cx, function).map(DnsMatcher::Interface),
        (Block::Request, "sip") => functions::ip_nets(cx, function).map(DnsMatcher::SrcIp),
        (Block::Response, "ip") => functions::ip_nets(cx, function).map(DnsMatcher::AnswerIp),
        (Block::Response, "upstream") => upstream_names(cx, function, names).map(DnsMatcher::Upstream),
        _ => {
            cx.error(unknown_function(function, block));
            None
        }
    }?;
    Some(DnsTerm { negated: function.negated, matcher, span: Some(function.span) })
}

fn unknown_function(function: &Function, block: Block) -> ConfigError {
    let name = &function.name.name;
    let error = ConfigError::at(
        function.name.span,
        ErrorKind::UnknownFunction {
            name: name.clone(),
            suggestion: did_you_mean(name, block.functions().iter().copied()),
        },
    );
    let other = match block {
        Block::Request => "response",
        Block::Response => "request",
    };
    let hint = match name.as_str() {
        "upstream" | "ip" if block == Block::Request => format!(
            "hint: `{name}(...)` looks at the answer; use it in `{other} {{ }}`. Request rules take {}",
            quoted_list(block.functions())
        ),
        "sip" if block == Block::Response => {
            format!("hint: `sip(...)` is a request function. Response rules take {}", quoted_list(block.functions()))
        }
        "domain" => {
            "hint: DNS rules match the question name with `qname(...)`, which takes `domain(...)`'s keys".to_owned()
        }
        _ => format!("hint: {} rules take {}", block.path(), quoted_list(block.functions())),
    };
    error.with_hint(hint)
}

/// `qtype(a, aaaa, https, 65, ...)`: names (any case) or numbers 0 to 65535.
fn qtypes(cx: &mut Cx<'_>, function: &Function) -> Option<Vec<u16>> {
    let mut out = Vec::new();
    let mut ok = true;
    for param in &function.params {
        if cx.key("qtype", param, &[]).is_err() {
            ok = false;
            continue;
        }
        let text = param.value.value.as_str();
        let lower = text.to_ascii_lowercase();
        let value = match QTYPE_NAMES.iter().find(|(name, _)| *name == lower) {
            Some(&(_, number)) => Ok(number),
            None if text.bytes().all(|b| b.is_ascii_digit()) => {
                parse_integer(text, 0, u16::MAX.into()).map(|n| n as u16)
            }
            None => {
                let suggestion = did_you_mean(&lower, QTYPE_NAMES.iter().map(|(name, _)| *name));
                Err(format!(
                    "unknown record type `{text}`{}; write a type name such as `a`, `aaaa`, `https` or its number",
                    suggestion.map(|s| format!("; did you mean `{s}`?")).unwrap_or_default()
                ))
            }
        };
        match value {
            Ok(value) => out.push(value),
            Err(reason) => {
                cx.invalid("qtype", param.value.value_span(), reason);
                ok = false;
            }
        }
    }
    dedup_in_order(&mut out);
    ok.then_some(out)
}

fn upstream_names(cx: &mut Cx<'_>, function: &Function, names: &[String]) -> Option<Vec<UpstreamId>> {
    let mut out = Vec::new();
    let mut ok = true;
    for param in &function.params {
        if cx.key("upstream", param, &[]).is_err() {
            ok = false;
            continue;
        }
        match find_upstream(cx, &param.value.value, param.value.value_span(), names) {
            Some(id) => out.push(id),
            None => ok = false,
        }
    }
    dedup_in_order(&mut out);
    ok.then_some(out)
}

fn find_upstream(cx: &mut Cx<'_>, name: &str, span: crate::source::Span, names: &[String]) -> Option<UpstreamId> {
    if let Some(id) = names.iter().position(|known| known == name) {
        return Some(id);
    }
    let suggestion = did_you_mean(name, names.iter().map(String::as_str));
    cx.error(ConfigError::at(span, ErrorKind::UnknownDnsUpstream { name: name.to_owned(), suggestion }));
    None
}

fn no_params(cx: &mut Cx<'_>, call: &Call) -> bool {
    match call.params.first() {
        Some(param) => {
            cx.invalid(&call.name.name, param.span, format!("`{}` takes no parameters", call.name.name));
            false
        }
        None => true,
    }
}

fn request_action(cx: &mut Cx<'_>, call: &Call, names: &[String]) -> Option<RequestAction> {
    if !no_params(cx, call) {
        return None;
    }
    match call.name.name.as_str() {
        "asis" => Some(RequestAction::AsIs),
        "reject" => Some(RequestAction::Reject),
        "accept" => {
            cx.invalid(
                "accept",
                call.name.span,
                "`accept` is a response action; a request goes to an upstream, `asis` or `reject`",
            );
            None
        }
        name => find_upstream(cx, name, call.name.span, names).map(RequestAction::Upstream),
    }
}

fn response_action(cx: &mut Cx<'_>, call: &Call, names: &[String]) -> Option<ResponseAction> {
    if !no_params(cx, call) {
        return None;
    }
    match call.name.name.as_str() {
        "accept" => Some(ResponseAction::Accept),
        "reject" => Some(ResponseAction::Reject),
        "asis" => {
            cx.invalid(
                "asis",
                call.name.span,
                "`asis` is a request action; an answer is `accept`ed, `reject`ed or asked again of an upstream",
            );
            None
        }
        name => find_upstream(cx, name, call.name.span, names).map(ResponseAction::Upstream),
    }
}
