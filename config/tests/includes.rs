//! `include { ... }`: resolution, merging, and the refusals dae makes (escape, cycle, open permissions).

mod common;

use common::TempDir;
use config::ErrorKind;

const GLOBAL: &str = "global { lan_interface: eth0 }\n";

fn load_err(path: &std::path::Path) -> config::ConfigErrors {
    match config::load(path) {
        Ok(_) => panic!("expected {} to fail", path.display()),
        Err(errors) => errors,
    }
}

fn kinds(errors: &config::ConfigErrors) -> Vec<ErrorKind> {
    errors.errors().iter().map(|e| e.kind().clone()).collect()
}

#[test]
fn included_sections_merge_after_the_including_file_in_include_order() {
    let dir = TempDir::new("merge");
    let entry = dir.write(
        "config.dae",
        "include {\n  config.d/*.dae\n  extra.dae\n}\nglobal { lan_interface: eth0 }\nrouting {\n  pname(a) -> direct\n}\n",
    );
    dir.write("config.d/10-first.dae", "routing {\n  pname(b) -> direct\n}\nnode { n1: 'socks5://a:1' }\n");
    dir.write("config.d/20-second.dae", "routing {\n  pname(c) -> direct\n  fallback: block\n}\n");
    dir.write("config.d/notes.txt", "not a configuration");
    dir.write("extra.dae", "global { wan_interface: auto }\nrouting {\n  pname(d) -> direct\n}\n");

    let loaded = config::load(&entry).unwrap_or_else(|errors| panic!("{errors}"));
    let config = &loaded.config;
    let routing = config.routing.as_ref().unwrap();
    let order: Vec<_> = routing.rules.iter().map(|r| r.conditions[0].params[0].value.value.as_str()).collect();
    assert_eq!(order, ["a", "b", "c", "d"]);
    assert_eq!(config.routing_fallback(), "block");
    assert_eq!(config.node.len(), 1);
    assert_eq!(config.global.lan_interface.len(), 1);
    assert_eq!(config.global.wan_interface.len(), 1);
    let files: Vec<_> = config.sources.files().map(|f| f.name().to_owned()).collect();
    let expected: Vec<_> = ["config.dae", "config.d/10-first.dae", "config.d/20-second.dae", "extra.dae"]
        .iter()
        .map(|name| dir.path().join(name).display().to_string())
        .collect();
    assert_eq!(files, expected);
    let rule_b = &routing.rules[1];
    assert_eq!(config.sources.location(rule_b.span).to_string(), format!("{}:2:3", expected[1]));
}

#[test]
fn includes_of_included_files_are_relative_to_the_entry_folder() {
    let dir = TempDir::new("nested");
    let entry = dir.write("config.dae", &format!("{GLOBAL}include {{ sub/a.dae }}\n"));
    dir.write("sub/a.dae", "include { b.dae }\n");
    dir.write("b.dae", "node { 'socks5://b:1' }\n");
    dir.write("sub/b.dae", "node { 'socks5://wrong:1' }\n");
    let loaded = config::load(&entry).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(loaded.config.node[0].link.value, "socks5://b:1");
}

#[test]
fn include_leaving_the_entry_folder_is_refused() {
    let dir = TempDir::new("escape");
    dir.write("outside.dae", "node { 'socks5://x:1' }\n");
    let entry = dir.write("etc/config.dae", &format!("{GLOBAL}include {{\n  ../outside.dae\n  /etc/passwd.dae\n}}\n"));
    let errors = load_err(&entry);
    assert_eq!(errors.errors().len(), 2);
    assert!(kinds(&errors).iter().all(|k| matches!(k, ErrorKind::IncludeEscapes { .. })));
    let rendered = errors.to_string();
    let first_line = rendered.lines().next().unwrap();
    assert!(first_line.starts_with(&format!("{}:3:3: include `", entry.display())), "{rendered}");
    assert!(first_line.ends_with("included files must be in the folder of the entry file or below it"), "{rendered}");
    assert!(rendered.contains("\n  ../outside.dae\n  ^^^^^^^^^^^^^^\n"), "{rendered}");
}

#[test]
fn dot_dot_that_stays_inside_the_folder_is_allowed() {
    let dir = TempDir::new("dotdot");
    let entry = dir.write("config.dae", &format!("{GLOBAL}include {{ sub/../other.dae }}\n"));
    dir.write("other.dae", "node { 'socks5://x:1' }\n");
    assert_eq!(config::load(&entry).unwrap_or_else(|e| panic!("{e}")).config.node.len(), 1);
}

#[test]
fn include_cycle_is_refused_and_named() {
    let dir = TempDir::new("cycle");
    let entry = dir.write("config.dae", &format!("{GLOBAL}include {{ a.dae }}\n"));
    dir.write("a.dae", "include { b.dae }\n");
    dir.write("b.dae", "include { a.dae }\n");
    let errors = load_err(&entry);
    let path = |name: &str| dir.path().join(name).display().to_string();
    assert_eq!(kinds(&errors), [ErrorKind::IncludeCycle { cycle: vec![path("a.dae"), path("b.dae"), path("a.dae")] }]);
    let rendered = errors.to_string();
    assert!(
        rendered.starts_with(&format!(
            "{}:1:11: circular include: {} -> {} -> {}\ninclude {{ a.dae }}\n          ^^^^^",
            path("b.dae"),
            path("a.dae"),
            path("b.dae"),
            path("a.dae")
        )),
        "{rendered}"
    );
}

#[test]
fn glob_matching_the_entry_itself_is_a_cycle() {
    let dir = TempDir::new("self");
    let entry = dir.write("config.dae", &format!("{GLOBAL}include {{ *.dae }}\n"));
    let errors = load_err(&entry);
    assert!(matches!(&kinds(&errors)[..], [ErrorKind::IncludeCycle { cycle }] if cycle.len() == 2));
}

#[test]
fn file_included_through_two_branches_is_refused() {
    let dir = TempDir::new("diamond");
    let entry = dir.write("config.dae", &format!("{GLOBAL}include {{ a.dae b.dae }}\n"));
    dir.write("a.dae", "include { common.dae }\n");
    dir.write("b.dae", "include { common.dae }\n");
    dir.write("common.dae", "node { 'socks5://x:1' }\n");
    let errors = load_err(&entry);
    assert_eq!(
        kinds(&errors),
        [ErrorKind::IncludedTwice {
            path: dir.path().join("common.dae").display().to_string(),
            first: dir.path().join("a.dae").display().to_string(),
        }]
    );
}

#[test]
fn files_readable_by_others_or_writable_by_the_group_are_refused() {
    for mode in [0o644, 0o660, 0o604, 0o650, 0o666] {
        let dir = TempDir::new("mode");
        let entry = dir.write("config.dae", &format!("{GLOBAL}include {{ a.dae }}\n"));
        let included = dir.write_mode("a.dae", "node { 'x' }\n", mode);
        let errors = load_err(&entry);
        assert_eq!(
            kinds(&errors),
            [ErrorKind::PermissionsTooOpen { path: included.display().to_string(), mode }],
            "mode {mode:o}"
        );
        let rendered = errors.to_string();
        assert!(rendered.contains(&format!("permissions {mode:04o} for `")), "{rendered}");
        assert!(rendered.contains("run `chmod 0640 "), "{rendered}");
        assert!(rendered.contains("include { a.dae }\n          ^^^^^"), "{rendered}");
    }
}

#[test]
fn owner_only_and_group_readable_files_are_accepted() {
    for mode in [0o600, 0o640, 0o400, 0o700] {
        let dir = TempDir::new("mode-ok");
        let entry = dir.write_mode("config.dae", GLOBAL, mode);
        assert!(config::load(&entry).is_ok(), "mode {mode:o}");
    }
}

#[test]
fn entry_file_with_open_permissions_is_refused_without_a_location() {
    let dir = TempDir::new("entry-mode");
    let entry = dir.write_mode("config.dae", GLOBAL, 0o644);
    let rendered = load_err(&entry).to_string();
    assert_eq!(
        rendered,
        format!(
            "permissions 0644 for `{0}` are too open: the file must not be writable by its group nor accessible by others; \
             run `chmod 0640 {0}` or `chmod 0600 {0}`",
            entry.display()
        )
    );
}

#[test]
fn missing_plain_include_is_an_error_but_an_empty_glob_only_warns() {
    let dir = TempDir::new("missing");
    let entry = dir.write("config.dae", &format!("{GLOBAL}include {{ gone.dae }}\n"));
    assert!(matches!(&kinds(&load_err(&entry))[..], [ErrorKind::IncludeNotFound { .. }]));

    let entry = dir.write("config.dae", &format!("{GLOBAL}include {{ conf.d/*.dae }}\n"));
    let loaded = config::load(&entry).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].to_string().ends_with("warning: include `conf.d/*.dae` matches no `.dae` file"));
}

#[test]
fn plain_include_must_be_a_dae_file() {
    let dir = TempDir::new("suffix");
    let entry = dir.write("config.dae", &format!("{GLOBAL}include {{ rules.conf sub }}\n"));
    dir.write("rules.conf", "node { 'x' }\n");
    dir.write("sub/x.dae", "");
    let found = kinds(&load_err(&entry));
    assert!(matches!(&found[..], [ErrorKind::NotDaeFile { .. }, ErrorKind::IsDirectory { .. }]), "{found:?}");
}

#[test]
fn errors_in_an_included_file_name_that_file() {
    let dir = TempDir::new("child-error");
    let entry = dir.write("config.dae", &format!("{GLOBAL}include {{ a.dae }}\n"));
    let child = dir.write("a.dae", "routing {\n  dip(1.1.1.1) -> \n}\nglobl {}\n");
    let rendered = load_err(&entry).to_string();
    assert!(rendered.starts_with(&format!("{}:3:1: expected an outbound, found `}}`", child.display())), "{rendered}");
}

#[test]
fn type_errors_in_included_files_point_into_them() {
    let dir = TempDir::new("child-type");
    let entry = dir.write("config.dae", &format!("{GLOBAL}include {{ a.dae }}\n"));
    let child = dir.write("a.dae", "global {\n  log_level: loud\n}\n");
    let rendered = load_err(&entry).to_string();
    assert!(rendered.starts_with(&format!("{}:2:14: invalid value", child.display())), "{rendered}");
}

#[test]
fn missing_entry_file_reports_the_os_error() {
    let dir = TempDir::new("no-entry");
    let path = dir.path().join("absent.dae");
    assert!(matches!(&kinds(&load_err(&path))[..], [ErrorKind::Io { .. }]));
}

#[test]
fn include_entries_must_be_paths() {
    let dir = TempDir::new("include-shape");
    let entry = dir.write("config.dae", &format!("{GLOBAL}include {{ path: a.dae }}\n"));
    let rendered = load_err(&entry).to_string();
    assert!(
        rendered.starts_with(&format!(
            "{}:2:11: a declaration is not allowed in `include`; it holds file paths or globs, e.g. `config.d/*.dae`",
            entry.display()
        )),
        "{rendered}"
    );
}

#[test]
fn global_may_come_from_an_included_file() {
    let dir = TempDir::new("global-included");
    let entry = dir.write("config.dae", "include { global.dae }\nrouting { fallback: direct }\n");
    dir.write("global.dae", "global {\n  tproxy_port: 4242\n}\n");
    let loaded = config::load(&entry).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.config.global.tproxy_port, 4242);
}
