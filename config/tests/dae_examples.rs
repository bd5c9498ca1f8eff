//! dae's documented configurations validate (`dae validate`), with the geosite/geoip tags they name supplied
//! by small asset files built here.

mod common;

use config::rules::geodata::{DomainKind, GeoDomain, GeoIp, GeoSite, encode_geoip_list, encode_geosite_list};
use config::rules::{Assets, Compiled, Target, Verdict, golden};

const EXAMPLES: [(&str, &str); 4] = [
    ("example-v2.dae", include_str!("data/dae/example-v2.dae")),
    ("routing-doc.dae", include_str!("data/dae/routing-doc.dae")),
    ("dns-doc.dae", include_str!("data/dae/dns-doc.dae")),
    ("gaming-doc.dae", include_str!("data/dae/gaming-doc.dae")),
];

fn site(code: &str, value: &str) -> GeoSite {
    GeoSite {
        country_code: code.to_ascii_uppercase(),
        domains: vec![GeoDomain { kind: DomainKind::RootDomain, value: value.into(), attributes: vec!["cn".into()] }],
    }
}

fn ips(code: &str, cidr: &str) -> GeoIp {
    let (addr, prefix) = cidr.split_once('/').unwrap();
    GeoIp {
        country_code: code.to_ascii_uppercase(),
        cidrs: vec![(addr.parse().unwrap(), prefix.parse().unwrap())],
        reverse_match: false,
    }
}

/// The tags the documentation names, one entry each.
fn assets(dir: &common::TempDir) {
    let sites: Vec<GeoSite> = [
        ("cn", "baidu.com"),
        ("category-ads", "ads.example"),
        ("category-ads-all", "ads.example"),
        ("google", "google.com"),
        ("google-scholar", "scholar.google.com"),
        ("category-scholar-!cn", "jstor.org"),
        ("category-scholar-cn", "cnki.net"),
        ("geolocation-!cn", "wikipedia.org"),
        ("disney", "disneyplus.com"),
    ]
    .iter()
    .map(|(code, value)| site(code, value))
    .collect();
    dir.write_bytes("geosite.dat", &encode_geosite_list(&sites));
    dir.write_bytes("geoip.dat", &encode_geoip_list(&[ips("private", "10.0.0.0/8"), ips("cn", "1.0.1.0/24")]));
    dir.write_bytes("yourdatfile.dat", &encode_geosite_list(&[site("yourtag", "your.example")]));
    dir.write_bytes("yourgeoip.dat", &encode_geoip_list(&[ips("yourtag", "100.64.0.0/10")]));
}

fn validate(name: &str) -> config::Validated {
    let dir = common::TempDir::new("dae-examples");
    assets(&dir);
    let text = EXAMPLES.iter().find(|(file, _)| *file == name).unwrap().1;
    let path = dir.write(name, text);
    config::validate_with(&path, &Assets::dir(dir.path())).unwrap_or_else(|e| panic!("{name}:\n{e}"))
}

#[test]
fn every_documented_example_validates() {
    for (name, _) in EXAMPLES {
        validate(name);
    }
}

#[test]
fn routing_doc_lowers_every_rule_in_order() {
    let validated = validate("routing-doc.dae");
    assert_eq!(validated.rules.rules.len(), 38);
    assert_eq!(validated.rules.fallback.target, Target::Group("my_group".into()));
}

#[test]
fn example_routes_cn_addresses_direct_and_quic_to_block() {
    let validated = validate("example-v2.dae");
    let compiled = Compiled::new(&validated.rules);
    let mut packet = golden_lan_packet();
    packet.dst = "1.0.1.7".parse().unwrap();
    assert_eq!(compiled.route(&packet), golden::direct());
    packet.dst = "93.184.216.34".parse().unwrap();
    packet.l4 = config::rules::L4::Udp;
    assert_eq!(compiled.route(&packet), golden::block());
    packet.l4 = config::rules::L4::Tcp;
    assert_eq!(compiled.route(&packet), golden::group("my_group"));
    packet.dport = 53;
    assert_eq!(compiled.route(&packet), Verdict::Dns);
}

#[test]
fn gaming_doc_marks_dscp_8() {
    let validated = validate("gaming-doc.dae");
    let mut packet = golden_lan_packet();
    packet.dscp = 8;
    assert_eq!(Compiled::new(&validated.rules).route(&packet), golden::marked(golden::direct(), 0x800));
}

#[test]
fn validate_reports_lowering_errors_with_the_file_name() {
    let dir = common::TempDir::new("dae-examples-bad");
    let path = dir.write("bad.dae", "global {}\nrouting {\n    domain(geosite:cn) -> nowhere\n}\n");
    let rendered = config::validate_with(&path, &Assets::dir(dir.path())).unwrap_err().to_string();
    let file = path.display().to_string();
    assert!(
        rendered.contains(&format!("{file}:3:20: geosite `cn` of `geosite.dat`: `geosite.dat` not found in")),
        "{rendered}"
    );
    assert!(rendered.contains(&format!("{file}:3:27: outbound `nowhere` is not defined")), "{rendered}");
}

fn golden_lan_packet() -> config::rules::Packet<'static> {
    config::rules::bench_packet()
}
