//! Lowering `routing` into the rule IR: meanings, normalisation, warnings, and errors with their spans.

use config::rules::{Action, Assets, InterfaceName, IpNet, Lowered, Matcher, Outbound, PortRange, Target, Zone, lower};

const GLOBAL: &str = "global {\n    lan_interface: lan0, 'veth*'\n    wan_interface: wan0\n}\ngroup {\n    proxy {\n        policy: min\n    }\n}\n";

fn lowered(routing: &str) -> Lowered {
    let text = format!("{GLOBAL}routing {{\n{routing}\n}}\n");
    let loaded = config::load_str("t.dae", &text).unwrap_or_else(|e| panic!("{e}"));
    lower(&loaded.config, &Assets::none()).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(routing: &str) -> String {
    let text = format!("{GLOBAL}routing {{\n{routing}\n}}\n");
    let loaded = config::load_str("t.dae", &text).unwrap_or_else(|e| panic!("{e}"));
    match lower(&loaded.config, &Assets::none()) {
        Ok(_) => panic!("expected errors for {routing}"),
        Err(errors) => errors.to_string(),
    }
}

fn only_matcher(routing: &str) -> Matcher {
    let rules = lowered(routing).rules.rules;
    assert_eq!(rules.len(), 1);
    rules[0].terms[0].matcher.clone()
}

fn net(text: &str, prefix: u8) -> IpNet {
    IpNet { addr: text.parse().unwrap(), prefix }
}

#[test]
fn no_routing_section_means_direct_fallback() {
    let loaded = config::load_str("t.dae", "global {}").unwrap();
    let lowered = lower(&loaded.config, &Assets::none()).unwrap();
    assert!(lowered.rules.rules.is_empty());
    assert_eq!(lowered.rules.fallback, Outbound::direct());
}

#[test]
fn domain_keys_map_to_suffix_full_keyword_regex() {
    let Matcher::Domain(set) = only_matcher(
        "domain(Example.COM., domain: a.org, suffix: b.org, full: c.org, keyword: x, contains: y, regex: '^z', a.org) -> block",
    ) else {
        panic!()
    };
    assert_eq!(set.suffix, ["example.com", "a.org", "b.org"]);
    assert_eq!(set.full, ["c.org"]);
    assert_eq!(set.keyword, ["x", "y"]);
    assert_eq!(set.regex, ["^z"]);
}

#[test]
fn ips_and_cidrs_are_normalised_with_a_warning_for_host_bits() {
    let lowered = lowered("dip(1.2.3.4, 10.1.2.3/8, '2001:db8::/32', 1.2.3.4) -> direct");
    let Matcher::DstIp(nets) = &lowered.rules.rules[0].terms[0].matcher else { panic!() };
    assert_eq!(nets, &[net("1.2.3.4", 32), net("10.0.0.0", 8), net("2001:db8::", 32)]);
    assert_eq!(lowered.warnings.len(), 1);
    assert_eq!(
        lowered.warnings[0].to_string(),
        "t.dae:11:14: warning: `10.1.2.3/8` has host bits set; it means `10.0.0.0/8`"
    );
}

#[test]
fn aliases_ip_and_port_lower_like_dip_and_dport() {
    assert_eq!(only_matcher("ip(1.1.1.1) -> direct"), Matcher::DstIp(vec![net("1.1.1.1", 32)]));
    assert_eq!(
        only_matcher("port(80, 8000-8080) -> direct"),
        Matcher::DstPort(vec![PortRange { start: 80, end: 80 }, PortRange { start: 8000, end: 8080 }])
    );
    assert!(matches!(only_matcher("sport(1) -> direct"), Matcher::SrcPort(_)));
    assert!(matches!(only_matcher("sip(10.0.0.0/8) -> direct"), Matcher::SrcIp(_)));
}

#[test]
fn long_process_names_are_cut_to_the_kernels_fifteen_bytes() {
    let lowered = lowered("pname(systemd-resolved, curl) -> must_direct");
    assert_eq!(
        lowered.rules.rules[0].terms[0].matcher,
        Matcher::ProcessName(vec!["systemd-resolve".into(), "curl".into()])
    );
    assert!(
        lowered.warnings[0].message.contains("`systemd-resolved` matches the process it reports as `systemd-resolve`")
    );
}

#[test]
fn outbounds_must_mark_and_must_rules() {
    let rules = lowered(
        "dport(1) -> must_direct\ndport(2) -> proxy(must, mark: 0x800)\ndport(3) -> must_proxy(mark: 100)\ndport(4) -> must_rules\nfallback: must_block",
    )
    .rules;
    let outbound = |i: usize| match &rules.rules[i].action {
        Action::Outbound(o) => o.clone(),
        Action::MustRules => panic!(),
    };
    assert_eq!(outbound(0), Outbound { target: Target::Direct, must: true, mark: 0 });
    assert_eq!(outbound(1), Outbound { target: Target::Group("proxy".into()), must: true, mark: 0x800 });
    assert_eq!(outbound(2), Outbound { target: Target::Group("proxy".into()), must: true, mark: 100 });
    assert_eq!(rules.rules[3].action, Action::MustRules);
    assert_eq!(rules.fallback, Outbound { target: Target::Block, must: true, mark: 0 });
}

#[test]
fn leading_zero_mark_warns_that_dae_reads_octal() {
    let lowered = lowered("dport(1) -> direct(mark: 0100)");
    assert!(
        lowered.warnings[0].message.contains("read as decimal 100; dae reads a leading 0 as octal"),
        "{:?}",
        lowered.warnings
    );
}

#[test]
fn interface_values_inherit_the_zone_and_are_deduplicated() {
    let matcher = only_matcher("interface(LAN: lan0, veth1, lan0, Wan: wan0) -> block");
    let name = |zone, name: &str| InterfaceName { zone, name: name.into() };
    assert_eq!(
        matcher,
        Matcher::Interface(vec![name(Zone::Lan, "lan0"), name(Zone::Lan, "veth1"), name(Zone::Wan, "wan0")])
    );
}

#[test]
fn unknown_function_is_an_error_with_did_you_mean_and_caret() {
    let rendered = errors("dipp(1.1.1.1) -> direct");
    assert_eq!(
        rendered.lines().take(3).collect::<Vec<_>>(),
        ["t.dae:11:1: unknown function `dipp`; did you mean `dip`?", "dipp(1.1.1.1) -> direct", "^^^^"]
    );
}

#[test]
fn tos_points_to_dscp() {
    assert!(errors("tos(4) -> direct").contains("hint: the function matching the DSCP/ToS field is `dscp`"));
}

#[test]
fn unknown_outbound_suggests_a_group_and_points_at_its_name() {
    let rendered = errors("dport(1) -> must_proxxy");
    assert!(rendered.starts_with("t.dae:11:13: outbound `must_proxxy` is not defined: define it in section `group`, or use `direct` or `block`; did you mean `must_proxy`?"), "{rendered}");
    assert_eq!(rendered.lines().nth(2), Some("            ^^^^^^^^^^^"), "{rendered}");
}

#[test]
fn must_rules_cannot_be_the_fallback() {
    assert!(errors("fallback: must_rules").contains("`must_rules` cannot be the fallback"));
}

#[test]
fn bad_values_point_at_the_value_and_all_are_reported() {
    let rendered = errors(
        "dip(1.2.3.400) -> direct\ndport(70000) -> direct\nl4proto(TCP) -> direct\nipversion(5) -> direct\nmac('02:42') -> direct\ndscp(64) -> direct\ndomain(regex: '(') -> direct\ndomain(regexp: x) -> direct\ndport(a: 1) -> direct\npname('') -> direct\ndirect(mark: x) -> direct",
    );
    let firsts: Vec<&str> = rendered.split("\n\n").map(|block| block.lines().next().unwrap()).collect();
    assert_eq!(firsts.len(), 11, "{rendered}");
    assert!(
        firsts[0].starts_with("t.dae:11:5: invalid value in `dip(...)`: `1.2.3.400` is not an IP address"),
        "{rendered}"
    );
    assert!(firsts[1].starts_with("t.dae:12:7: invalid value in `dport(...)`"), "{rendered}");
    assert!(firsts[2].ends_with("write `tcp` in lower case"), "{rendered}");
    assert!(firsts[3].contains("expected `4` or `6`"), "{rendered}");
    assert!(firsts[4].contains("not a MAC address"), "{rendered}");
    assert!(firsts[5].contains("DSCP is 0 to 63"), "{rendered}");
    assert!(firsts[6].contains("is not a valid regular expression"), "{rendered}");
    assert!(firsts[7].contains("`domain` does not take the key `regexp`; did you mean `regex`?"), "{rendered}");
    assert!(firsts[8].contains("`dport` does not take the key `a`"), "{rendered}");
    assert!(firsts[9].contains("empty process name"), "{rendered}");
    assert!(firsts[10].starts_with("t.dae:21:1: unknown function `direct`"), "{rendered}");
}

#[test]
fn outbound_parameter_errors() {
    assert!(
        errors("dport(1) -> direct(mark: x)")
            .contains("invalid value in `direct(...)`: expected a mark in hexadecimal")
    );
    assert!(errors("dport(1) -> direct(mark: 1, mark: 2)").contains("`mark` is given more than once"));
    assert!(errors("dport(1) -> direct(fast)").contains("unknown parameter `fast`"));
    assert!(errors("dport(1) -> direct(mrak: 1)").contains("did you mean `mark`?"));
    assert!(errors("dport(1) -> must_rules(mark: 1)").contains("`must_rules` takes no parameters"));
}

#[test]
fn interface_errors_name_the_zone_rule() {
    let first_without_zone = errors("interface(lan0) -> block");
    assert!(first_without_zone.contains("`lan0` has no zone"), "{first_without_zone}");
    assert!(first_without_zone.contains("hint: start with the zone, e.g. `interface(lan: lan0)`"));
    assert!(errors("interface(dmz: lan0) -> block").contains("`interface` does not take the key `dmz`"));
    assert!(errors("interface(lan: '  ') -> block").contains("empty interface name"));
    assert!(errors("interface(lan: 'veth*') -> block").contains("is a pattern"));
    assert!(errors("interface(lan: 'a234567890123456') -> block").contains("Linux allows at most 15"));
}

#[test]
fn interface_name_outside_its_zone_lists_the_configured_interfaces() {
    let rendered = errors("interface(lan: wan0) -> block");
    assert_eq!(
        rendered.lines().next().unwrap(),
        "t.dae:11:16: `wan0` is not a LAN interface: `global.lan_interface` is `lan0`, `veth*`"
    );
    let rendered = errors("interface(wan: ppp0) -> block");
    assert!(rendered.contains("`ppp0` is not a WAN interface: `global.wan_interface` is `wan0`"), "{rendered}");
}

#[test]
fn interface_in_a_zone_with_no_configured_interface_is_an_error() {
    let loaded = config::load_str(
        "t.dae",
        "global { wan_interface: auto }\nrouting { interface(lan: eth0) -> block\ninterface(wan: anything0) -> block }",
    )
    .unwrap();
    let rendered = lower(&loaded.config, &Assets::none()).unwrap_err().to_string();
    assert!(rendered.contains("`global.lan_interface` is not set"), "{rendered}");
    assert!(!rendered.contains("anything0"), "auto accepts any WAN name: {rendered}");
}

#[test]
fn geosite_without_assets_names_the_file() {
    let rendered = errors("domain(geosite:cn) -> direct");
    assert!(
        rendered.contains("geosite `cn` of `geosite.dat`: `geosite.dat` not found: no asset folder is configured"),
        "{rendered}"
    );
}

#[test]
fn ext_needs_a_file_and_a_tag_and_no_path() {
    assert!(errors("domain(ext: 'file.dat') -> direct").contains("`ext:` takes `file:tag`"));
    assert!(errors("dip(ext: '../x.dat:tag') -> direct").contains("must be a file name in the asset folder"));
}

#[test]
fn empty_function_is_an_error() {
    assert!(errors("dip() -> direct").contains("`dip()` needs at least one value"));
}
