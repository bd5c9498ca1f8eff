//! The typed `global` section: every key, value syntax, defaults, warnings.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{errors_of, loaded};
use config::{DialMode, Global, KeySupport, LogLevel, NumberRange, TlsImplementation, WanInterface, global_keys};

fn global(body: &str) -> Global {
    loaded(&format!("global {{\n{body}\n}}\n")).config.global
}

fn global_error(body: &str) -> String {
    errors_of(&format!("global {{\n{body}\n}}\n"))
}

/// A valid value for every key dae's `global` section has.
const SAMPLES: [(&str, &str); 32] = [
    ("tproxy_port", "12346"),
    ("tproxy_port_protect", "false"),
    ("so_mark_from_dae", "0x800"),
    ("log_level", "debug"),
    ("tcp_check_url", "'https://example.com/generate_204,192.0.2.1'"),
    ("tcp_check_http_method", "GET"),
    ("udp_check_dns", "'dns.example:53'"),
    ("check_interval", "1m"),
    ("check_tolerance", "50ms"),
    ("lan_interface", "eth0"),
    ("wan_interface", "auto"),
    ("allow_insecure", "true"),
    ("dial_mode", "ip"),
    ("disable_waiting_network", "true"),
    ("disable_thp", "false"),
    ("enable_local_tcp_fast_redirect", "true"),
    ("auto_config_kernel_parameter", "true"),
    ("auto_config_firewall_rule", "false"),
    ("sniffing_timeout", "100ms"),
    ("tls_implementation", "utls"),
    ("utls_imitate", "firefox_auto"),
    ("tls_fragment", "true"),
    ("tls_fragment_length", "40-80"),
    ("tls_fragment_interval", "5-10"),
    ("pprof_port", "6060"),
    ("mptcp", "true"),
    ("bootstrap_resolver", "'223.5.5.5:53'"),
    ("fallback_resolver", "'[2001:4860:4860::8888]:53'"),
    ("bandwidth_max_tx", "'200 mbps'"),
    ("bandwidth_max_rx", "1g"),
    ("udphop_interval", "45s"),
    ("bpf_conn_state_map_size", "65536"),
];

#[test]
fn every_dae_global_key_is_recognised_with_a_valid_value() {
    let keys: Vec<_> = global_keys().map(|(name, _)| name).collect();
    let sampled: Vec<_> = SAMPLES.iter().map(|(name, _)| *name).collect();
    assert_eq!(keys, sampled, "every key needs a sample, in dae's order");
    let body: String = SAMPLES.iter().map(|(key, value)| format!("  {key}: {value}\n")).collect();
    let loaded = loaded(&format!("global {{\n{body}}}\n"));
    let unimplemented = global_keys().filter(|(_, support)| *support != KeySupport::Implemented).count();
    assert_eq!(loaded.warnings.len(), unimplemented, "{:#?}", loaded.warnings);
}

#[test]
fn recognised_values_are_stored_typed() {
    let body: String = SAMPLES.iter().map(|(key, value)| format!("  {key}: {value}\n")).collect();
    let g = global(&body);
    assert_eq!(g.tproxy_port, 12346);
    assert!(!g.tproxy_port_protect);
    assert_eq!(g.so_mark_from_dae, Some(0x800));
    assert_eq!(g.log_level, LogLevel::Debug);
    assert_eq!(g.tcp_check_url, ["https://example.com/generate_204", "192.0.2.1"]);
    assert_eq!(g.tcp_check_http_method, "GET");
    assert_eq!(g.check_interval, Duration::from_secs(60));
    assert_eq!(g.dial_mode, DialMode::Ip);
    assert_eq!(g.tls_implementation, TlsImplementation::Utls);
    assert_eq!(g.tls_fragment_length, NumberRange { min: 40, max: 80 });
    assert_eq!(g.pprof_port, 6060);
    assert_eq!(g.bootstrap_resolver, Some("223.5.5.5:53".parse::<SocketAddr>().unwrap()));
    assert_eq!(g.fallback_resolver, "[2001:4860:4860::8888]:53".parse::<SocketAddr>().unwrap());
    assert_eq!(g.bandwidth_max_tx, 200_000_000);
    assert_eq!(g.bandwidth_max_rx, 1_000_000_000);
    assert_eq!(g.udphop_interval, Duration::from_secs(45));
    assert_eq!(g.bpf_conn_state_map_size, 65536);
}

#[test]
fn empty_global_has_daes_defaults() {
    let g = global("");
    assert_eq!(g, Global::default());
    assert_eq!(g.tproxy_port, 12345);
    assert_eq!(g.log_level, LogLevel::Info);
    assert_eq!(g.so_mark_from_dae, None);
    assert_eq!(g.sniffing_timeout, Duration::from_millis(30));
    assert_eq!(g.check_interval, Duration::from_secs(30));
    assert_eq!(g.check_tolerance, Duration::ZERO);
    assert_eq!(g.dial_mode, DialMode::Domain);
    assert_eq!(g.bpf_conn_state_map_size, 262_144);
    assert!(g.lan_interface.is_empty() && g.wan_interface.is_empty());
    assert!(g.disable_thp && g.tproxy_port_protect);
}

#[test]
fn implemented_keys_do_not_warn_and_unimplemented_ones_name_themselves() {
    let loaded = loaded("global {\n  tproxy_port: 1\n  mptcp: false\n  auto_config_firewall_rule: true\n}\n");
    let messages: Vec<_> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        messages,
        [
            "t.dae:3:3: warning: global.mptcp is recognised but not implemented yet; it has no effect",
            "t.dae:4:3: warning: global.auto_config_firewall_rule is deprecated by dae and ignored; remove it",
        ]
    );
}

#[test]
fn durations_parse_as_go_writes_them() {
    assert_eq!(global("check_interval: 1m30s").check_interval, Duration::from_secs(90));
    assert_eq!(global("check_tolerance: 500ms").check_tolerance, Duration::from_millis(500));
    assert_eq!(global("check_interval: 2h").check_interval, Duration::from_secs(7200));
    assert_eq!(global("sniffing_timeout: 0").sniffing_timeout, Duration::ZERO);
    assert!(global_error("check_interval: 30").contains("has a number without a unit"));
    assert!(global_error("check_tolerance: -1s").contains("is negative"));
    assert!(global_error("sniffing_timeout: 1d").contains("unknown unit `d`"));
}

#[test]
fn marks_are_hex_or_decimal() {
    assert_eq!(global("so_mark_from_dae: 0x800").so_mark_from_dae, Some(0x800));
    assert_eq!(global("so_mark_from_dae: 100").so_mark_from_dae, Some(100));
    assert_eq!(global("so_mark_from_dae: 0").so_mark_from_dae, Some(0));
    assert!(global_error("so_mark_from_dae: 0x1ffffffff").contains("does not fit in 32 bits"));
    assert!(global_error("so_mark_from_dae: mark1").contains("hexadecimal (`0x800`) or decimal"));
}

#[test]
fn booleans_are_true_or_false_only() {
    assert!(global("allow_insecure: true").allow_insecure);
    assert!(!global("disable_thp: false").disable_thp);
    assert!(global_error("mptcp: on").contains("expected `true` or `false`, found `on`"));
    assert!(global_error("mptcp: 1").contains("write `true` instead of `1`"));
}

#[test]
fn enumerations_suggest_the_close_spelling() {
    assert_eq!(global("dial_mode: domain++").dial_mode, DialMode::DomainPlusPlus);
    assert_eq!(global("dial_mode: domain+").dial_mode, DialMode::DomainPlus);
    assert_eq!(global("log_level: warning").log_level, LogLevel::Warn);
    assert!(global_error("log_level: debgu").contains("did you mean `debug`?"));
    assert!(global_error("tls_implementation: rustls").contains("expected one of `tls`, `utls`, found `rustls`"));
}

#[test]
fn integers_are_range_checked() {
    assert!(global_error("tproxy_port: 0").contains("`0` is out of range; expected 1 to 65535"));
    assert!(global_error("bpf_conn_state_map_size: 0").contains("out of range"));
    assert!(global_error("bpf_conn_state_map_size: 4294967296").contains("out of range"));
    assert_eq!(global("bpf_conn_state_map_size: 4294967295").bpf_conn_state_map_size, u32::MAX);
    assert!(global_error("pprof_port: -1").contains("expected a whole number"));
}

#[test]
fn interface_lists_accept_names_globs_and_quoted_comma_lists() {
    let config = loaded("global {\n  lan_interface: eth0, 'wlan?,br-[a-z]*'\n  lan_interface: 'veth[!0]'\n}").config;
    let g = &config.global;
    let written: Vec<_> = g.lan_interface.iter().map(|p| p.as_str()).collect();
    assert_eq!(written, ["eth0", "wlan?", "br-[a-z]*", "veth[!0]"]);
    assert!(!g.lan_interface[0].is_glob());
    assert!(g.lan_interface[1].matches("wlan0"));
    assert!(g.lan_interface[2].matches("br-lan"));
    assert!(g.lan_interface[3].matches("veth1") && !g.lan_interface[3].matches("veth0"));
    let span_text = |i: usize| config.sources.text(g.lan_interface[i].span().expect("span from the file"));
    assert_eq!(span_text(0), "eth0");
    assert_eq!(span_text(2), "br-[a-z]*");
}

#[test]
fn wan_interface_accepts_auto_alongside_names() {
    let g = global("wan_interface: auto, ppp0");
    assert_eq!(g.wan_interface.len(), 2);
    assert_eq!(g.wan_interface[0], WanInterface::Auto);
    assert!(matches!(&g.wan_interface[1], WanInterface::Pattern(p) if p.as_str() == "ppp0"));
}

#[test]
fn auto_is_not_a_lan_keyword_but_an_interface_named_auto() {
    let g = global("lan_interface: auto");
    assert_eq!(g.lan_interface[0].name().as_deref(), Some("auto"));
}

#[test]
fn lan_only_wan_only_and_neither_are_all_valid() {
    assert_eq!(global("lan_interface: br0").wan_interface, []);
    assert_eq!(global("wan_interface: eth0").lan_interface, []);
    let g = global("log_level: info");
    assert!(g.lan_interface.is_empty() && g.wan_interface.is_empty());
}

#[test]
fn invalid_interface_names_are_refused() {
    assert!(global_error("lan_interface: 'eth0,,eth1'").contains("empty interface name"));
    assert!(global_error("lan_interface: sixteen_bytes_xx").contains("is 16 bytes long; Linux allows at most 15"));
    assert!(global_error("wan_interface: 'eth0 eth1'").contains("whitespace"));
    assert!(global_error("lan_interface: 'eth[0-'").contains("is malformed"));
}

#[test]
fn repeated_interface_is_kept_once_with_a_warning() {
    let loaded = loaded("global {\n  lan_interface: eth0, eth1\n  lan_interface: eth0\n}\n");
    assert_eq!(loaded.config.global.lan_interface.len(), 2);
    assert_eq!(
        loaded.warnings[0].to_string(),
        "t.dae:3:18: warning: global.lan_interface lists `eth0` more than once; the repeat is ignored"
    );
}

#[test]
fn values_of_the_wrong_shape_are_refused() {
    assert!(global_error("tproxy_port: 1, 2").contains("expected one value, found a list"));
    assert!(global_error("log_level: level(info)").contains("expected a value, not a function call"));
    assert!(global_error("log_level: info [x: 1]").contains("annotations `[...]` are not supported here"));
    assert!(global_error("f(x) -> direct").contains("a routing rule is not allowed in `global`"));
    assert!(global_error("tproxy_port 1").contains("a value without a key is not allowed in `global`"));
    assert!(global_error("nested { }").contains("a section is not allowed in `global`"));
}

#[test]
fn check_targets_are_validated() {
    assert!(global_error("tcp_check_url: 'cp.cloudflare.com'").contains("expected an http:// or https:// URL"));
    assert!(global_error("tcp_check_url: 'http://a.example,not-an-ip'").contains("expected an IP address"));
    assert!(global_error("udp_check_dns: 'dns.google:99999'").contains("expected a `host:port` DNS server"));
    assert_eq!(global("udp_check_dns: 'dns.google'").udp_check_dns, ["dns.google"]);
}

#[test]
fn resolvers_need_an_ip_and_port() {
    assert!(global_error("fallback_resolver: 'dns.google:53'").contains("expected `ip:port`"));
}

#[test]
fn global_sections_from_two_blocks_are_merged() {
    let g = loaded("global { tproxy_port: 1 }\nglobal { log_level: trace }\n").config.global;
    assert_eq!((g.tproxy_port, g.log_level), (1, LogLevel::Trace));
}

#[test]
fn unquoted_glob_class_gets_a_quoting_hint() {
    let rendered = global_error("lan_interface: veth[0-9]");
    assert!(rendered.contains("annotations `[...]` are not supported here"), "{rendered}");
    assert!(rendered.ends_with("hint: to write a pattern with `[...]`, quote it: 'veth[0-9]'"), "{rendered}");
    let rendered = global_error("lan_interface: veth[!0]");
    assert!(rendered.contains("found `!`"), "{rendered}");
    assert!(rendered.ends_with("hint: to write a pattern with `[...]`, quote it: 'veth[!0]'"), "{rendered}");
}
