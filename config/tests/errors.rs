//! Golden tests of rendered errors: location, source line, carets, hints, and how many are shown.

mod common;

use common::errors_of;

#[test]
fn unknown_key_is_underlined_and_gets_a_suggestion() {
    let rendered = errors_of("global {\n    lan_interfac: eth0\n}\n");
    assert_eq!(
        rendered,
        "t.dae:2:5: unknown key `lan_interfac` in `global`; did you mean `lan_interface`?\n\
         \x20   lan_interfac: eth0\n\
         \x20   ^^^^^^^^^^^^"
    );
}

#[test]
fn unknown_section_gets_a_suggestion() {
    let rendered = errors_of("globl {\n}\n");
    assert_eq!(
        rendered,
        "t.dae:1:1: unknown section `globl`; did you mean `global`?\nglobl {\n^^^^^\n\n\
         t.dae: section `global` is required but not provided; add `global { }`"
    );
}

#[test]
fn unknown_name_far_from_every_known_one_gets_no_suggestion() {
    let rendered = errors_of("global {\n  firewall_zone: lan\n}\n");
    assert!(rendered.starts_with("t.dae:2:3: unknown key `firewall_zone` in `global`\n"), "{rendered}");
}

#[test]
fn digit_leading_domain_error_has_a_caret_under_the_colon_and_daes_hint() {
    let rendered = errors_of("global {}\ndns {\n    fixed_domain_ttl {\n        123.com:60\n    }\n}\n");
    assert_eq!(
        rendered,
        "t.dae:4:16: expected a declaration `key: value`, a rule `f(...) -> outbound`, a value or a section, found `:`\n\
         \x20       123.com:60\n\
         \x20              ^\n\
         hint: domains or keys starting with a digit must be enclosed in quotes\n\
         \x20 change: 123.com:60\n\
         \x20 to:     '123.com:60'"
    );
}

#[test]
fn unquoted_resolver_address_gets_the_same_hint() {
    let rendered = errors_of("global {\n  fallback_resolver: 8.8.8.8:53\n}\n");
    assert!(rendered.contains("  change: 8.8.8.8:53\n  to:     '8.8.8.8:53'"), "{rendered}");
}

#[test]
fn out_of_range_value_underlines_the_value() {
    let rendered = errors_of("global {\n  tproxy_port: 70000\n}\n");
    assert_eq!(
        rendered,
        "t.dae:2:16: invalid value for `global.tproxy_port`: `70000` is out of range; expected 1 to 65535\n\
         \x20 tproxy_port: 70000\n\
         \x20              ^^^^^"
    );
}

#[test]
fn bad_element_inside_a_quoted_list_is_underlined_exactly() {
    let rendered = errors_of("global {\n  lan_interface: eth0, 'br0, averyveryverylongname'\n}\n");
    assert_eq!(
        rendered,
        "t.dae:2:30: invalid value for `global.lan_interface`: interface name `averyveryverylongname` is 21 bytes long; Linux allows at most 15\n\
         \x20 lan_interface: eth0, 'br0, averyveryverylongname'\n\
         \x20                            ^^^^^^^^^^^^^^^^^^^^^"
    );
}

#[test]
fn duplicate_key_points_at_the_first_setting() {
    let rendered = errors_of("global {\n  log_level: info\n  log_level: debug\n}\n");
    assert_eq!(
        rendered,
        "t.dae:3:3: `global.log_level` is set more than once\n\
         \x20 log_level: debug\n\
         \x20 ^^^^^^^^^\n\
         note: first set at t.dae:2:3"
    );
}

#[test]
fn missing_global_section_is_an_error_without_location() {
    assert_eq!(
        errors_of("routing { fallback: direct }"),
        "t.dae: section `global` is required but not provided; add `global { }`"
    );
}

#[test]
fn include_in_a_string_configuration_is_refused() {
    let rendered = errors_of("include { a.dae }\nglobal {}\n");
    assert!(rendered.starts_with("t.dae:1:1: `include` is not available"), "{rendered}");
}

#[test]
fn syntax_errors_on_many_lines_show_the_first_and_ten_more() {
    let mut text = String::from("global {\n");
    for line in 0..14 {
        text.push_str(&format!("  key{line}: : \n"));
    }
    text.push_str("}\n");
    let rendered = errors_of(&text);
    assert_eq!(rendered.matches("found `:`").count(), 11, "{rendered}");
    assert!(rendered.starts_with("t.dae:2:9: "), "{rendered}");
    assert!(rendered.contains("t.dae:12:10: "), "{rendered}");
    assert!(rendered.ends_with("\n\n3 more errors not shown"), "{rendered}");
}

#[test]
fn type_errors_are_all_collected_not_only_the_first() {
    let text = "global {\n  tproxy_port: x\n  log_level: loud\n  check_interval: 0s\n  mptcp: yes\n}\n\
                routing { fallback: a, b }\n";
    let rendered = errors_of(text);
    let lines: Vec<_> = rendered.lines().filter(|line| line.starts_with("t.dae:")).collect();
    assert_eq!(
        lines,
        [
            "t.dae:2:16: invalid value for `global.tproxy_port`: expected a whole number from 1 to 65535, found `x`",
            "t.dae:3:14: invalid value for `global.log_level`: expected one of `error`, `warn`, `warning`, `info`, `debug`, `trace`, found `loud`",
            "t.dae:4:19: invalid value for `global.check_interval`: must be more than zero; a zero interval would check without pause",
            "t.dae:5:10: invalid value for `global.mptcp`: write `true` instead of `yes`",
            "t.dae:7:24: invalid value for `routing.fallback`: expected one value, found a list",
        ]
    );
}

#[test]
fn parse_errors_in_two_sections_are_both_reported() {
    let rendered = errors_of("global {\n  dial_mode: (domain)\n}\nrouting {\n  dip(1.1.1.1) -> \n}\n");
    let lines: Vec<_> = rendered.lines().filter(|line| line.starts_with("t.dae:")).collect();
    assert_eq!(
        lines,
        ["t.dae:2:14: expected a value, found `(`", "t.dae:6:1: expected an outbound, found `}`",],
        "{rendered}"
    );
}

#[test]
fn type_errors_of_clean_sections_come_with_syntax_errors_of_others() {
    let rendered = errors_of("global {\n  tproxy_port: 0\n}\nrouting {\n  dip(1.1.1.1) -> \n}\n");
    let lines: Vec<_> = rendered.lines().filter(|line| line.starts_with("t.dae:")).collect();
    assert_eq!(
        lines,
        [
            "t.dae:2:16: invalid value for `global.tproxy_port`: `0` is out of range; expected 1 to 65535",
            "t.dae:6:1: expected an outbound, found `}`",
        ]
    );
}

#[test]
fn a_section_with_a_syntax_error_is_not_type_checked_again() {
    // The broken `policy:` line would otherwise also yield "requires `policy`"; a missing `global` would
    // also be reported if the failed parse were trusted.
    let rendered = errors_of("group {\n  g1 {\n    policy: fixed(0\n  }\n}\n");
    let lines: Vec<_> = rendered.lines().filter(|line| line.contains(": ")).collect();
    assert_eq!(lines, ["t.dae:4:3: expected `,` or `)`, found `}`"], "{rendered}");
}
