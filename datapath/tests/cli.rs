//! The `dae` command line as a user meets it: version, `validate` with good and bad configurations, `sniff`
//! on a real capture. No privileges needed.

use std::{path::PathBuf, process::Command};

fn dae() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dae"))
}

fn scratch(name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("daers-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn version_names_the_binary() {
    let out = dae().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("dae "));
}

#[test]
fn validate_says_ok_for_a_good_config_and_shows_the_error_with_a_caret_for_a_bad_one() {
    let good = scratch(
        "good.dae",
        "global {\n  lan_interface: eth0\n}\nrouting {\n  dport(53) -> direct\n  fallback: direct\n}\n",
    );
    let out = dae().args(["validate", "-c"]).arg(&good).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let bad = scratch("bad.dae", "global {\n  lan_interface: eth0\n}\nrouting {\n  dprot(53) -> direct\n}\n");
    let out = dae().args(["validate", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bad.dae:5:3"), "file:line:col in {text}");
    assert!(text.contains("dprot(53)") && text.contains('^'), "source line and caret in {text}");
    assert!(text.contains("dport"), "a did-you-mean in {text}");
}

#[test]
fn sniff_reports_the_names_in_a_real_capture() {
    let capture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../relay/tests/data/tls-http.pcap");
    let out = dae().args(["sniff", "--pcap"]).arg(&capture).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().next().is_some_and(|h| h.contains("PROTO") && h.contains("NAME")), "{table}");
    // The same names tshark dissects from this capture (relay/tests/data/tls-http.pcap.tshark.tsv).
    for name in ["tls-curl.example", "http.example", "http-v6.example"] {
        assert!(table.contains(name), "{name} in {table}");
    }
}
