//! dae's example configuration (reconstructed in `tests/data/example.dae`) loads completely.

mod common;

use std::time::Duration;

use config::ast::Value;
use config::{DialMode, LogLevel, WanInterface};

const EXAMPLE: &str = include_str!("data/example.dae");

#[test]
fn example_loads_from_a_file_with_safe_permissions() {
    let dir = common::TempDir::new("example");
    let path = dir.write("config.dae", EXAMPLE);
    let loaded = config::load(&path).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(loaded.config.global.tproxy_port, 12345);
    assert_eq!(loaded.config.sources.files().count(), 1);
}

#[test]
fn example_global_values_are_typed() {
    let global = common::loaded(EXAMPLE).config.global;
    assert_eq!(global.log_level, LogLevel::Info);
    assert_eq!(global.so_mark_from_dae, Some(0));
    let lan: Vec<_> = global.lan_interface.iter().map(|p| p.as_str()).collect();
    assert_eq!(lan, ["docker0", "veth*"]);
    assert!(global.lan_interface[1].is_glob());
    assert_eq!(global.wan_interface, [WanInterface::Auto]);
    assert_eq!(global.check_interval, Duration::from_secs(30));
    assert_eq!(global.check_tolerance, Duration::from_millis(50));
    assert_eq!(global.sniffing_timeout, Duration::from_millis(100));
    assert_eq!(global.dial_mode, DialMode::Domain);
    assert_eq!(global.bpf_conn_state_map_size, 262_144);
    assert_eq!(global.udp_check_dns, ["dns.google.com:53", "8.8.8.8", "2001:4860:4860::8888"]);
}

#[test]
fn example_unimplemented_keys_warn_by_name() {
    let loaded = common::loaded(EXAMPLE);
    let warned: Vec<_> =
        loaded.warnings.iter().map(|w| w.message.split_whitespace().next().unwrap().to_owned()).collect();
    assert!(warned.contains(&"global.tproxy_port_protect".to_owned()), "{warned:?}");
    assert!(warned.contains(&"global.tcp_check_url".to_owned()), "{warned:?}");
    assert!(!warned.contains(&"global.tproxy_port".to_owned()), "{warned:?}");
    let first = loaded.warnings[0].to_string();
    assert_eq!(
        first,
        "t.dae:7:5: warning: global.tproxy_port_protect is recognised but not implemented yet; it has no effect"
    );
}

#[test]
fn example_routing_keeps_rules_in_order_with_outbound_parameters() {
    let config = common::loaded(EXAMPLE).config;
    let routing = config.routing.as_ref().expect("routing section");
    assert_eq!(routing.rules.len(), 10);
    assert_eq!(config.routing_fallback(), "my_group");
    let first = &routing.rules[0];
    let names: Vec<_> = first.conditions.iter().map(|f| f.name.name.as_str()).collect();
    assert_eq!(names, ["pname", "l4proto", "dport"]);
    assert_eq!(first.outbound.name.name, "must_direct");
    let disney = &routing.rules[6];
    assert_eq!(disney.outbound.name.name, "direct");
    assert_eq!(disney.outbound.params[0].key.as_ref().unwrap().name, "mark");
    assert_eq!(disney.outbound.params[0].value.value, "0x800");
    let text = config.sources.text(disney.span);
    assert_eq!(text, "domain(geosite:disney) -> direct(mark: 0x800)");
}

#[test]
fn example_dns_groups_and_links_keep_their_shape() {
    let config = common::loaded(EXAMPLE).config;
    let dns = config.dns.as_ref().expect("dns section");
    let upstreams: Vec<_> = dns.upstreams.iter().map(|u| (u.name.name.as_str(), u.url.value.as_str())).collect();
    assert_eq!(upstreams, [("alidns", "udp://dns.alidns.com:53"), ("googledns", "tcp+udp://dns.google:53")]);
    let response = dns.response.as_ref().expect("response block");
    assert_eq!(response.rules.len(), 2);
    assert!(response.rules[1].conditions[1].negated);
    assert_eq!(response.fallback.as_ref().unwrap().name.name, "accept");
    assert_eq!(dns.request.as_ref().unwrap().fallback.as_ref().unwrap().name.name, "googledns");

    let groups: Vec<_> = config.group.iter().map(|g| (g.name.name.as_str(), g.policy.name.name.as_str())).collect();
    assert_eq!(groups, [("my_group", "min_moving_avg"), ("group2", "min_avg10"), ("pinned", "fixed")]);
    let group2 = &config.group[1];
    assert_eq!(group2.filters.len(), 3);
    let annotation = group2.filters[2].annotation.as_ref().expect("annotation");
    assert_eq!(annotation.params[0].value.value, "-500ms");
    assert_eq!(config.group[2].policy.params[0].value.value, "0");
    assert_eq!(config.group[2].options[0].key.name, "check_interval");
    assert!(matches!(&config.group[2].options[0].value, Value::Literals(v) if v[0].value == "60s"));

    let tags: Vec<_> = config.subscription.iter().map(|l| l.tag.as_ref().map(|t| t.name.as_str())).collect();
    assert_eq!(tags, [Some("my_sub"), Some("another_sub"), None, None]);
    assert_eq!(config.node[0].link.value, "socks5://localhost:1080");
    assert_eq!(config.node.len(), 4);
}
