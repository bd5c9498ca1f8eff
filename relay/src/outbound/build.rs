//! From the `node` and `group` sections (and the check keys of `global`) to [`Outbounds`].
//!
//! Errors are [`ConfigError`]s at the span of the offending link, filter or policy, so the caller renders them
//! against `config.sources` like any other configuration error. Every error is reported, not just the first.

use std::net::IpAddr;

use config::ast::{Function, Param};
use config::{Config, ConfigError, ErrorKind, Filter, Global, NamedLink};

use super::group::{Group, Policy};
use super::health::{CheckSettings, CheckTarget, DEFAULT_CHECK_TIMEOUT};
use super::link::{Node, parse_link};
use super::{NodeId, Outbounds};

/// Group keys besides `filter` and `policy`: dae's per-group check settings.
const PER_GROUP_CHECK_KEYS: [&str; 5] =
    ["tcp_check_url", "tcp_check_http_method", "udp_check_dns", "check_interval", "check_tolerance"];

impl Outbounds {
    /// Builds nodes and groups from `config`.
    ///
    /// - `node`: each link is parsed ([`parse_link`]); a node is named by its tag, else its link's `#name`, else
    ///   its link without the password. `subscription` is not read yet.
    /// - `group`: `filter: name(tag, ...)`, `name(keyword: 'text')` and their negations, joined by `&&`; several
    ///   `filter:` lines are alternatives; no filter selects every node. A group that selects none loads and
    ///   refuses its flows at run time ([`NoAliveNode`](super::NoAliveNode)).
    ///   Policies: `random`, `fixed(N)`, `min`, `min_avg10`, `min_moving_avg` (see [`Policy`]).
    /// - checks: `global.check_interval`, `global.so_mark_from_dae` as the mark of every dialed socket, and
    ///   `global.tcp_check_url` as the check target only when it differs from dae's default
    ///   (`http://cp.cloudflare.com` and its fixed IPs); otherwise a check is a TCP connect to the proxy itself,
    ///   which works without Internet access.
    ///
    /// Refused as not implemented (errors, not silently ignored): other filter functions and keys (`subtag`,
    /// `name(regex: ...)`), filter annotations (`[add_latency: ...]`), per-group check settings.
    pub fn from_config(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let nodes: Vec<(String, Node)> = config.node.iter().filter_map(|link| node(link, &mut errors)).collect();
        let names: Vec<&str> = nodes.iter().map(|(name, _)| name.as_str()).collect();
        let groups: Vec<Group> =
            config.group.iter().filter_map(|group| build_group(group, &names, &mut errors)).collect();
        let checks = check_settings(&config.global, &mut errors);
        if errors.is_empty() { Ok(Outbounds::new(nodes, groups, checks)) } else { Err(errors) }
    }
}

fn node(named: &NamedLink, errors: &mut Vec<ConfigError>) -> Option<(String, Node)> {
    let what = match &named.tag {
        Some(tag) => format!("node `{}`", tag.name),
        None => "node".to_owned(),
    };
    match parse_link(&named.link.value) {
        Ok(parsed) => {
            let name = named.tag.as_ref().map(|tag| tag.name.clone()).or(parsed.name);
            let name = name.unwrap_or_else(|| parsed.node.to_string());
            Some((name, parsed.node))
        }
        Err(error) => {
            let kind = if error.is_not_implemented() {
                ErrorKind::NotImplemented { what, reason: error.to_string() }
            } else {
                ErrorKind::InvalidValue { key: what, reason: error.to_string() }
            };
            errors.push(ConfigError::at(named.link.value_span(), kind));
            None
        }
    }
}

fn build_group(group: &config::Group, names: &[&str], errors: &mut Vec<ConfigError>) -> Option<Group> {
    let before = errors.len();
    let what = format!("group `{}`", group.name.name);
    for option in &group.options {
        if PER_GROUP_CHECK_KEYS.contains(&option.key.name.as_str()) {
            errors.push(ConfigError::at(
                option.key.span,
                ErrorKind::NotImplemented {
                    what: format!("`{}` in {what}", option.key.name),
                    reason: format!(
                        "per-group check settings are not implemented yet; set `{}` in `global`",
                        option.key.name
                    ),
                },
            ));
        }
    }
    let nodes: Vec<NodeId> = if group.filters.is_empty() {
        (0..names.len()).map(|index| NodeId(index as u32)).collect()
    } else {
        let mut selected = vec![false; names.len()];
        for filter in &group.filters {
            if let Some(matches) = filter_matches(filter, names, errors) {
                selected.iter_mut().zip(matches).for_each(|(selected, matched)| *selected |= matched);
            }
        }
        selected.iter().enumerate().filter(|(_, selected)| **selected).map(|(index, _)| NodeId(index as u32)).collect()
    };
    let policy = policy(group, nodes.len(), errors);
    if errors.len() > before {
        return None;
    }
    // A group that selects no node loads (dae's configurations often define groups before their nodes): its
    // flows meet "no alive node" at run time, logged and counted, like a group whose nodes are all dead.
    Some(Group { name: group.name.name.clone(), nodes, policy: policy? })
}

/// Which nodes one `filter:` line selects (all its conditions hold); `None` after an error.
fn filter_matches(filter: &Filter, names: &[&str], errors: &mut Vec<ConfigError>) -> Option<Vec<bool>> {
    if let Some(annotation) = &filter.annotation {
        errors.push(ConfigError::at(
            annotation.span,
            ErrorKind::NotImplemented {
                what: "filter annotations".into(),
                reason: "`[add_latency: ...]` is not implemented yet; remove the annotation".into(),
            },
        ));
        return None;
    }
    let mut matches = vec![true; names.len()];
    for condition in &filter.conditions {
        let condition_matches = name_condition(condition, errors)?;
        for (matched, name) in matches.iter_mut().zip(names) {
            *matched &= condition_matches(name) != condition.negated;
        }
    }
    Some(matches)
}

/// A `name(...)` condition as a predicate on node names: any of its parameters matches.
fn name_condition<'a>(condition: &'a Function, errors: &mut Vec<ConfigError>) -> Option<impl Fn(&str) -> bool + 'a> {
    if condition.name.name != "name" {
        let kind = if condition.name.name == "subtag" {
            ErrorKind::NotImplemented {
                what: "filter `subtag(...)`".into(),
                reason: "subscriptions are not implemented yet; select nodes with `name(...)`".into(),
            }
        } else {
            ErrorKind::UnknownFunction { name: condition.name.name.clone(), suggestion: Some("name".into()) }
        };
        errors.push(ConfigError::at(condition.name.span, kind));
        return None;
    }
    let mut ok = true;
    for param in &condition.params {
        match param.key.as_ref().map(|key| key.name.as_str()) {
            None | Some("keyword") => {}
            Some("regex") => {
                ok = false;
                errors.push(ConfigError::at(
                    param.span,
                    ErrorKind::NotImplemented {
                        what: "filter `name(regex: ...)`".into(),
                        reason: "regular expressions are not implemented yet; use `name(keyword: ...)` or tags".into(),
                    },
                ));
            }
            Some(other) => {
                ok = false;
                errors.push(ConfigError::at(
                    param.span,
                    ErrorKind::UnknownParamKey { function: "name".into(), key: other.to_owned(), suggestion: None },
                ));
            }
        }
    }
    ok.then_some(move |name: &str| condition.params.iter().any(|param: &Param| param_matches(param, name)))
}

fn param_matches(param: &Param, name: &str) -> bool {
    match &param.key {
        None => param.value.value == name,
        Some(_) => name.contains(param.value.value.as_str()),
    }
}

fn policy(group: &config::Group, members: usize, errors: &mut Vec<ConfigError>) -> Option<Policy> {
    let call = &group.policy;
    let invalid = |reason: String| {
        ConfigError::at(call.span, ErrorKind::InvalidArgument { function: call.name.name.clone(), reason })
    };
    let policy = match (call.name.name.as_str(), call.params.as_slice()) {
        ("random", []) => Policy::Random,
        ("min" | "min_avg10" | "min_moving_avg", []) => Policy::Min,
        ("fixed", [param]) if param.key.is_none() => match param.value.value.parse::<usize>() {
            Ok(index) if index < members || members == 0 => Policy::Fixed(index),
            Ok(index) => {
                errors.push(invalid(format!(
                    "node {index} does not exist: the group has {members} node{} (counted from 0)",
                    if members == 1 { "" } else { "s" }
                )));
                return None;
            }
            Err(_) => {
                errors.push(invalid(format!("`{}` is not a node index; write e.g. `fixed(0)`", param.value.value)));
                return None;
            }
        },
        ("fixed", _) => {
            errors.push(invalid("takes one node index, e.g. `fixed(0)`".into()));
            return None;
        }
        ("random" | "min" | "min_avg10" | "min_moving_avg", _) => {
            errors.push(invalid("takes no parameters".into()));
            return None;
        }
        (other, _) => {
            errors.push(ConfigError::at(
                call.name.span,
                ErrorKind::InvalidValue {
                    key: format!("group.{}.policy", group.name.name),
                    reason: format!("unknown policy `{other}`; use random, fixed(N), min, min_avg10 or min_moving_avg"),
                },
            ));
            return None;
        }
    };
    Some(policy)
}

fn check_settings(global: &Global, errors: &mut Vec<ConfigError>) -> CheckSettings {
    let mut settings = CheckSettings {
        interval: global.check_interval,
        timeout: DEFAULT_CHECK_TIMEOUT.min(global.check_interval),
        mark: global.so_mark_from_dae.unwrap_or(0),
        ..CheckSettings::default()
    };
    if global.tcp_check_url != Global::default().tcp_check_url
        && let Some((url, fixed)) = global.tcp_check_url.split_first()
    {
        let fixed: Vec<IpAddr> = fixed.iter().filter_map(|ip| ip.parse().ok()).collect();
        match CheckTarget::parse(url, fixed) {
            Ok(target) => settings.target = target,
            Err(error) => errors.push(ConfigError::global(ErrorKind::InvalidValue {
                key: "global.tcp_check_url".into(),
                reason: error.to_string(),
            })),
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::Protocol;

    fn build(text: &str) -> Result<Outbounds, Vec<String>> {
        let loaded = config::load_str("t.dae", text).unwrap_or_else(|errors| panic!("{errors}"));
        let sources = loaded.config.sources.clone();
        Outbounds::from_config(&loaded.config)
            .map_err(|errors| errors.iter().map(|error| error.render(&sources)).collect())
    }

    fn errors(text: &str) -> String {
        build(text).expect_err("expected errors").join("\n")
    }

    const NODES: &str = "global {}
node {
    hk1: 'socks5://127.0.0.1:1080'
    hk2: 'http://u:p@127.0.0.1:3128'
    us1: 'socks5h://proxy.example:1080'
    'socks5://10.0.0.1:1080#jp-tokyo'
}
";

    #[test]
    fn nodes_are_named_by_tag_then_fragment() {
        let outbounds = build(&format!("{NODES}group {{ g {{ policy: min }} }}")).unwrap();
        let names: Vec<&str> = (0..4).map(|i| outbounds.node_name(NodeId(i))).collect();
        assert_eq!(names, ["hk1", "hk2", "us1", "jp-tokyo"]);
        let Node::Proxy(proxy) = outbounds.node(NodeId(1)) else { panic!() };
        assert_eq!(proxy.protocol, Protocol::HttpConnect);
        assert_eq!(outbounds.group("g").unwrap().nodes.len(), 4, "no filter selects every node");
    }

    #[test]
    fn filters_select_by_tag_keyword_and_negation() {
        let text = format!(
            "{NODES}group {{
                tags {{ filter: name(hk1, us1) \n policy: random }}
                hk {{ filter: name(keyword: 'hk') && !name(hk2) \n filter: name(jp-tokyo) \n policy: fixed(1) }}
            }}"
        );
        let outbounds = build(&text).unwrap();
        assert_eq!(outbounds.group("tags").unwrap().nodes, [NodeId(0), NodeId(2)]);
        let hk = outbounds.group("hk").unwrap();
        assert_eq!(hk.nodes, [NodeId(0), NodeId(3)]);
        assert_eq!(hk.policy, Policy::Fixed(1));
    }

    #[test]
    fn policies_min_variants_are_min() {
        for name in ["min", "min_avg10", "min_moving_avg"] {
            let outbounds = build(&format!("{NODES}group {{ g {{ policy: {name} }} }}")).unwrap();
            assert_eq!(outbounds.group("g").unwrap().policy, Policy::Min);
        }
    }

    #[test]
    fn bad_and_unsupported_links_point_at_the_link() {
        let rendered = errors("global {}\nnode {\n  a: 'vmess://abc'\n  b: 'socks5://h'\n}\n");
        assert!(rendered.contains("t.dae:3:7: node `a`: `vmess://` nodes are not implemented yet"), "{rendered}");
        assert!(rendered.contains("t.dae:4:7: invalid value for `node `b``: the port is missing"), "{rendered}");
    }

    #[test]
    fn unsupported_filters_and_group_options_are_refused() {
        let rendered = errors(&format!(
            "{NODES}group {{ g {{ filter: subtag(x) \n filter: name(regex: '^hk') \n tcp_check_url: 'http://x' \n policy: min }} }}"
        ));
        assert!(rendered.contains("filter `subtag(...)`: subscriptions are not implemented"), "{rendered}");
        assert!(rendered.contains("filter `name(regex: ...)`"), "{rendered}");
        assert!(rendered.contains("per-group check settings are not implemented yet"), "{rendered}");
    }

    #[test]
    fn bad_policies_are_errors_and_empty_groups_load() {
        assert!(errors(&format!("{NODES}group {{ g {{ policy: fixed(4) }} }}")).contains("node 4 does not exist"));
        assert!(errors(&format!("{NODES}group {{ g {{ policy: fastest }} }}")).contains("unknown policy `fastest`"));
        let empty = build(&format!("{NODES}group {{ g {{ filter: name(nope) \n policy: min }} }}")).unwrap();
        assert!(empty.group("g").unwrap().nodes.is_empty());
        let health = empty.health();
        assert!(empty.group("g").unwrap().pick(health, 7).is_err(), "no node: none alive");
    }

    #[test]
    fn check_settings_follow_global() {
        let outbounds =
            build("global { check_interval: 5s\n so_mark_from_dae: 0x100\n tcp_check_url: 'http://127.0.0.1:8080/x' }")
                .unwrap();
        let checks = outbounds.check_settings();
        assert_eq!(checks.interval, std::time::Duration::from_secs(5));
        assert_eq!(checks.timeout, std::time::Duration::from_secs(5));
        assert_eq!(checks.mark, 0x100);
        assert!(
            matches!(&checks.target, CheckTarget::Remote { endpoint, .. } if endpoint.to_string() == "127.0.0.1:8080")
        );
        let default = build("global {}").unwrap();
        assert_eq!(default.check_settings().target, CheckTarget::ProxyItself);
    }
}
