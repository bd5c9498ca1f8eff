//! Shape checks of `subscription`, `node`, `group`, `routing` and `dns`; their content stays syntax tree.

mod common;

use common::{errors_of, loaded};

const GLOBAL: &str = "global {}\n";

fn with_global(text: &str) -> String {
    format!("{GLOBAL}{text}")
}

#[test]
fn absent_routing_means_no_rules_and_fallback_direct() {
    let config = loaded(GLOBAL).config;
    assert!(config.routing.is_none());
    assert_eq!(config.routing_fallback(), "direct");
}

#[test]
fn routing_without_fallback_keeps_rules_and_falls_back_to_direct() {
    let config = loaded(&with_global("routing { dport(53) -> block }")).config;
    let routing = config.routing.as_ref().unwrap();
    assert_eq!(routing.rules.len(), 1);
    assert!(routing.fallback.is_none());
    assert_eq!(config.routing_fallback(), "direct");
}

#[test]
fn routing_fallback_may_carry_parameters() {
    let config = loaded(&with_global("routing { fallback: direct(mark: 0x800) }")).config;
    let fallback = config.routing.unwrap().fallback.unwrap();
    assert_eq!(fallback.name.name, "direct");
    assert_eq!(fallback.params[0].value.value, "0x800");
}

#[test]
fn routing_refuses_other_keys_repeated_fallback_and_values() {
    let rendered = errors_of(&with_global("routing {\n  fallbak: direct\n}"));
    assert!(
        rendered.starts_with("t.dae:3:3: unknown key `fallbak` in `routing`; did you mean `fallback`?"),
        "{rendered}"
    );
    let rendered = errors_of(&with_global("routing {\n  fallback: a\n  fallback: b\n}"));
    assert!(rendered.starts_with("t.dae:4:3: `routing.fallback` is set more than once"), "{rendered}");
    assert!(rendered.ends_with("note: first set at t.dae:3:3"), "{rendered}");
    let rendered = errors_of(&with_global("routing {\n  direct\n}"));
    assert!(rendered.contains("a value without a key is not allowed in `routing`"), "{rendered}");
    let rendered = errors_of(&with_global("routing {\n  fallback: !direct(x)\n}"));
    assert!(rendered.contains("invalid value for `routing.fallback`: cannot be negated"), "{rendered}");
}

#[test]
fn dns_keeps_upstreams_blocks_and_options() {
    let text = "dns {\n  ipversion_prefer: 4\n  fixed_domain_ttl { ddns.example.org: 0 }\n  upstream { a: 'udp://1.1.1.1:53' }\n  \
                routing { request { fallback: a } }\n}";
    let dns = loaded(&with_global(text)).config.dns.unwrap();
    assert_eq!(dns.options[0].key.name, "ipversion_prefer");
    assert!(dns.fixed_domain_ttl.is_some());
    assert_eq!(dns.upstreams[0].name.name, "a");
    assert!(dns.request.is_some() && dns.response.is_none());
}

#[test]
fn dns_refuses_unknown_keys_unnamed_and_repeated_upstreams() {
    let rendered = errors_of(&with_global("dns {\n  upstreams { a: 'udp://x:53' }\n}"));
    assert!(
        rendered.starts_with("t.dae:3:3: unknown key `upstreams` in `dns`; did you mean `upstream`?"),
        "{rendered}"
    );
    let rendered = errors_of(&with_global("dns {\n  upstream {\n    'udp://x:53'\n  }\n}"));
    assert!(rendered.contains("each upstream needs a name: `name: 'udp://host:53'`"), "{rendered}");
    let rendered = errors_of(&with_global("dns {\n  upstream {\n    a: 'udp://x:53'\n    a: 'udp://y:53'\n  }\n}"));
    assert!(rendered.starts_with("t.dae:5:5: DNS upstream `a` is defined more than once"), "{rendered}");
}

#[test]
fn dns_routing_blocks_need_a_fallback_and_known_names() {
    let rendered = errors_of(&with_global("dns {\n  routing {\n    request { qname(geosite:cn) -> a }\n  }\n}"));
    assert!(rendered.starts_with("t.dae:4:5: `dns.routing.request` requires `fallback`"), "{rendered}");
    let rendered = errors_of(&with_global("dns {\n  routing {\n    requests { fallback: a }\n  }\n}"));
    assert!(rendered.contains("unknown key `requests` in `dns.routing`; did you mean `request`?"), "{rendered}");
}

#[test]
fn group_needs_a_policy() {
    let rendered = errors_of(&with_global("group {\n  g1 {\n    filter: name(a)\n  }\n}"));
    assert_eq!(
        rendered,
        "t.dae:3:3: `group.g1` requires `policy`\n  g1 {\n  ^^\n\
         hint: add e.g. `policy: min_moving_avg`; dae offers random, fixed(N), min, min_avg10, min_moving_avg"
    );
}

#[test]
fn group_filters_are_conditions_and_keys_are_checked() {
    let rendered = errors_of(&with_global("group {\n  g1 {\n    filter: node1\n    policy: min\n  }\n}"));
    assert!(rendered.contains("invalid value for `group.g1.filter`: expected conditions"), "{rendered}");
    let rendered = errors_of(&with_global("group {\n  g1 {\n    polcy: min\n  }\n}"));
    assert!(rendered.contains("unknown key `polcy` in `group.g1`; did you mean `policy`?"), "{rendered}");
    let rendered = errors_of(&with_global("group {\n  g1 { policy: min }\n  g1 { policy: random }\n}"));
    assert!(rendered.starts_with("t.dae:4:3: group `g1` is defined more than once"), "{rendered}");
    let rendered = errors_of(&with_global("group {\n  policy: min\n}"));
    assert!(rendered.contains("a declaration is not allowed in `group`"), "{rendered}");
}

#[test]
fn links_take_one_value_and_unique_tags() {
    let rendered = errors_of(&with_global("node {\n  a: f(x)\n}"));
    assert!(rendered.contains("invalid value for `node.a`: expected a value, not a function call"), "{rendered}");
    let rendered = errors_of(&with_global("subscription {\n  a: 'https://x'\n  a: 'https://y'\n}"));
    assert!(rendered.starts_with("t.dae:4:3: tag `a` is defined more than once"), "{rendered}");
    let rendered = errors_of(&with_global("node {\n  inner { }\n}"));
    assert!(rendered.contains("a section is not allowed in `node`"), "{rendered}");
}

#[test]
fn sections_of_every_kind_merge_across_blocks() {
    let config =
        loaded(&with_global("node { 'a' }\nnode { 'b' }\nrouting { f(x) -> a }\nrouting { g(y) -> b }")).config;
    assert_eq!(config.node.len(), 2);
    assert_eq!(config.routing.unwrap().rules.len(), 2);
}
