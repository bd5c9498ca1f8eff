//! Golden tests of the `dns` section against dae's semantics (`shared/reference/dae.md` section 3): defaults,
//! request and response decisions, interface zones shared with routing, and errors with carets.

use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::rules::geodata::{DomainKind, GeoDomain, GeoIp, GeoSite, encode_geoip_list, encode_geosite_list};

fn load(text: &str) -> Result<DnsConfig, String> {
    load_with(text, &Assets::none())
}

fn load_with(text: &str, assets: &Assets) -> Result<DnsConfig, String> {
    let loaded = crate::load_str("t.dae", text).map_err(|e| e.to_string())?;
    lower(&loaded.config, assets).map(|lowered| lowered.dns).map_err(|e| e.to_string())
}

fn dns_config(global: &str, body: &str) -> String {
    format!("global {{ {global} }}\ndns {{\n{body}\n}}\n")
}

fn query<'a>(qname: &'a str, qtype: u16) -> QueryFacts<'a> {
    QueryFacts { qname, qtype, direction: None, interface: None, src: None }
}

fn lan<'a>(qname: &'a str, qtype: u16, ifname: &'a str) -> QueryFacts<'a> {
    QueryFacts { direction: Some(PacketDirection::LanIn), interface: Some(ifname), ..query(qname, qtype) }
}

const A: u16 = 1;
const AAAA: u16 = 28;
const HTTPS: u16 = 65;

#[test]
fn absent_section_means_asis_accept_and_daes_cache_defaults() {
    let dns = load("global {}").unwrap();
    assert_eq!(dns, DnsConfig::default());
    let router = DnsRouter::new(&dns);
    assert_eq!(router.request(&query("example.com", A)), RequestAction::AsIs);
    assert!(dns.optimistic_cache);
    assert_eq!(dns.optimistic_cache_ttl, Some(Duration::from_secs(60)));
    assert_eq!(dns.max_cache_entries, DEFAULT_MAX_CACHE_ENTRIES);
}

#[test]
fn daes_documented_example_routes_as_dae_does() {
    let dir = std::env::temp_dir().join(format!("daers-dns-assets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let site = |code: &str, kind, value: &str, attributes: &[&str]| GeoSite {
        country_code: code.into(),
        domains: vec![GeoDomain {
            kind,
            value: value.into(),
            attributes: attributes.iter().map(|a| (*a).to_owned()).collect(),
        }],
    };
    let sites = [
        site("category-ads-all", DomainKind::RootDomain, "ads.example", &[]),
        site("google", DomainKind::RootDomain, "google.cn", &["cn"]),
        site("cn", DomainKind::RootDomain, "baidu.com", &[]),
    ];
    std::fs::write(dir.join("geosite.dat"), encode_geosite_list(&sites)).unwrap();
    let private = GeoIp {
        country_code: "private".into(),
        cidrs: vec![("10.0.0.0".parse().unwrap(), 8), ("fc00::".parse().unwrap(), 7)],
        reverse_match: false,
    };
    std::fs::write(dir.join("geoip.dat"), encode_geoip_list(&[private])).unwrap();
    let text = dns_config(
        "wan_interface: auto",
        "ipversion_prefer: 4
         fixed_domain_ttl { ddns.example.org: 10
                            test.example.org: 3600 }
         upstream { alidns: 'udp://dns.alidns.com:53'
                    googledns: 'tcp+udp://dns.google:53' }
         routing {
             request { qname(geosite:category-ads-all) -> reject
                       qname(geosite:google@cn) -> alidns
                       qname(suffix: abc.com, keyword: google) -> googledns
                       qname(full: ok.com, regex: '^yes') -> googledns
                       qtype(a, aaaa) -> alidns
                       qtype(cname) -> googledns
                       fallback: asis }
             response { upstream(googledns) -> accept
                        ip(geoip:private) && !qname(geosite:cn) -> googledns
                        fallback: accept } }",
    );
    let dns = load_with(&text, &Assets::dir(&dir)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let (ali, google) = (dns.upstream_id("alidns").unwrap(), dns.upstream_id("googledns").unwrap());
    assert_eq!(dns.upstreams[ali].addr.to_string(), "udp://dns.alidns.com:53");
    assert_eq!(dns.upstreams[google].addr.scheme, Scheme::TcpUdp);
    assert_eq!(dns.fixed_domain_ttl, vec![("ddns.example.org".into(), 10), ("test.example.org".into(), 3600)]);
    assert_eq!(dns.ipversion_prefer, Some(IpVersionPrefer::V4));
    let router = DnsRouter::new(&dns);
    let request = |name, qtype| router.request(&query(name, qtype));
    assert_eq!(request("x.ads.example", A), RequestAction::Reject, "first rule wins over qtype(a)");
    assert_eq!(request("www.google.cn", HTTPS), RequestAction::Upstream(ali));
    assert_eq!(request("mail.abc.com", HTTPS), RequestAction::Upstream(google));
    assert_eq!(request("notgoogle.org", HTTPS), RequestAction::Upstream(google), "keyword");
    assert_eq!(request("ok.com", HTTPS), RequestAction::Upstream(google));
    assert_eq!(request("sub.ok.com", HTTPS), RequestAction::AsIs, "full: is exact");
    assert_eq!(request("yes.example", HTTPS), RequestAction::Upstream(google), "regex");
    assert_eq!(request("example.net", AAAA), RequestAction::Upstream(ali));
    assert_eq!(request("example.net", 5), RequestAction::Upstream(google));
    assert_eq!(request("example.net", HTTPS), RequestAction::AsIs, "fallback");

    let private: [IpAddr; 1] = ["10.1.2.3".parse().unwrap()];
    let public: [IpAddr; 1] = ["93.184.216.34".parse().unwrap()];
    let response = |name, upstream, ips: &[IpAddr]| {
        router.response(&ResponseFacts { query: query(name, A), upstream, answer_ips: ips })
    };
    assert_eq!(response("intranet.example", ali, &private), ResponseAction::Upstream(google));
    assert_eq!(response("www.baidu.com", ali, &private), ResponseAction::Accept, "!qname(geosite:cn)");
    assert_eq!(response("intranet.example", google, &private), ResponseAction::Accept, "upstream() first");
    assert_eq!(response("intranet.example", ali, &public), ResponseAction::Accept);
}

#[test]
fn interface_rules_keep_routings_zone_semantics() {
    let text = dns_config(
        "lan_interface: lan0, lan1\n wan_interface: wan0",
        "upstream { a: 'udp://10.0.0.1:53'
                    b: 'udp://10.0.0.2:53'
                    c: 'udp://10.0.0.3:53' }
         routing { request { interface(lan: lan0) -> a
                             !interface(lan: lan0) -> b
                             interface(wan: wan0) -> c
                             fallback: asis } }",
    );
    let dns = load(&text).unwrap();
    assert!(dns.uses_interface);
    let router = DnsRouter::new(&dns);
    assert_eq!(router.request(&lan("x.com", A, "lan0")), RequestAction::Upstream(0));
    assert_eq!(router.request(&lan("x.com", A, "lan1")), RequestAction::Upstream(1));
    let wan = QueryFacts { direction: Some(PacketDirection::WanOut), interface: Some("wan0"), ..query("x.com", A) };
    assert_eq!(router.request(&wan), RequestAction::Upstream(2), "a lan: term never speaks about WAN-out");
    assert_eq!(router.request(&query("x.com", A)), RequestAction::AsIs, "no zone: no interface term holds");
}

#[test]
fn client_source_and_qtype_numbers_route_requests() {
    let text = dns_config(
        "",
        "upstream { kids: 'udp://10.0.0.1:53' }
         routing { request { sip(192.168.50.0/24) && qtype(1, AAAA) -> kids
                             fallback: reject } }",
    );
    let dns = load(&text).unwrap();
    assert!(!dns.uses_interface);
    let router = DnsRouter::new(&dns);
    let from = |src: &str, qtype| QueryFacts { src: Some(src.parse().unwrap()), ..query("a.b", qtype) };
    assert_eq!(router.request(&from("192.168.50.7", A)), RequestAction::Upstream(0));
    assert_eq!(router.request(&from("192.168.50.7", AAAA)), RequestAction::Upstream(0));
    assert_eq!(router.request(&from("192.168.50.7", HTTPS)), RequestAction::Reject);
    assert_eq!(router.request(&from("192.168.51.7", A)), RequestAction::Reject);
}

#[test]
fn options_are_typed_with_daes_spellings() {
    let text = dns_config(
        "",
        "optimistic_cache: false
         optimistic_cache_ttl: 0
         max_cache_size: 1000
         bind: 'tcp+udp://127.0.0.1:5353'",
    );
    let dns = load(&text).unwrap();
    assert!(!dns.optimistic_cache);
    assert_eq!(dns.optimistic_cache_ttl, None, "0 serves stale answers forever, as in dae");
    assert_eq!(dns.max_cache_entries, 1000);
    assert_eq!(dns.bind, vec![Bind { addr: "127.0.0.1:5353".parse().unwrap(), udp: true, tcp: true }]);
    let bare = load(&dns_config("", "bind: '[::1]:53'\n optimistic_cache_ttl: 2m")).unwrap();
    assert_eq!(bare.bind, vec![Bind { addr: "[::1]:53".parse().unwrap(), udp: true, tcp: false }]);
    assert_eq!(bare.optimistic_cache_ttl, Some(Duration::from_secs(120)));
}

#[test]
fn unknown_upstream_in_a_rule_is_underlined_with_a_suggestion() {
    let text = "global {}\ndns {\n  upstream { alidns: 'udp://1.1.1.1:53' }\n  routing { request {\n    qtype(a) -> alidsn\n    fallback: asis } }\n}\n";
    let error = load(text).unwrap_err();
    assert_eq!(
        error,
        "t.dae:5:17: DNS upstream `alidsn` is not defined: define it in `dns { upstream { alidsn: 'udp://...' } }`, or use `asis` or `reject`; did you mean `alidns`?\n\
         \x20   qtype(a) -> alidsn\n\
         \x20               ^^^^^^"
    );
}

#[test]
fn quic_upstream_is_not_implemented_yet_and_says_so() {
    let text = "global {}\ndns {\n  upstream { q: 'quic://dns.adguard.com:853' }\n}\n";
    let error = load(text).unwrap_err();
    assert!(error.starts_with("t.dae:3:18: upstream `q`: `quic://` (DNS over QUIC) is not implemented yet"), "{error}");
    let carets = format!("\n{}{}", " ".repeat(17), "^".repeat("quic://dns.adguard.com:853".len()));
    assert!(error.ends_with(&carets), "{error}");
}

#[test]
fn functions_and_actions_of_the_other_block_are_refused_with_a_hint() {
    let text = dns_config(
        "",
        "upstream { a: 'udp://1.1.1.1:53' }
         routing { request { upstream(a) -> a
                             qtype(bogus) -> accept
                             fallback: a }
                   response { sip(10.0.0.0/8) -> asis
                              fallback: accept } }",
    );
    let error = load(&text).unwrap_err();
    assert!(error.contains("unknown function `upstream`"), "{error}");
    assert!(error.contains("hint: `upstream(...)` looks at the answer; use it in `response { }`"), "{error}");
    assert!(error.contains("unknown record type `bogus`"), "{error}");
    assert!(error.contains("`accept` is a response action"), "{error}");
    assert!(error.contains("hint: `sip(...)` is a request function"), "{error}");
    assert!(error.contains("`asis` is a request action"), "{error}");
}

#[test]
fn bad_options_name_the_key_and_what_is_accepted() {
    let error = load(&dns_config("", "ipversion_prefer: 5\n bind: 'dns.local:53'\n max_cache_size: -1")).unwrap_err();
    assert!(error.contains("invalid value for `dns.ipversion_prefer`: expected `4` or `6`"), "{error}");
    assert!(error.contains("invalid value for `dns.bind`: `dns.local:53` is not `ip:port`"), "{error}");
    assert!(error.contains("invalid value for `dns.max_cache_size`"), "{error}");
    let error = load(&dns_config("", "fixed_domain_ttl { a.com: forever }")).unwrap_err();
    assert!(error.contains("invalid value for `dns.fixed_domain_ttl.a.com`"), "{error}");
}

#[test]
fn interface_names_outside_the_configured_zone_are_errors_as_in_routing() {
    let text =
        dns_config("lan_interface: lan0", "routing { request { interface(lan: eth9) -> reject\n fallback: asis } }");
    let error = load(&text).unwrap_err();
    assert!(error.contains("`eth9` is not a LAN interface"), "{error}");
}
