//! The golden table of dae routing semantics, run against the reference evaluation and the userspace matcher.

use std::collections::BTreeSet;

use config::rules::{Compiled, ROUTING_FUNCTIONS, Verdict, golden, reference};

#[test]
fn reference_gives_every_golden_verdict() {
    for case in golden::cases() {
        let rules = case.rule_set();
        for check in &case.checks {
            assert_eq!(reference::route(&rules, &check.packet), check.expected, "{}: {}", case.name, check.what);
        }
    }
}

#[test]
fn compiled_matcher_gives_every_golden_verdict() {
    for case in golden::cases() {
        let compiled = Compiled::new(&case.rule_set());
        for check in &case.checks {
            assert_eq!(compiled.route(&check.packet), check.expected, "{}: {}", case.name, check.what);
        }
    }
}

#[test]
fn golden_table_uses_every_routing_function_and_outcome() {
    let cases = golden::cases();
    let functions: BTreeSet<&str> = cases
        .iter()
        .flat_map(|case| case.rule_set().rules)
        .flat_map(|rule| rule.terms)
        .map(|t| t.matcher.function_name())
        .collect();
    let canonical: BTreeSet<&str> = ROUTING_FUNCTIONS[..11].iter().copied().collect();
    assert_eq!(functions, canonical);
    let verdicts: Vec<&Verdict> = cases.iter().flat_map(|case| &case.checks).map(|check| &check.expected).collect();
    assert!(verdicts.contains(&&Verdict::Dns));
    assert!(verdicts.iter().any(|v| matches!(v, Verdict::Outbound(o) if o.must && o.mark != 0)));
    let names: Vec<&str> = cases.iter().map(|case| case.name).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "case names are unique");
}

#[test]
fn golden_cases_are_self_contained_configurations() {
    for case in golden::cases() {
        let text = case.config_text();
        assert!(text.starts_with("global {"), "{text}");
        let loaded = config::load_str("golden.dae", &text).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(loaded.config.group.len(), case.groups.len());
        for link in case.links() {
            assert!(case.checks.iter().any(|c| c.packet.interface == Some(link)));
        }
    }
}
