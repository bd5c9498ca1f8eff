//! Node links as dae writes them: `socks5://[user:pass@]host:port`, `socks5h://...` (same as `socks5`),
//! `http://[user:pass@]host:port` (an HTTP CONNECT proxy), and the bare names `direct` and `block`.
//!
//! A link may end in `#name`, which names the node when the `node` section gives it no tag (as in dae).
//! User names and passwords may be percent-encoded (`%40` for `@`).

use std::fmt;
use std::net::IpAddr;

use thiserror::Error;

/// The longest user name or password SOCKS5 can carry: one length byte (RFC 1929 §2).
pub const MAX_CREDENTIAL_LEN: usize = 255;

/// Schemes dae knows that dae-rs does not dial yet; a link using one is refused as not implemented rather than
/// as malformed.
const UNIMPLEMENTED_SCHEMES: [&str; 14] = [
    "https",
    "socks4",
    "socks4a",
    "ss",
    "ssr",
    "vmess",
    "vless",
    "trojan",
    "trojan-go",
    "tuic",
    "juicity",
    "hysteria2",
    "hy2",
    "anytls",
];

/// What a node dials through.
#[derive(Clone, PartialEq, Eq)]
pub enum Node {
    /// Connect to the target directly.
    Direct,
    /// Refuse every connection.
    Block,
    /// Connect through a proxy server.
    Proxy(Proxy),
}

/// A proxy server and how to speak to it.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The handshake.
    pub protocol: Protocol,
    /// Where the proxy listens.
    pub server: Endpoint,
    /// Credentials, when the link carries them.
    pub credentials: Option<Credentials>,
}

/// The proxy protocols dae-rs speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// SOCKS5 (RFC 1928), with username/password authentication (RFC 1929) when credentials are given.
    Socks5,
    /// HTTP/1.1 `CONNECT`, with `Proxy-Authorization: Basic` when credentials are given.
    HttpConnect,
}

/// A host and port. A name is resolved (with the system resolver) each time it is dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host.
    pub host: Host,
    /// The port.
    pub port: u16,
}

/// An IP literal or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An address, written as a literal (IPv6 between brackets in a link).
    Ip(IpAddr),
    /// A name to resolve at dial time.
    Name(String),
}

/// A user name and password, each 1 to [`MAX_CREDENTIAL_LEN`] bytes (SOCKS5 cannot carry an empty one).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name, percent-decoded.
    pub username: String,
    /// The password, percent-decoded.
    pub password: String,
}

/// Why a link was refused. The `Display` text says what is wrong; the caller adds which link.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LinkError {
    /// No `scheme://`.
    #[error("expected `scheme://host:port` (socks5://, socks5h://, http://) or `direct`/`block`")]
    MissingScheme,
    /// A scheme dae knows that dae-rs does not dial yet.
    #[error("`{0}://` nodes are not implemented yet; dae-rs dials socks5://, socks5h:// and http:// nodes")]
    NotImplemented(String),
    /// A scheme nobody knows.
    #[error("unknown scheme `{0}://`; expected socks5://, socks5h:// or http://")]
    UnknownScheme(String),
    /// Nothing between `://` and the port.
    #[error("the host is empty")]
    EmptyHost,
    /// `[` without `]`, or a bracketed text that is not an IPv6 address.
    #[error("`{0}` is not a bracketed IPv6 address")]
    BadIpv6(String),
    /// No `:port`.
    #[error("the port is missing: write `host:port`")]
    MissingPort,
    /// A port that is not 1 to 65535.
    #[error("`{0}` is not a port (1 to 65535)")]
    BadPort(String),
    /// A path or query after the port, which a proxy link does not have.
    #[error("unexpected `{0}` after the port")]
    TrailingText(String),
    /// `user@` without `:password`, or an empty user name or password.
    #[error("credentials must be `user:password@`, both non-empty")]
    BadCredentials,
    /// A user name or password longer than SOCKS5 allows.
    #[error("user name and password must be at most {MAX_CREDENTIAL_LEN} bytes each")]
    CredentialTooLong,
    /// A `%` not followed by two hex digits, or bytes that are not UTF-8 once decoded.
    #[error("bad percent-encoding in `{0}`")]
    BadPercentEncoding(String),
}

impl LinkError {
    /// True for a well-formed link whose protocol dae-rs does not speak yet.
    pub fn is_not_implemented(&self) -> bool {
        matches!(self, LinkError::NotImplemented(_))
    }
}

/// A parsed link: the node and the name its `#fragment` gives it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedLink {
    /// The node.
    pub node: Node,
    /// The percent-decoded `#name`, when written.
    pub name: Option<String>,
}

/// Parses a node link.
pub fn parse_link(link: &str) -> Result<ParsedLink, LinkError> {
    let link = link.trim();
    let (body, name) = match link.split_once('#') {
        Some((body, fragment)) => (body, Some(percent_decode(fragment)?)),
        None => (link, None),
    };
    match body {
        "direct" => return Ok(ParsedLink { node: Node::Direct, name }),
        "block" => return Ok(ParsedLink { node: Node::Block, name }),
        _ => {}
    }
    let (scheme, rest) = body.split_once("://").ok_or(LinkError::MissingScheme)?;
    let scheme = scheme.to_ascii_lowercase();
    let protocol = match scheme.as_str() {
        "socks5" | "socks5h" => Protocol::Socks5,
        "http" => Protocol::HttpConnect,
        known if UNIMPLEMENTED_SCHEMES.contains(&known) => return Err(LinkError::NotImplemented(scheme)),
        _ => return Err(LinkError::UnknownScheme(scheme)),
    };
    let (credentials, authority) = match rest.rsplit_once('@') {
        Some((userinfo, authority)) => (Some(parse_credentials(userinfo)?), authority),
        None => (None, rest),
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    let server = parse_endpoint(authority)?;
    Ok(ParsedLink { node: Node::Proxy(Proxy { protocol, server, credentials }), name })
}

/// Parses `host:port`, `[v6]:port` or `v4:port`.
pub(crate) fn parse_endpoint(authority: &str) -> Result<Endpoint, LinkError> {
    let (host, after_host) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']').ok_or_else(|| LinkError::BadIpv6(authority.to_owned()))?;
        let ip = inside.parse::<std::net::Ipv6Addr>().map_err(|_| LinkError::BadIpv6(authority.to_owned()))?;
        (Host::Ip(IpAddr::V6(ip)), after)
    } else {
        let end = authority.find([':', '/', '?']).unwrap_or(authority.len());
        let text = &authority[..end];
        if text.is_empty() {
            return Err(LinkError::EmptyHost);
        }
        let host = match text.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(text.to_owned()),
        };
        (host, &authority[end..])
    };
    let port_text = after_host.strip_prefix(':').ok_or(if after_host.is_empty() {
        LinkError::MissingPort
    } else {
        LinkError::TrailingText(after_host.to_owned())
    })?;
    let end = port_text.find(|c: char| !c.is_ascii_digit()).unwrap_or(port_text.len());
    if end < port_text.len() {
        if end == 0 {
            return Err(LinkError::BadPort(port_text.to_owned()));
        }
        return Err(LinkError::TrailingText(port_text[end..].to_owned()));
    }
    match port_text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(Endpoint { host, port }),
        _ if port_text.is_empty() => Err(LinkError::MissingPort),
        _ => Err(LinkError::BadPort(port_text.to_owned())),
    }
}

fn parse_credentials(userinfo: &str) -> Result<Credentials, LinkError> {
    let (user, pass) = userinfo.split_once(':').ok_or(LinkError::BadCredentials)?;
    let (username, password) = (percent_decode(user)?, percent_decode(pass)?);
    if username.is_empty() || password.is_empty() {
        return Err(LinkError::BadCredentials);
    }
    if username.len() > MAX_CREDENTIAL_LEN || password.len() > MAX_CREDENTIAL_LEN {
        return Err(LinkError::CredentialTooLong);
    }
    Ok(Credentials { username, password })
}

fn percent_decode(text: &str) -> Result<String, LinkError> {
    let bad = || LinkError::BadPercentEncoding(text.to_owned());
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

/// Never prints the password.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<hidden>").finish()
    }
}

/// `socks5://user@host:port`: the password is left out so logs never carry it.
impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Direct => f.write_str("direct"),
            Node::Block => f.write_str("block"),
            Node::Proxy(proxy) => {
                let scheme = match proxy.protocol {
                    Protocol::Socks5 => "socks5",
                    Protocol::HttpConnect => "http",
                };
                match &proxy.credentials {
                    Some(credentials) => write!(f, "{scheme}://{}@{}", credentials.username, proxy.server),
                    None => write!(f, "{scheme}://{}", proxy.server),
                }
            }
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("protocol", &self.protocol)
            .field("server", &format_args!("{}", self.server))
            .field("credentials", &self.credentials)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(link: &str) -> Proxy {
        match parse_link(link).unwrap().node {
            Node::Proxy(proxy) => proxy,
            other => panic!("{link}: expected a proxy, got {other}"),
        }
    }

    #[test]
    fn socks5_with_ipv4_and_no_credentials() {
        let p = proxy("socks5://127.0.0.1:1080");
        assert_eq!(p.protocol, Protocol::Socks5);
        assert_eq!(p.server, Endpoint { host: Host::Ip("127.0.0.1".parse().unwrap()), port: 1080 });
        assert_eq!(p.credentials, None);
    }

    #[test]
    fn socks5h_is_socks5_and_names_stay_unresolved() {
        let p = proxy("socks5h://proxy.example:1080");
        assert_eq!(p.protocol, Protocol::Socks5);
        assert_eq!(p.server.host, Host::Name("proxy.example".into()));
    }

    #[test]
    fn http_with_percent_encoded_credentials_and_bracketed_ipv6() {
        let p = proxy("http://us%40er:p%3Ass@[2001:db8::1]:3128/");
        assert_eq!(p.protocol, Protocol::HttpConnect);
        assert_eq!(p.server.to_string(), "[2001:db8::1]:3128");
        let c = p.credentials.unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("us@er", "p:ss"));
    }

    #[test]
    fn fragment_names_the_node_and_direct_block_are_links() {
        let parsed = parse_link("socks5://h:1#my%20node").unwrap();
        assert_eq!(parsed.name.as_deref(), Some("my node"));
        assert_eq!(parse_link("direct").unwrap().node, Node::Direct);
        assert_eq!(parse_link("block").unwrap().node, Node::Block);
    }

    #[test]
    fn unsupported_schemes_are_not_implemented_not_malformed() {
        for link in ["vmess://abc", "ss://YWVzOnBhc3M@h:1", "trojan://pw@h:443"] {
            let error = parse_link(link).unwrap_err();
            assert!(error.is_not_implemented(), "{link}: {error}");
            assert!(error.to_string().contains("not implemented yet"), "{error}");
        }
        assert_eq!(parse_link("gopher://h:1").unwrap_err(), LinkError::UnknownScheme("gopher".into()));
    }

    #[test]
    fn malformed_links_say_what_is_wrong() {
        let cases: [(&str, LinkError); 8] = [
            ("127.0.0.1:1080", LinkError::MissingScheme),
            ("socks5://:1080", LinkError::EmptyHost),
            ("socks5://h", LinkError::MissingPort),
            ("socks5://h:0", LinkError::BadPort("0".into())),
            ("socks5://h:99999", LinkError::BadPort("99999".into())),
            ("socks5://[::1:1080", LinkError::BadIpv6("[::1:1080".into())),
            ("socks5://user@h:1", LinkError::BadCredentials),
            ("http://h:1/path", LinkError::TrailingText("/path".into())),
        ];
        for (link, expected) in cases {
            assert_eq!(parse_link(link).unwrap_err(), expected, "{link}");
        }
        let long = "u".repeat(MAX_CREDENTIAL_LEN + 1);
        assert_eq!(parse_link(&format!("socks5://{long}:p@h:1")).unwrap_err(), LinkError::CredentialTooLong);
        assert!(matches!(parse_link("socks5://u:%zz@h:1").unwrap_err(), LinkError::BadPercentEncoding(_)));
    }

    #[test]
    fn display_and_debug_never_show_the_password() {
        let parsed = parse_link("socks5://alice:secret@h:1").unwrap();
        assert_eq!(parsed.node.to_string(), "socks5://alice@h:1");
        assert!(!format!("{:?}", parsed).contains("secret"));
    }
}
