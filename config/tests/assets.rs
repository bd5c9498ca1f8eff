//! geosite/geoip assets: tags expanded into rule values, `@attr` filters, `ext:` files, and errors that name
//! the missing file or tag.

mod common;

use config::rules::geodata::{DomainKind, GeoDomain, GeoIp, GeoSite, encode_geoip_list, encode_geosite_list};
use config::rules::{Assets, DEFAULT_ASSET_DIRS, IpNet, Matcher, lower};

fn domain(kind: DomainKind, value: &str, attributes: &[&str]) -> GeoDomain {
    GeoDomain { kind, value: value.into(), attributes: attributes.iter().map(|a| (*a).into()).collect() }
}

fn asset_dir() -> common::TempDir {
    let dir = common::TempDir::new("assets");
    let sites = [
        GeoSite {
            country_code: "CN".into(),
            domains: vec![
                domain(DomainKind::RootDomain, "Baidu.com", &["cn"]),
                domain(DomainKind::Full, "www.qq.com.", &[]),
                domain(DomainKind::Plain, "taobao", &["ads"]),
                domain(DomainKind::Regex, r"^cdn\d+\.cn$", &["cn", "ads"]),
                domain(DomainKind::Regex, r"\p{Han}", &[]),
            ],
        },
        GeoSite { country_code: "GOOGLE".into(), domains: vec![domain(DomainKind::RootDomain, "google.com", &[])] },
    ];
    dir.write_bytes("geosite.dat", &encode_geosite_list(&sites));
    let geoips = [
        GeoIp {
            country_code: "CN".into(),
            cidrs: vec![("1.0.1.9".parse().unwrap(), 24), ("2400:3200::".parse().unwrap(), 32)],
            reverse_match: false,
        },
        GeoIp { country_code: "NOTCN".into(), cidrs: vec![("1.0.1.0".parse().unwrap(), 24)], reverse_match: true },
    ];
    dir.write_bytes("geoip.dat", &encode_geoip_list(&geoips));
    dir.write_bytes(
        "mine.dat",
        &encode_geosite_list(&[GeoSite {
            country_code: "work".into(),
            domains: vec![domain(DomainKind::Full, "intranet.corp", &[])],
        }]),
    );
    dir.write_bytes(
        "myips.dat",
        &encode_geoip_list(&[GeoIp {
            country_code: "office".into(),
            cidrs: vec![("10.8.0.0".parse().unwrap(), 16)],
            reverse_match: false,
        }]),
    );
    dir
}

fn lowered(dir: &common::TempDir, routing: &str) -> Result<config::rules::Lowered, String> {
    let loaded = config::load_str("t.dae", &format!("global {{}}\nrouting {{\n{routing}\n}}\n")).unwrap();
    lower(&loaded.config, &Assets::dir(dir.path())).map_err(|e| e.to_string())
}

fn first_matcher(dir: &common::TempDir, routing: &str) -> Matcher {
    lowered(dir, routing).unwrap().rules.rules[0].terms[0].matcher.clone()
}

#[test]
fn geosite_tag_expands_by_kind_with_names_normalised() {
    let dir = asset_dir();
    let lowered = lowered(&dir, "domain(geosite:cn) -> direct").unwrap();
    let Matcher::Domain(set) = &lowered.rules.rules[0].terms[0].matcher else { panic!() };
    assert_eq!(set.suffix, ["baidu.com"]);
    assert_eq!(set.full, ["www.qq.com"]);
    assert_eq!(set.keyword, ["taobao"]);
    assert_eq!(set.regex, [r"^cdn\d+\.cn$"], "the pattern this engine cannot compile is dropped");
    assert!(lowered.warnings[0].message.contains(r"skipping regular expression `\p{Han}`"), "{:?}", lowered.warnings);
}

#[test]
fn geosite_attributes_keep_entries_carrying_all_of_them() {
    let dir = asset_dir();
    let Matcher::Domain(set) = first_matcher(&dir, "domain(geosite:CN@cn) -> direct") else { panic!() };
    assert_eq!((set.suffix.len(), set.regex.len(), set.full.len(), set.keyword.len()), (1, 1, 0, 0));
    let Matcher::Domain(set) = first_matcher(&dir, "domain(geosite:cn@cn@ads) -> direct") else { panic!() };
    assert_eq!((set.suffix.len(), set.regex.len(), set.keyword.len()), (0, 1, 0));
}

#[test]
fn geoip_tag_expands_to_normalised_prefixes() {
    let dir = asset_dir();
    let net = |addr: &str, prefix| IpNet { addr: addr.parse().unwrap(), prefix };
    assert_eq!(
        first_matcher(&dir, "dip(geoip:cn) -> direct"),
        Matcher::DstIp(vec![net("1.0.1.0", 24), net("2400:3200::", 32)])
    );
    assert!(
        matches!(first_matcher(&dir, "sip(geoip:cn, 10.0.0.0/8) -> direct"), Matcher::SrcIp(nets) if nets.len() == 3)
    );
}

#[test]
fn ext_reads_another_file_of_the_asset_folder() {
    let dir = asset_dir();
    let Matcher::Domain(set) = first_matcher(&dir, "domain(ext:'mine.dat:work') -> direct") else { panic!() };
    assert_eq!(set.full, ["intranet.corp"]);
    assert!(
        matches!(first_matcher(&dir, "dip(ext:\"myips:office\") -> direct"), Matcher::DstIp(nets) if nets.len() == 1)
    );
}

#[test]
fn missing_tag_is_an_error_naming_tag_file_and_a_close_tag() {
    let dir = asset_dir();
    let rendered = lowered(&dir, "domain(geosite:gogle) -> direct").unwrap_err();
    assert!(rendered.starts_with("t.dae:3:16: geosite `gogle` of `geosite.dat`: tag `gogle` not found in `geosite.dat`; did you mean `google`?"), "{rendered}");
    let rendered = lowered(&dir, "dip(geoip:us) -> direct").unwrap_err();
    assert!(rendered.contains("tag `us` not found in `geoip.dat` (2 tags)"), "{rendered}");
}

#[test]
fn missing_file_is_an_error_naming_it_and_the_folders_searched() {
    let dir = asset_dir();
    let rendered = lowered(&dir, "domain(ext:'nothere.dat:x') -> direct").unwrap_err();
    assert!(rendered.contains("`nothere.dat` not found in `"), "{rendered}");
    assert!(rendered.contains("set DAE_LOCATION_ASSET to its folder"), "{rendered}");
}

#[test]
fn reverse_match_geoip_is_refused_as_dae_does() {
    let dir = asset_dir();
    assert!(lowered(&dir, "dip(geoip:notcn) -> direct").unwrap_err().contains("reverse match"));
}

#[test]
fn a_file_that_is_not_protobuf_is_an_error_not_a_panic() {
    let dir = asset_dir();
    dir.write_bytes("geosite.dat", b"\x0a\xff\xff\xff\xff\x0f");
    assert!(
        lowered(&dir, "domain(geosite:cn) -> direct")
            .unwrap_err()
            .contains("is not a geosite file: malformed protobuf")
    );
}

#[test]
fn default_lookup_puts_the_configuration_folder_before_the_system_folders() {
    let assets = Assets::default_for(Some(std::path::Path::new("/etc/dae")));
    let dirs: Vec<String> = assets.dirs().iter().map(|d| d.display().to_string()).collect();
    let tail: Vec<String> = DEFAULT_ASSET_DIRS.iter().map(|d| (*d).to_owned()).collect();
    assert!(dirs.ends_with(&tail), "{dirs:?}");
    assert_eq!(dirs[dirs.len() - tail.len() - 1], "/etc/dae");
}
