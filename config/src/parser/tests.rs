use std::sync::Arc;

use super::parse;
use crate::ast::{Item, LiteralKind, Section, Value};
use crate::error::{ConfigErrors, ErrorKind};
use crate::source::SourceMap;

fn parse_ok(text: &str) -> Vec<Section> {
    let mut map = SourceMap::new();
    let id = map.add("t.dae", text);
    let parsed = parse(id, map.file(id));
    assert!(parsed.errors.is_empty(), "{}", ConfigErrors::new(parsed.errors, Arc::new(map)));
    parsed.sections
}

/// Rendered errors of a file that must fail.
fn parse_err(text: &str) -> String {
    let mut map = SourceMap::new();
    let id = map.add("t.dae", text);
    let parsed = parse(id, map.file(id));
    assert!(!parsed.errors.is_empty(), "expected errors for {text:?}");
    ConfigErrors::new(parsed.errors, Arc::new(map)).to_string()
}

fn error_kinds(text: &str) -> Vec<ErrorKind> {
    let mut map = SourceMap::new();
    let id = map.add("t.dae", text);
    parse(id, map.file(id)).errors.into_iter().map(|e| e.kind().clone()).collect()
}

fn only_item(sections: &[Section]) -> &Item {
    assert_eq!(sections.len(), 1);
    assert_eq!(sections[0].items.len(), 1, "{:?}", sections[0].items);
    &sections[0].items[0]
}

#[test]
fn empty_file_and_empty_section_parse() {
    assert!(parse_ok("").is_empty());
    assert!(parse_ok("  # only a comment\n/* and another */").is_empty());
    let sections = parse_ok("global {}");
    assert_eq!(sections[0].name.name, "global");
    assert!(sections[0].items.is_empty());
}

#[test]
fn declaration_with_literal_list_keeps_each_literal_and_its_quoting() {
    let sections = parse_ok("global { lan_interface: eth0, 'eth1', \"br-*\" }");
    let Item::Declaration(declaration) = only_item(&sections) else { panic!("not a declaration") };
    assert_eq!(declaration.key.name, "lan_interface");
    let Value::Literals(literals) = &declaration.value else { panic!("not literals") };
    let seen: Vec<_> = literals.iter().map(|l| (l.value.as_str(), l.kind)).collect();
    assert_eq!(
        seen,
        [("eth0", LiteralKind::Ident), ("eth1", LiteralKind::SingleQuoted), ("br-*", LiteralKind::DoubleQuoted)]
    );
    assert!(declaration.annotation.is_none());
}

#[test]
fn declaration_with_functions_keeps_negation_and_keyed_params() {
    let sections = parse_ok("g { filter: subtag(regex: '^my_', another_sub) && !name(keyword: 'ExpireAt:') }");
    let Item::Declaration(declaration) = only_item(&sections) else { panic!("not a declaration") };
    let Value::Functions(functions) = &declaration.value else { panic!("not functions") };
    assert_eq!(functions.len(), 2);
    assert!(!functions[0].negated);
    assert_eq!(functions[0].name.name, "subtag");
    assert_eq!(functions[0].params[0].key.as_ref().unwrap().name, "regex");
    assert_eq!(functions[0].params[0].value.value, "^my_");
    assert!(functions[0].params[1].key.is_none());
    assert_eq!(functions[0].params[1].value.value, "another_sub");
    assert!(functions[1].negated);
    assert_eq!(functions[1].params[0].value.value, "ExpireAt:");
}

#[test]
fn declaration_annotation_is_attached_to_the_declaration() {
    let sections = parse_ok("g { filter: name(US_node) [add_latency: -500ms] }");
    let Item::Declaration(declaration) = only_item(&sections) else { panic!("not a declaration") };
    let annotation = declaration.annotation.as_ref().expect("annotation");
    assert_eq!(annotation.params[0].key.as_ref().unwrap().name, "add_latency");
    assert_eq!(annotation.params[0].value.value, "-500ms");
    assert_eq!(annotation.params[0].value.kind, LiteralKind::Bare);
}

#[test]
fn function_call_value_with_number_parameter() {
    let sections = parse_ok("g { policy: fixed(0) }");
    let Item::Declaration(declaration) = only_item(&sections) else { panic!("not a declaration") };
    let Value::Functions(functions) = &declaration.value else { panic!("not functions") };
    assert_eq!(functions[0].name.name, "fixed");
    assert_eq!(functions[0].params[0].value.value, "0");
}

#[test]
fn routing_rule_keeps_conditions_negation_and_outbound() {
    let sections =
        parse_ok("routing { pname(dnsmasq, systemd-resolved) && !l4proto(udp) && dport(53) -> must_direct }");
    let Item::Rule(rule) = only_item(&sections) else { panic!("not a rule") };
    let names: Vec<_> = rule.conditions.iter().map(|f| (f.name.name.as_str(), f.negated)).collect();
    assert_eq!(names, [("pname", false), ("l4proto", true), ("dport", false)]);
    assert_eq!(rule.conditions[0].params[1].value.value, "systemd-resolved");
    assert_eq!(rule.outbound.name.name, "must_direct");
    assert!(rule.outbound.params.is_empty());
}

#[test]
fn routing_rule_outbound_may_be_a_function_with_params() {
    let sections = parse_ok("routing { domain(geosite:disney) -> direct(mark: 0x800) \n dip(1.1.1.1) -> proxy(must) }");
    let rules: Vec<_> = sections[0]
        .items
        .iter()
        .map(|item| match item {
            Item::Rule(rule) => rule,
            other => panic!("not a rule: {other:?}"),
        })
        .collect();
    assert_eq!(rules[0].conditions[0].params[0].key.as_ref().unwrap().name, "geosite");
    assert_eq!(rules[0].outbound.name.name, "direct");
    assert_eq!(rules[0].outbound.params[0].key.as_ref().unwrap().name, "mark");
    assert_eq!(rules[0].outbound.params[0].value.value, "0x800");
    assert_eq!(rules[1].outbound.params[0].value.value, "must");
    assert!(rules[1].outbound.params[0].key.is_none());
}

#[test]
fn routing_rule_starting_with_negation() {
    let sections = parse_ok("response { !qname(geosite:cn) && ip(geoip:private) -> googledns }");
    let Item::Rule(rule) = only_item(&sections) else { panic!("not a rule") };
    assert!(rule.conditions[0].negated);
    assert_eq!(rule.outbound.name.name, "googledns");
}

#[test]
fn bare_literals_and_tagged_links_in_a_block() {
    let sections =
        parse_ok("node {\n 'socks5://localhost:1080'\n mylink: 'ss://LINK'\n}\ninclude { config.d/*.dae other.dae }");
    assert!(matches!(&sections[0].items[0], Item::Literal(l) if l.value == "socks5://localhost:1080"));
    assert!(matches!(&sections[0].items[1], Item::Declaration(d) if d.key.name == "mylink"));
    let paths: Vec<_> = sections[1]
        .items
        .iter()
        .map(|item| match item {
            Item::Literal(l) => l.value.as_str(),
            other => panic!("not a literal: {other:?}"),
        })
        .collect();
    assert_eq!(paths, ["config.d/*.dae", "other.dae"]);
}

#[test]
fn nested_sections_keep_their_structure() {
    let sections = parse_ok(
        "dns { upstream { alidns: 'udp://dns.alidns.com:53' } routing { request { fallback: alidns } response { fallback: accept } } }",
    );
    let dns = &sections[0];
    let Item::Section(upstream) = &dns.items[0] else { panic!("not a section") };
    assert_eq!(upstream.name.name, "upstream");
    let Item::Section(routing) = &dns.items[1] else { panic!("not a section") };
    let names: Vec<_> = routing
        .items
        .iter()
        .map(|item| match item {
            Item::Section(s) => s.name.name.as_str(),
            other => panic!("not a section: {other:?}"),
        })
        .collect();
    assert_eq!(names, ["request", "response"]);
}

#[test]
fn spans_cover_the_source_text_of_each_node() {
    let text = "routing {\n  !dip(10.0.0.0/8) && sport(1000-2000) -> direct(mark: 0x1)\n}";
    let sections = parse_ok(text);
    let Item::Rule(rule) = only_item(&sections) else { panic!("not a rule") };
    let slice = |span: crate::source::Span| &text[span.start..span.end];
    assert_eq!(slice(rule.span), "!dip(10.0.0.0/8) && sport(1000-2000) -> direct(mark: 0x1)");
    assert_eq!(slice(rule.conditions[0].span), "!dip(10.0.0.0/8)");
    assert_eq!(slice(rule.conditions[1].params[0].span), "1000-2000");
    assert_eq!(slice(rule.outbound.span), "direct(mark: 0x1)");
    assert_eq!(slice(rule.outbound.params[0].span), "mark: 0x1");
    assert_eq!(slice(sections[0].span), text);
}

#[test]
fn empty_parameter_list_is_accepted_by_the_grammar() {
    let sections = parse_ok("routing { f() -> x }");
    let Item::Rule(rule) = only_item(&sections) else { panic!("not a rule") };
    assert!(rule.conditions[0].params.is_empty());
}

#[test]
fn comments_after_values_are_ignored_but_hash_inside_words_is_kept() {
    let sections = parse_ok("global {\n  so_mark_from_dae: 0x800 # decimal 2048\n  tag: a#b\n}");
    let values: Vec<_> = sections[0]
        .items
        .iter()
        .map(|item| match item {
            Item::Declaration(d) => match &d.value {
                Value::Literals(l) => l[0].value.as_str(),
                other => panic!("not literals: {other:?}"),
            },
            other => panic!("not a declaration: {other:?}"),
        })
        .collect();
    assert_eq!(values, ["0x800", "a#b"]);
}

#[test]
fn missing_arrow_reports_what_may_follow_a_condition() {
    let rendered = parse_err("routing {\n  dip(1.1.1.1) direct\n}");
    assert_eq!(
        rendered,
        "t.dae:2:16: expected `&&` or `->`, found `direct`\n  dip(1.1.1.1) direct\n               ^^^^^^"
    );
}

#[test]
fn unclosed_parameter_list_points_at_the_unexpected_token() {
    let rendered = parse_err("routing {\n  domain(geosite:cn -> direct\n}");
    assert!(rendered.starts_with("t.dae:2:21: expected `,` or `)`, found `->`\n"), "{rendered}");
}

#[test]
fn negated_outbound_is_refused() {
    assert_eq!(error_kinds("routing { f(a) -> !direct }"), [ErrorKind::NegatedOutbound]);
}

#[test]
fn unclosed_section_points_at_its_name_and_brace() {
    let rendered = parse_err("global {\n  log_level: info\n");
    assert_eq!(
        rendered,
        "t.dae:1:1: `global {` is never closed: expected `}` before the end of the file\nglobal {\n^^^^^^^^"
    );
}

#[test]
fn stray_closing_brace_and_top_level_garbage_are_reported() {
    let kinds = error_kinds("}\nlog_level: info\nglobal {}");
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert_eq!(kinds[0], ErrorKind::StrayCloseBrace);
    assert!(matches!(&kinds[1], ErrorKind::Syntax { found, .. } if found == "`log_level`"));
}

#[test]
fn digit_leading_domain_gets_the_quote_hint() {
    let rendered = parse_err("dns {\n  fixed_domain_ttl {\n    123.com:60\n  }\n}");
    assert!(rendered.contains("\n    123.com:60\n           ^\n"), "{rendered}");
    assert!(
        rendered.ends_with(
            "hint: domains or keys starting with a digit must be enclosed in quotes\n  change: 123.com:60\n  to:     '123.com:60'"
        ),
        "{rendered}"
    );
}

#[test]
fn digit_leading_word_without_dot_or_already_quoted_gets_no_hint() {
    assert!(!parse_err("u { 123dns: 'x' }").contains("enclosed in quotes"));
    assert!(parse_ok("d { fixed_domain_ttl { '123.com:60' } }").len() == 1);
}

#[test]
fn recovery_reports_independent_errors_on_later_lines() {
    let text = "global {\n  a: b: c\n  ok: 1\n  d: ,\n}\nrouting {\n  f(x) -> \n  g(y) -> z\n  h(\n}\n";
    let kinds = error_kinds(text);
    assert_eq!(kinds.len(), 4, "{kinds:?}");
}

#[test]
fn recovery_does_not_swallow_the_closing_brace_of_the_section() {
    let kinds = error_kinds("global {\n  a: : }\nrouting { }");
    assert_eq!(kinds.len(), 1, "{kinds:?}");
}

#[test]
fn lexical_error_is_reported_once_not_echoed_by_the_parser() {
    let kinds = error_kinds("routing {\n  f(a) & g(b) -> x\n  tcp: 'unterminated\n  y: z\n}");
    assert_eq!(kinds, [ErrorKind::UnexpectedChar('&'), ErrorKind::UnterminatedString { quote: '\'' }]);
}

#[test]
fn unterminated_comment_does_not_also_report_unclosed_sections() {
    assert_eq!(error_kinds("global {\n /* never closed\n}"), [ErrorKind::UnterminatedComment]);
}

#[test]
fn word_that_cannot_be_a_key_gets_a_key_hint() {
    let rendered = parse_err("dns {\n  upstream {\n    1dns: 'udp://1.1.1.1:53'\n  }\n}");
    assert!(rendered.ends_with("hint: `1dns` cannot be a key: keys start with a letter or `_`"), "{rendered}");
}
