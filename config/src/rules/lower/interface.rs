//! `interface(zone: name, ...)`: zone keys, inheritance of the zone by key-less values, name checks against
//! the configured interfaces of the zone.

use super::{Cx, quoted_list};
use crate::ast::Function;
use crate::error::{ConfigError, ErrorKind};
use crate::glob::has_meta;
use crate::interface::{InterfacePattern, WanInterface};
use crate::rules::ir::{InterfaceName, Zone};
use crate::suggest::did_you_mean;

const ZONES: [&str; 2] = ["lan", "wan"];

/// The zone in force while reading the values left to right.
#[derive(Clone, Copy)]
enum Current {
    /// No key yet.
    Unset,
    /// The last key was wrong (already reported): values under it are skipped silently.
    Bad,
    Zone(Zone),
}

/// The names of one `interface(...)`, deduplicated, in order.
pub(crate) fn interfaces(cx: &mut Cx<'_>, function: &Function) -> Option<Vec<InterfaceName>> {
    let mut current = Current::Unset;
    let mut names: Vec<InterfaceName> = Vec::new();
    let mut ok = true;
    for param in &function.params {
        if let Some(key) = &param.key {
            current = match key.name.to_ascii_lowercase().as_str() {
                "lan" => Current::Zone(Zone::Lan),
                "wan" => Current::Zone(Zone::Wan),
                lower => {
                    cx.error(
                        ConfigError::at(
                            key.span,
                            ErrorKind::UnknownParamKey {
                                function: "interface".into(),
                                key: key.name.clone(),
                                suggestion: did_you_mean(lower, ZONES),
                            },
                        )
                        .with_hint("hint: the key of `interface(...)` is the zone: `lan` or `wan`"),
                    );
                    Current::Bad
                }
            };
        }
        let span = param.value.value_span();
        let zone = match current {
            Current::Zone(zone) => zone,
            Current::Bad => {
                ok = false;
                continue;
            }
            Current::Unset => {
                cx.error(
                    ConfigError::at(span, ErrorKind::InvalidArgument {
                        function: "interface".into(),
                        reason: format!("`{}` has no zone", param.value.value),
                    })
                    .with_hint(format!(
                        "hint: start with the zone, e.g. `interface(lan: {0})` or `interface(wan: {0})`; later values without a key take the zone before them",
                        param.value.value
                    )),
                );
                ok = false;
                continue;
            }
        };
        let name = param.value.value.trim();
        match check_name(cx, zone, name) {
            Ok(()) => {
                let entry = InterfaceName { zone, name: name.to_owned() };
                if !names.contains(&entry) {
                    names.push(entry);
                }
            }
            Err(NameError::Invalid(reason)) => {
                cx.invalid("interface", span, reason);
                ok = false;
            }
            Err(NameError::Unconfigured { zone, configured }) => {
                let kind = ErrorKind::UnconfiguredInterface { zone, name: name.to_owned(), configured };
                cx.error(ConfigError::at(span, kind));
                ok = false;
            }
        }
    }
    ok.then_some(names)
}

enum NameError {
    Invalid(String),
    Unconfigured { zone: &'static str, configured: String },
}

/// A valid exact interface name that a configured interface pattern of `zone` matches.
fn check_name(cx: &Cx<'_>, zone: Zone, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Invalid("empty interface name".to_owned()));
    }
    if has_meta(name) {
        return Err(NameError::Invalid(format!(
            "`{name}` is a pattern; `interface(...)` takes exact names (patterns belong in `lan_interface` / `wan_interface`)"
        )));
    }
    InterfacePattern::parse(name).map_err(|error| NameError::Invalid(error.to_string()))?;
    let global = &cx.config.global;
    let (zone_name, key, patterns): (&str, &str, Vec<String>) = match zone {
        Zone::Lan => {
            if global.lan_interface.iter().any(|pattern| pattern.matches(name)) {
                return Ok(());
            }
            ("LAN", "lan_interface", global.lan_interface.iter().map(|p| p.as_str().to_owned()).collect())
        }
        Zone::Wan => {
            let mut listed = Vec::new();
            for entry in &global.wan_interface {
                match entry {
                    WanInterface::Auto => return Ok(()),
                    WanInterface::Pattern(pattern) if pattern.matches(name) => return Ok(()),
                    WanInterface::Pattern(pattern) => listed.push(pattern.as_str().to_owned()),
                }
            }
            ("WAN", "wan_interface", listed)
        }
    };
    let configured = if patterns.is_empty() {
        format!("`global.{key}` is not set, so no {zone_name} packet is ever seen")
    } else {
        format!("`global.{key}` is {}", quoted_list(&patterns))
    };
    Err(NameError::Unconfigured { zone: zone_name, configured })
}
