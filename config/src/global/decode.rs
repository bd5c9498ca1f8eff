//! Decoding of `global` declarations, one table entry per key.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{DialMode, Global, KeySupport, LogLevel, NumberRange, TlsImplementation};
use crate::ast::{Declaration, Item, Section};
use crate::duration::parse_duration;
use crate::error::{ConfigError, ErrorKind, Warning};
use crate::interface::{InterfacePattern, WanInterface};
use crate::source::{SourceMap, Span};
use crate::suggest::did_you_mean;
use crate::values::{invalid, parse_bandwidth, parse_bool, parse_integer, parse_mark, parse_range, pieces, single};

/// What a decoder needs besides the declaration: the full key name for messages and a place for warnings.
pub(crate) struct Cx<'a> {
    key: String,
    sources: &'a SourceMap,
    warnings: &'a mut Vec<Warning>,
}

type Decoder = fn(&mut Global, &mut Cx<'_>, &Declaration) -> Result<(), ConfigError>;

/// One `global` key.
pub(crate) struct Key {
    pub name: &'static str,
    pub support: KeySupport,
    /// Repeated declarations append (dae appends list-valued keys); others may appear once.
    appends: bool,
    decode: Decoder,
}

const fn key(name: &'static str, support: KeySupport, decode: Decoder) -> Key {
    Key { name, support, appends: false, decode }
}

use KeySupport::{Deprecated, Implemented, NotImplemented};

/// Upper bound of `tls_fragment_length` (bytes) and `tls_fragment_interval` (milliseconds). dae leaves them
/// unbounded; 65535 is the largest IPv4 packet, so no longer fragment can be sent, and it keeps the pause
/// between fragments near a minute at most.
const FRAGMENT_LIMIT: u64 = 65_535;

/// Every `global` key of dae v2.0.0 (`config/config.go`), in dae's order.
pub(crate) static KEYS: &[Key] = &[
    key("tproxy_port", Implemented, |g, cx, d| {
        g.tproxy_port = integer(cx, d, 1, u16::MAX.into())? as u16;
        Ok(())
    }),
    key("tproxy_port_protect", NotImplemented, |g, cx, d| boolean(cx, d).map(|v| g.tproxy_port_protect = v)),
    key("so_mark_from_dae", Implemented, |g, cx, d| {
        let literal = single(&cx.key, d)?;
        let mark = parse_mark(&literal.value).map_err(|reason| invalid(&cx.key, literal.span, reason))?;
        g.so_mark_from_dae = Some(mark);
        Ok(())
    }),
    key("log_level", Implemented, |g, cx, d| {
        use LogLevel::*;
        let levels =
            [("error", Error), ("warn", Warn), ("warning", Warn), ("info", Info), ("debug", Debug), ("trace", Trace)];
        g.log_level = one_of(cx, d, &levels)?;
        Ok(())
    }),
    key("tcp_check_url", NotImplemented, |g, cx, d| {
        g.tcp_check_url = target_list(cx, d, check_url, "an http:// or https:// URL")?;
        Ok(())
    }),
    key("tcp_check_http_method", NotImplemented, |g, cx, d| {
        const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
        let method = one_of(cx, d, &METHODS.map(|m| (m, m)))?;
        g.tcp_check_http_method = method.to_owned();
        Ok(())
    }),
    key("udp_check_dns", NotImplemented, |g, cx, d| {
        g.udp_check_dns = target_list(cx, d, check_host_port, "a `host:port` DNS server")?;
        Ok(())
    }),
    key("check_interval", Implemented, |g, cx, d| {
        let (interval, span) = duration(cx, d)?;
        if interval.is_zero() {
            return Err(invalid(&cx.key, span, "must be more than zero; a zero interval would check without pause"));
        }
        g.check_interval = interval;
        Ok(())
    }),
    key("check_tolerance", Implemented, |g, cx, d| duration(cx, d).map(|(v, _)| g.check_tolerance = v)),
    Key {
        appends: true,
        ..key("lan_interface", Implemented, |g, cx, d| {
            for (pattern, span) in interfaces(cx, d, InterfacePattern::parse)? {
                let pattern = pattern.with_span(span);
                if g.lan_interface.contains(&pattern) {
                    repeated_interface(cx, span, &pattern.to_string());
                } else {
                    g.lan_interface.push(pattern);
                }
            }
            Ok(())
        })
    },
    Key {
        appends: true,
        ..key("wan_interface", Implemented, |g, cx, d| {
            for (entry, span) in interfaces(cx, d, WanInterface::parse)? {
                let entry = match entry {
                    WanInterface::Pattern(pattern) => WanInterface::Pattern(pattern.with_span(span)),
                    auto => auto,
                };
                if g.wan_interface.contains(&entry) {
                    repeated_interface(cx, span, &entry.to_string());
                } else {
                    g.wan_interface.push(entry);
                }
            }
            Ok(())
        })
    },
    key("allow_insecure", NotImplemented, |g, cx, d| boolean(cx, d).map(|v| g.allow_insecure = v)),
    key("dial_mode", Implemented, |g, cx, d| {
        use DialMode::*;
        g.dial_mode =
            one_of(cx, d, &[("ip", Ip), ("domain", Domain), ("domain+", DomainPlus), ("domain++", DomainPlusPlus)])?;
        Ok(())
    }),
    key("disable_waiting_network", NotImplemented, |g, cx, d| boolean(cx, d).map(|v| g.disable_waiting_network = v)),
    key("disable_thp", NotImplemented, |g, cx, d| boolean(cx, d).map(|v| g.disable_thp = v)),
    key("enable_local_tcp_fast_redirect", Deprecated, |_, cx, d| boolean(cx, d).map(drop)),
    key("auto_config_kernel_parameter", NotImplemented, |g, cx, d| {
        boolean(cx, d).map(|v| g.auto_config_kernel_parameter = v)
    }),
    key("auto_config_firewall_rule", Deprecated, |_, cx, d| boolean(cx, d).map(drop)),
    key("sniffing_timeout", Implemented, |g, cx, d| duration(cx, d).map(|(v, _)| g.sniffing_timeout = v)),
    key("tls_implementation", NotImplemented, |g, cx, d| {
        g.tls_implementation = one_of(cx, d, &[("tls", TlsImplementation::Tls), ("utls", TlsImplementation::Utls)])?;
        Ok(())
    }),
    key("utls_imitate", NotImplemented, |g, cx, d| {
        g.utls_imitate = single(&cx.key, d)?.value.clone();
        Ok(())
    }),
    key("tls_fragment", NotImplemented, |g, cx, d| boolean(cx, d).map(|v| g.tls_fragment = v)),
    key("tls_fragment_length", NotImplemented, |g, cx, d| range(cx, d).map(|v| g.tls_fragment_length = v)),
    key("tls_fragment_interval", NotImplemented, |g, cx, d| range(cx, d).map(|v| g.tls_fragment_interval = v)),
    key("pprof_port", NotImplemented, |g, cx, d| {
        g.pprof_port = integer(cx, d, 0, u16::MAX.into())? as u16;
        Ok(())
    }),
    key("mptcp", NotImplemented, |g, cx, d| boolean(cx, d).map(|v| g.mptcp = v)),
    key("bootstrap_resolver", Implemented, |g, cx, d| socket_addr(cx, d).map(|v| g.bootstrap_resolver = Some(v))),
    key("fallback_resolver", NotImplemented, |g, cx, d| socket_addr(cx, d).map(|v| g.fallback_resolver = v)),
    key("bandwidth_max_tx", NotImplemented, |g, cx, d| bandwidth(cx, d).map(|v| g.bandwidth_max_tx = v)),
    key("bandwidth_max_rx", NotImplemented, |g, cx, d| bandwidth(cx, d).map(|v| g.bandwidth_max_rx = v)),
    key("udphop_interval", NotImplemented, |g, cx, d| duration(cx, d).map(|(v, _)| g.udphop_interval = v)),
    key("bpf_conn_state_map_size", Implemented, |g, cx, d| {
        // A map with no entries cannot be created, so 0 is refused here rather than at load time.
        g.bpf_conn_state_map_size = integer(cx, d, 1, u32::MAX.into())? as u32;
        Ok(())
    }),
];

fn boolean(cx: &Cx<'_>, d: &Declaration) -> Result<bool, ConfigError> {
    let literal = single(&cx.key, d)?;
    parse_bool(&literal.value).map_err(|reason| invalid(&cx.key, literal.span, reason))
}

fn integer(cx: &Cx<'_>, d: &Declaration, min: u64, max: u64) -> Result<u64, ConfigError> {
    let literal = single(&cx.key, d)?;
    parse_integer(&literal.value, min, max).map_err(|reason| invalid(&cx.key, literal.span, reason))
}

fn duration(cx: &Cx<'_>, d: &Declaration) -> Result<(Duration, Span), ConfigError> {
    let literal = single(&cx.key, d)?;
    let value = parse_duration(&literal.value).map_err(|e| invalid(&cx.key, literal.span, e.to_string()))?;
    Ok((value, literal.span))
}

fn range(cx: &Cx<'_>, d: &Declaration) -> Result<NumberRange, ConfigError> {
    let literal = single(&cx.key, d)?;
    let (min, max) =
        parse_range(&literal.value, FRAGMENT_LIMIT).map_err(|reason| invalid(&cx.key, literal.span, reason))?;
    let narrow = |n: u64| u32::try_from(n).expect("FRAGMENT_LIMIT fits in u32");
    Ok(NumberRange { min: narrow(min), max: narrow(max) })
}

fn bandwidth(cx: &Cx<'_>, d: &Declaration) -> Result<u64, ConfigError> {
    let literal = single(&cx.key, d)?;
    parse_bandwidth(&literal.value).map_err(|reason| invalid(&cx.key, literal.span, reason))
}

fn socket_addr(cx: &Cx<'_>, d: &Declaration) -> Result<SocketAddr, ConfigError> {
    let literal = single(&cx.key, d)?;
    literal.value.parse().map_err(|_| {
        invalid(
            &cx.key,
            literal.span,
            format!(
                "expected `ip:port` such as '8.8.8.8:53' or '[2001:4860:4860::8888]:53', found `{}`",
                literal.value
            ),
        )
    })
}

/// One of a fixed set of words, with a suggestion when the word is close to one of them.
fn one_of<T: Copy>(cx: &Cx<'_>, d: &Declaration, choices: &[(&'static str, T)]) -> Result<T, ConfigError> {
    let literal = single(&cx.key, d)?;
    if let Some((_, value)) = choices.iter().find(|(word, _)| *word == literal.value) {
        return Ok(*value);
    }
    let names: Vec<_> = choices.iter().map(|(word, _)| format!("`{word}`")).collect();
    let mut reason = format!("expected one of {}, found `{}`", names.join(", "), literal.value);
    if let Some(close) = did_you_mean(&literal.value, choices.iter().map(|(word, _)| *word)) {
        reason.push_str(&format!("; did you mean `{close}`?"));
    }
    Err(invalid(&cx.key, literal.span, reason))
}

/// A health-check target list: the first element checked by `first`, the rest fixed IP addresses.
fn target_list(
    cx: &Cx<'_>,
    d: &Declaration,
    first: fn(&str) -> bool,
    first_what: &str,
) -> Result<Vec<String>, ConfigError> {
    let list = pieces(&cx.key, d)?;
    for (index, piece) in list.iter().enumerate() {
        let ok = if index == 0 { first(&piece.text) } else { piece.text.parse::<IpAddr>().is_ok() };
        if !ok {
            let expected = if index == 0 { first_what } else { "an IP address" };
            return Err(invalid(&cx.key, piece.span, format!("expected {expected}, found `{}`", piece.text)));
        }
    }
    Ok(list.into_iter().map(|piece| piece.text).collect())
}

fn check_url(text: &str) -> bool {
    ["http://", "https://"]
        .iter()
        .filter_map(|scheme| text.strip_prefix(scheme))
        .any(|rest| rest.split(['/', '?', '#']).next().is_some_and(|host| !host.is_empty()))
}

fn check_host_port(text: &str) -> bool {
    if text.parse::<SocketAddr>().is_ok() || text.parse::<IpAddr>().is_ok() {
        return true;
    }
    match text.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && !host.contains(':') && parse_integer(port, 1, 65535).is_ok(),
        None => !text.is_empty(),
    }
}

/// Every element of an interface list, parsed by `parse`, with its span.
fn interfaces<T, E: std::fmt::Display>(
    cx: &Cx<'_>,
    d: &Declaration,
    parse: fn(&str) -> Result<T, E>,
) -> Result<Vec<(T, Span)>, ConfigError> {
    pieces(&cx.key, d)?
        .into_iter()
        .map(|piece| {
            parse(&piece.text).map(|value| (value, piece.span)).map_err(|e| invalid(&cx.key, piece.span, e.to_string()))
        })
        .collect()
}

fn repeated_interface(cx: &mut Cx<'_>, span: Span, name: &str) {
    let message = format!("{} lists `{name}` more than once; the repeat is ignored", cx.key);
    cx.warnings.push(Warning::at(cx.sources, span, message));
}

/// Type-checks every declaration of the (merged) `global` section into a [`Global`].
pub(crate) fn decode_global(
    section: &Section,
    sources: &SourceMap,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<Warning>,
) -> Global {
    let mut global = Global::default();
    let mut first_seen: HashMap<&'static str, Span> = HashMap::new();
    for item in &section.items {
        let declaration = match item {
            Item::Declaration(declaration) => declaration,
            other => {
                errors.push(misplaced(other));
                continue;
            }
        };
        let name = declaration.key.name.as_str();
        let Some(key) = KEYS.iter().find(|key| key.name == name) else {
            errors.push(ConfigError::at(
                declaration.key.span,
                ErrorKind::UnknownKey {
                    section: "global".to_owned(),
                    key: name.to_owned(),
                    suggestion: did_you_mean(name, KEYS.iter().map(|key| key.name)),
                },
            ));
            continue;
        };
        if !key.appends {
            if let Some(&first) = first_seen.get(key.name) {
                errors.push(
                    ConfigError::at(
                        declaration.key.span,
                        ErrorKind::DuplicateKey { section: "global".to_owned(), key: name.to_owned() },
                    )
                    .with_note("first set", first),
                );
                continue;
            }
            first_seen.insert(key.name, declaration.key.span);
        }
        let mut cx = Cx { key: format!("global.{name}"), sources, warnings: &mut *warnings };
        if let Err(error) = (key.decode)(&mut global, &mut cx, declaration) {
            errors.push(error);
            continue;
        }
        let note = match key.support {
            Implemented => continue,
            NotImplemented => {
                format!("global.{name} is recognised but not implemented yet; it has no effect")
            }
            Deprecated => format!("global.{name} is deprecated by dae and ignored; remove it"),
        };
        warnings.push(Warning::at(sources, declaration.key.span, note));
    }
    global
}

fn misplaced(item: &Item) -> ConfigError {
    let what = match item {
        Item::Section(_) => "a section",
        Item::Rule(_) => "a routing rule",
        Item::Literal(_) => "a value without a key",
        Item::Declaration(_) => unreachable!("declarations are decoded"),
    };
    ConfigError::at(
        item.span(),
        ErrorKind::Misplaced {
            what,
            section: "global".to_owned(),
            expected: "it holds `key: value` declarations".to_owned(),
        },
    )
}
