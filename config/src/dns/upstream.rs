//! Upstream addresses of `dns.upstream`: `scheme://host:port[/path]`.
//!
//! Schemes, as dae reads them: `udp`, `tcp`, `tcp+udp` (also `udp+tcp`: UDP first, TCP on truncation or
//! failure), `tls` (DNS over TLS, port 853), `https` (DNS over HTTPS, port 443, path `/dns-query`). dae's `h3`,
//! `http3` and `quic` are refused with a "not implemented yet" error rather than silently downgraded.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// How an upstream is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `udp://`: one datagram each way.
    Udp,
    /// `tcp://`: length-prefixed messages on pipelined connections (RFC 7766).
    Tcp,
    /// `tcp+udp://` / `udp+tcp://`: UDP, and the same query again over TCP when the UDP answer is truncated
    /// or UDP fails.
    TcpUdp,
    /// `tls://`: DNS over TLS (RFC 7858).
    Tls,
    /// `https://`: DNS over HTTPS (RFC 8484), HTTP/2.
    Https,
}

impl Scheme {
    /// The port used when the address has none (dae's defaults).
    pub const fn default_port(self) -> u16 {
        match self {
            Scheme::Udp | Scheme::Tcp | Scheme::TcpUdp => 53,
            Scheme::Tls => 853,
            Scheme::Https => 443,
        }
    }

    /// The scheme as written in a canonical configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Udp => "udp",
            Scheme::Tcp => "tcp",
            Scheme::TcpUdp => "tcp+udp",
            Scheme::Tls => "tls",
            Scheme::Https => "https",
        }
    }
}

/// The host part of an upstream address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A literal address (IPv6 written in brackets).
    Ip(IpAddr),
    /// A host name, lower-case, resolved through the bootstrap resolver at run time.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A parsed upstream address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamAddr {
    /// The transport.
    pub scheme: Scheme,
    /// Where.
    pub host: Host,
    /// The port (the scheme's default when not written).
    pub port: u16,
    /// The HTTP path of a DoH upstream (`/dns-query` when not written); empty for other schemes.
    pub path: String,
}

impl UpstreamAddr {
    /// The socket address when the host is a literal address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Name(_) => None,
        }
    }
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}{}", self.scheme.as_str(), self.host, self.port, self.path)
    }
}

/// Why an upstream address is refused; `NotImplemented` is a known scheme dae-rs does not speak yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UpstreamError {
    Invalid(String),
    NotImplemented(String),
}

/// The DoH path used when an `https://` address has none (RFC 8484's example, dae's default).
pub const DEFAULT_DOH_PATH: &str = "/dns-query";

/// Parses `scheme://host[:port][/path]`.
pub(crate) fn parse_upstream(text: &str) -> Result<UpstreamAddr, UpstreamError> {
    let invalid = |reason: String| Err(UpstreamError::Invalid(reason));
    let Some((scheme_text, rest)) = text.split_once("://") else {
        return invalid(format!(
            "`{text}` has no scheme; write e.g. `udp://{text}`, `tcp+udp://{text}`, `tls://...` or `https://...`"
        ));
    };
    let scheme = match scheme_text.to_ascii_lowercase().as_str() {
        "udp" => Scheme::Udp,
        "tcp" => Scheme::Tcp,
        "tcp+udp" | "udp+tcp" => Scheme::TcpUdp,
        "tls" => Scheme::Tls,
        "https" => Scheme::Https,
        "h3" | "http3" | "quic" => {
            return Err(UpstreamError::NotImplemented(format!(
                "`{scheme_text}://` (DNS over {}) is not implemented yet in dae-rs; use `tls://` or `https://` for an encrypted upstream",
                if scheme_text.eq_ignore_ascii_case("quic") { "QUIC" } else { "HTTP/3" }
            )));
        }
        _ => {
            return invalid(format!("unknown scheme `{scheme_text}`; use `udp`, `tcp`, `tcp+udp`, `tls` or `https`"));
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    if !path.is_empty() && scheme != Scheme::Https {
        return invalid(format!("only `https://` upstreams take a path; remove `{path}`"));
    }
    if authority.contains('@') || authority.contains('?') || authority.contains('#') {
        return invalid(format!("`{authority}` must be just `host:port`"));
    }
    let (host_text, port_text) = split_host_port(authority).map_err(UpstreamError::Invalid)?;
    let port = match port_text {
        None => scheme.default_port(),
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return invalid(format!("port `{text}` must be a number from 1 to 65535")),
        },
    };
    let host = parse_host(host_text).map_err(UpstreamError::Invalid)?;
    let path = match scheme {
        Scheme::Https if path.is_empty() || path == "/" => DEFAULT_DOH_PATH.to_owned(),
        Scheme::Https => path.to_owned(),
        _ => String::new(),
    };
    Ok(UpstreamAddr { scheme, host, port, path })
}

fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = authority.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("`{authority}`: missing `]` after the IPv6 address"));
        };
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("`{authority}`: expected `:port` after `]`")),
            },
        };
    }
    match authority.matches(':').count() {
        0 => Ok((authority, None)),
        1 => {
            let (host, port) = authority.split_once(':').expect("one colon");
            Ok((host, Some(port)))
        }
        _ => Err(format!("`{authority}`: write an IPv6 address in brackets, e.g. `[2001:db8::1]:53`")),
    }
}

fn parse_host(text: &str) -> Result<Host, String> {
    if text.is_empty() {
        return Err("the host is empty".to_owned());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(format!("`{text}` is neither an IP address nor a host name"));
    }
    Ok(Host::Name(name.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> String {
        parse_upstream(text).unwrap().to_string()
    }

    #[test]
    fn schemes_take_their_default_ports() {
        assert_eq!(ok("udp://1.1.1.1"), "udp://1.1.1.1:53");
        assert_eq!(ok("tcp://1.1.1.1:5353"), "tcp://1.1.1.1:5353");
        assert_eq!(ok("udp+tcp://dns.google"), "tcp+udp://dns.google:53");
        assert_eq!(ok("tls://dns.google"), "tls://dns.google:853");
        assert_eq!(ok("https://dns.google"), "https://dns.google:443/dns-query");
        assert_eq!(ok("https://dns.google/resolve"), "https://dns.google:443/resolve");
        assert_eq!(ok("udp://[2001:db8::1]:53"), "udp://[2001:db8::1]:53");
        assert_eq!(ok("UDP://Dns.AliDNS.com.:53"), "udp://dns.alidns.com:53");
    }

    #[test]
    fn quic_and_http3_are_named_not_implemented() {
        for text in ["h3://dns.google", "http3://dns.google", "quic://dns.adguard.com"] {
            assert!(matches!(parse_upstream(text), Err(UpstreamError::NotImplemented(_))), "{text}");
        }
    }

    #[test]
    fn malformed_addresses_say_what_to_write() {
        let reason = |text| match parse_upstream(text) {
            Err(UpstreamError::Invalid(reason)) => reason,
            other => panic!("{text}: {other:?}"),
        };
        assert!(reason("1.1.1.1:53").contains("no scheme"));
        assert!(reason("ftp://x").contains("unknown scheme"));
        assert!(reason("udp://2001:db8::1").contains("brackets"));
        assert!(reason("udp://1.1.1.1:0").contains("1 to 65535"));
        assert!(reason("udp://1.1.1.1/x").contains("path"));
        assert!(reason("udp://bad host").contains("neither"));
        assert!(reason("udp://").contains("empty"));
    }
}
