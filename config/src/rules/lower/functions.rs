//! The values of each routing function but `interface`, parsed and normalised as dae does (or, where dae is
//! silent or surprising, refused with a reason; `docs/routing.md` lists the differences).

use std::net::IpAddr;

use super::{Cx, dedup_in_order};
use crate::ast::{Function, Param};
use crate::rules::geodata::to_ipnet;
use crate::rules::ir::{DomainSet, IpNet, IpVersions, L4Protos, PortRange};
use crate::values::{parse_integer, parse_range};

/// The kernel's process name (`comm`) is `TASK_COMM_LEN` = 16 bytes including the NUL: 15 usable.
pub const MAX_PNAME_LEN: usize = 15;
/// DSCP is the upper 6 bits of the ToS / traffic-class byte.
pub const MAX_DSCP: u64 = 63;
/// The geosite file `geosite:tag` reads.
pub const GEOSITE_FILE: &str = "geosite.dat";
/// The geoip file `geoip:tag` reads.
pub const GEOIP_FILE: &str = "geoip.dat";

const DOMAIN_KEYS: [&str; 8] = ["suffix", "domain", "full", "keyword", "contains", "regex", "geosite", "ext"];
const IP_KEYS: [&str; 2] = ["geoip", "ext"];

/// `domain(...)`: unkeyed values and `domain:` are suffixes, `contains:` is `keyword:`; names lower-cased, one
/// trailing dot removed; regular expressions compiled now; `geosite:` and `ext:` expanded.
pub(crate) fn domain(cx: &mut Cx<'_>, function: &Function) -> Option<DomainSet> {
    let mut set = DomainSet::default();
    let mut ok = true;
    for param in &function.params {
        let Ok(key) = cx.key("domain", param, &DOMAIN_KEYS) else {
            ok = false;
            continue;
        };
        let text = param.value.value.as_str();
        let span = param.value.value_span();
        let list = match key {
            None | Some("suffix" | "domain") => &mut set.suffix,
            Some("full") => &mut set.full,
            Some("keyword" | "contains") => &mut set.keyword,
            Some("regex") => {
                match regex_lite::Regex::new(text) {
                    Ok(_) => set.regex.push(text.to_owned()),
                    Err(error) => {
                        cx.invalid("domain", span, format!("`{text}` is not a valid regular expression: {error}"));
                        ok = false;
                    }
                }
                continue;
            }
            Some(kind @ ("geosite" | "ext")) => {
                let Some((file, tag)) = asset_ref(cx, "domain", param, kind, GEOSITE_FILE) else {
                    ok = false;
                    continue;
                };
                match cx.assets.geosite(&file, &tag) {
                    Ok(values) => merge_site(cx, &mut set, values, param),
                    Err(reason) => {
                        cx.error(asset_error(format!("geosite `{tag}` of `{file}`"), reason, param));
                        ok = false;
                    }
                }
                continue;
            }
            Some(other) => unreachable!("key `{other}` passed the allowed list"),
        };
        match domain_name(text) {
            Ok(name) => list.push(name),
            Err(reason) => {
                cx.invalid("domain", span, reason);
                ok = false;
            }
        }
    }
    for list in [&mut set.suffix, &mut set.full, &mut set.keyword, &mut set.regex] {
        dedup_in_order(list);
    }
    ok.then_some(set)
}

/// A name as written in `domain(...)`, normalised: lower case, no trailing dot.
fn domain_name(text: &str) -> Result<String, String> {
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() {
        return Err("empty domain name".to_owned());
    }
    if name.contains(char::is_whitespace) {
        return Err(format!("`{text}` contains whitespace, which no domain name does"));
    }
    Ok(name.to_ascii_lowercase())
}

/// Adds a geosite tag's values; regular expressions this engine cannot compile are dropped with a warning
/// (the file is not the user's to fix).
fn merge_site(cx: &mut Cx<'_>, set: &mut DomainSet, values: DomainSet, param: &Param) {
    set.suffix.extend(values.suffix);
    set.full.extend(values.full);
    set.keyword.extend(values.keyword);
    for pattern in values.regex {
        match regex_lite::Regex::new(&pattern) {
            Ok(_) => set.regex.push(pattern),
            Err(error) => cx.warn(
                param.span,
                format!("`{}`: skipping regular expression `{pattern}` of the asset file: {error}", param.value.value),
            ),
        }
    }
}

/// `geosite:tag` / `geoip:tag` → (default file, tag); `ext:file:tag` → (file with `.dat` added if missing, tag).
fn asset_ref(
    cx: &mut Cx<'_>,
    function: &str,
    param: &Param,
    key: &str,
    default_file: &str,
) -> Option<(String, String)> {
    let text = param.value.value.as_str();
    let span = param.value.value_span();
    if key != "ext" {
        if text.is_empty() {
            cx.invalid(function, span, format!("`{key}:` needs a tag, e.g. `{key}:cn`"));
            return None;
        }
        return Some((default_file.to_owned(), text.to_owned()));
    }
    let Some((file, tag)) = text.split_once(':').filter(|(file, tag)| !file.is_empty() && !tag.is_empty()) else {
        cx.invalid(function, span, format!("`ext:` takes `file:tag`, e.g. `ext:'mysite.dat:tag'`; found `{text}`"));
        return None;
    };
    if file.contains('/') || file == "." || file == ".." {
        cx.invalid(function, span, format!("`{file}` must be a file name in the asset folder, not a path"));
        return None;
    }
    let file = if file.ends_with(".dat") { file.to_owned() } else { format!("{file}.dat") };
    Some((file, tag.to_owned()))
}

fn asset_error(what: String, reason: String, param: &Param) -> crate::error::ConfigError {
    crate::error::ConfigError::at(param.value.value_span(), crate::error::ErrorKind::Asset { what, reason })
}

/// `dip(...)`, `ip(...)`, `sip(...)`: addresses (a host prefix), CIDRs (host bits cleared, with a warning, as dae
/// does), `geoip:` and `ext:` tags.
pub(crate) fn ip_nets(cx: &mut Cx<'_>, function: &Function) -> Option<Vec<IpNet>> {
    let name = function.name.name.as_str();
    let mut nets = Vec::new();
    let mut ok = true;
    for param in &function.params {
        let text = param.value.value.as_str();
        let span = param.value.value_span();
        match cx.key(name, param, &IP_KEYS) {
            Err(()) => ok = false,
            Ok(Some(key)) => {
                let Some((file, tag)) = asset_ref(cx, name, param, key, GEOIP_FILE) else {
                    ok = false;
                    continue;
                };
                match cx.assets.geoip(&file, &tag) {
                    Ok(values) => nets.extend(values),
                    Err(reason) => {
                        cx.error(asset_error(format!("geoip `{tag}` of `{file}`"), reason, param));
                        ok = false;
                    }
                }
            }
            Ok(None) => match parse_net(text) {
                Ok((net, exact)) => {
                    if !exact {
                        cx.warn(span, format!("`{text}` has host bits set; it means `{}/{}`", net.addr, net.prefix));
                    }
                    nets.push(net);
                }
                Err(reason) => {
                    cx.invalid(name, span, reason);
                    ok = false;
                }
            },
        }
    }
    dedup_in_order(&mut nets);
    ok.then_some(nets)
}

/// An address or CIDR, and whether it was written without host bits.
pub(crate) fn parse_net(text: &str) -> Result<(IpNet, bool), String> {
    let bad = || format!("`{text}` is not an IP address or CIDR such as `10.0.0.0/8` or `2001:db8::/32`");
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(prefix) => parse_integer(prefix, 0, max)
            .map_err(|_| format!("`{text}`: the prefix length must be a whole number from 0 to {max}"))?
            as u8,
        None => max as u8,
    };
    let net = to_ipnet(addr, prefix).ok_or_else(bad)?;
    Ok((net, net.addr == addr))
}

/// `dport(...)`, `port(...)`, `sport(...)`: ports and inclusive `a-b` ranges.
pub(super) fn ports(cx: &mut Cx<'_>, function: &Function) -> Option<Vec<PortRange>> {
    let name = function.name.name.as_str();
    let mut ranges = Vec::new();
    let mut ok = true;
    for param in &function.params {
        if cx.key(name, param, &[]).is_err() {
            ok = false;
            continue;
        }
        match parse_range(&param.value.value, u16::MAX.into()) {
            Ok((start, end)) => ranges.push(PortRange { start: start as u16, end: end as u16 }),
            Err(reason) => {
                cx.invalid(name, param.value.value_span(), format!("{reason} (ports are 0 to 65535)"));
                ok = false;
            }
        }
    }
    dedup_in_order(&mut ranges);
    ok.then_some(ranges)
}

/// Each value of a key-less function through `parse`; errors recorded; `None` if any failed.
fn each<T>(cx: &mut Cx<'_>, function: &Function, mut parse: impl FnMut(&str) -> Result<T, String>) -> Option<Vec<T>> {
    let name = function.name.name.as_str();
    let mut out = Vec::new();
    let mut ok = true;
    for param in &function.params {
        if cx.key(name, param, &[]).is_err() {
            ok = false;
            continue;
        }
        match parse(&param.value.value) {
            Ok(value) => out.push(value),
            Err(reason) => {
                cx.invalid(name, param.value.value_span(), reason);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// `l4proto(tcp, udp)`.
pub(super) fn l4proto(cx: &mut Cx<'_>, function: &Function) -> Option<L4Protos> {
    let values = each(cx, function, |text| match text {
        "tcp" | "udp" => Ok(text == "tcp"),
        _ if text.eq_ignore_ascii_case("tcp") || text.eq_ignore_ascii_case("udp") => {
            Err(format!("write `{}` in lower case", text.to_ascii_lowercase()))
        }
        _ => Err(format!("expected `tcp` or `udp`, found `{text}`")),
    })?;
    Some(L4Protos { tcp: values.contains(&true), udp: values.contains(&false) })
}

/// `ipversion(4, 6)`.
pub(super) fn ipversion(cx: &mut Cx<'_>, function: &Function) -> Option<IpVersions> {
    let values = each(cx, function, |text| match text {
        "4" | "6" => Ok(text == "4"),
        _ => Err(format!("expected `4` or `6`, found `{text}`")),
    })?;
    Some(IpVersions { v4: values.contains(&true), v6: values.contains(&false) })
}

/// `mac(...)`: six hexadecimal octets separated by `:` or `-`.
pub(super) fn macs(cx: &mut Cx<'_>, function: &Function) -> Option<Vec<[u8; 6]>> {
    let mut macs = each(cx, function, parse_mac)?;
    dedup_in_order(&mut macs);
    Some(macs)
}

pub(crate) fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let bad = || format!("`{text}` is not a MAC address such as '02:42:ac:11:00:02' (quote it)");
    let separator = if text.contains('-') { '-' } else { ':' };
    let mut mac = [0u8; 6];
    let mut parts = text.split(separator);
    for octet in &mut mac {
        let part = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
        *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

/// `pname(...)`: names longer than the kernel keeps are truncated to what the kernel reports (with a warning).
pub(super) fn process_names(cx: &mut Cx<'_>, function: &Function) -> Option<Vec<String>> {
    let mut truncated = Vec::new();
    let mut names = each(cx, function, |text| {
        if text.is_empty() {
            return Err("empty process name".to_owned());
        }
        if text.len() <= MAX_PNAME_LEN {
            return Ok(text.to_owned());
        }
        if !text.is_char_boundary(MAX_PNAME_LEN) {
            return Err(format!(
                "`{text}` is longer than the kernel's {MAX_PNAME_LEN}-byte process name and cannot be cut there without splitting a character"
            ));
        }
        let kept = text[..MAX_PNAME_LEN].to_owned();
        truncated.push((text.to_owned(), kept.clone()));
        Ok(kept)
    })?;
    for (param, (written, kept)) in
        function.params.iter().filter(|p| p.value.value.len() > MAX_PNAME_LEN).zip(truncated)
    {
        cx.warn(
            param.value.value_span(),
            format!("the kernel keeps {MAX_PNAME_LEN} bytes of a process name: `{written}` matches the process it reports as `{kept}`"),
        );
    }
    dedup_in_order(&mut names);
    Some(names)
}

/// `dscp(...)`: 0 to 63, decimal or `0x` hexadecimal.
pub(super) fn dscps(cx: &mut Cx<'_>, function: &Function) -> Option<Vec<u8>> {
    let mut values = each(cx, function, parse_dscp)?;
    dedup_in_order(&mut values);
    Some(values)
}

pub(crate) fn parse_dscp(text: &str) -> Result<u8, String> {
    let range = format!("DSCP is 0 to {MAX_DSCP}");
    let value = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            u64::from_str_radix(hex, 16).map_err(|_| format!("`{text}` is too large; {range}"))?
        }
        Some(_) => return Err(format!("`{text}` is not a hexadecimal number")),
        None if text.len() > 1 && text.starts_with('0') => {
            return Err(format!("`{text}`: dae reads a leading 0 as octal; write the value in decimal or as `0x..`"));
        }
        None => parse_integer(text, 0, u64::MAX).map_err(|_| format!("expected a number, found `{text}`; {range}"))?,
    };
    if value > MAX_DSCP {
        return Err(format!("`{text}` is out of range; {range} (the upper 6 bits of the ToS byte)"));
    }
    Ok(value as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_are_hosts_or_normalised_cidrs() {
        let (net, exact) = parse_net("10.1.2.3/8").unwrap();
        assert_eq!((net.addr.to_string(), net.prefix, exact), ("10.0.0.0".into(), 8, false));
        let (net, exact) = parse_net("2001:db8::1").unwrap();
        assert_eq!((net.prefix, exact), (128, true));
        assert_eq!(parse_net("1.2.3.4").unwrap().0.prefix, 32);
        assert!(parse_net("1.2.3.4/33").unwrap_err().contains("0 to 32"));
        assert!(parse_net("fe80::1%eth0").is_err());
        assert!(parse_net("010.0.0.1").is_err());
    }

    #[test]
    fn macs_take_colons_or_hyphens() {
        assert_eq!(parse_mac("02:42:AC:11:00:02"), Ok([2, 0x42, 0xac, 0x11, 0, 2]));
        assert_eq!(parse_mac("02-42-ac-11-00-02"), Ok([2, 0x42, 0xac, 0x11, 0, 2]));
        assert!(parse_mac("02:42:ac:11:00").is_err());
        assert!(parse_mac("02:42:ac:11:00:02:03").is_err());
        assert!(parse_mac("2:42:ac:11:00:02").is_err());
    }

    #[test]
    fn dscp_is_six_bits_decimal_or_hex() {
        assert_eq!(parse_dscp("0x4"), Ok(4));
        assert_eq!(parse_dscp("46"), Ok(46));
        assert_eq!(parse_dscp("0"), Ok(0));
        assert!(parse_dscp("64").unwrap_err().contains("0 to 63"));
        assert!(parse_dscp("010").unwrap_err().contains("octal"));
        assert!(parse_dscp("0x").is_err());
    }

    #[test]
    fn domain_names_lose_case_and_trailing_dot() {
        assert_eq!(domain_name("Example.COM."), Ok("example.com".into()));
        assert!(domain_name(".").is_err());
        assert!(domain_name("a b").is_err());
    }
}
