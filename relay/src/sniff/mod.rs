//! Sniffers that find the domain a client is going to, for domain routing: QUIC Initial (v1, v2, drafts),
//! TLS ClientHello over TCP, and HTTP/1 `Host`. All are sans-IO: bytes and time in, decisions out.
//!
//! - [`quic::QuicSessions`]: per-worker UDP sniffing with bounded sessions; returns held datagrams in order.
//! - [`tcp::TcpSniffer`]: one TCP connection's first bytes, with `sniffing_timeout`.
//! - [`route::decide`]: what a sniffed name changes, under dae's `dial_mode`.
//! - [`pcap::report`]: the same sniffers run over a capture file (`dae sniff --pcap`).

pub mod http;
pub mod pcap;
pub mod quic;
pub mod route;
pub mod tcp;
pub mod tls;
mod wire;

use std::fmt;

/// The protocol a name was sniffed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// QUIC Initial (the ClientHello's SNI).
    Quic,
    /// TLS over TCP (the ClientHello's SNI).
    Tls,
    /// HTTP/1 (the `Host` header).
    Http,
}

impl fmt::Display for Protocol {
    /// `quic`, `tls` or `http`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Quic => "quic",
            Self::Tls => "tls",
            Self::Http => "http",
        })
    }
}

/// The longest host name (RFC 1035: 253 characters in text form without the trailing dot).
pub const MAX_HOST_LEN: usize = 253;
/// The longest label of a host name (RFC 1035).
const MAX_LABEL_LEN: usize = 63;

/// A sniffed host name as the router sees it: one trailing dot removed, lower-cased. `None` unless every byte
/// is an ASCII letter, digit, `-`, `_` or `.`, no label is empty or longer than 63, and the whole is at most
/// [`MAX_HOST_LEN`] (underscores are not valid in host names but occur in real SNI, so they are kept).
pub fn normalize_host(raw: &[u8]) -> Option<String> {
    let name = raw.strip_suffix(b".").unwrap_or(raw);
    if name.is_empty() || name.len() > MAX_HOST_LEN {
        return None;
    }
    let valid_byte = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let valid_label = |l: &[u8]| !l.is_empty() && l.len() <= MAX_LABEL_LEN;
    if !name.iter().all(valid_byte) || !name.split(|&b| b == b'.').all(valid_label) {
        return None;
    }
    // Every byte is ASCII, so this conversion cannot fail.
    std::str::from_utf8(name).ok().map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_lower_cased_and_lose_one_trailing_dot() {
        assert_eq!(normalize_host(b"WWW.Example.COM.").as_deref(), Some("www.example.com"));
        assert_eq!(normalize_host(b"_dmarc.example").as_deref(), Some("_dmarc.example"));
        assert_eq!(normalize_host(b"192.0.2.1").as_deref(), Some("192.0.2.1"));
    }

    #[test]
    fn malformed_host_names_are_refused() {
        let long_label = [b'a'; 64];
        let long_name = [b'a'; MAX_HOST_LEN + 1];
        for bad in [&b""[..], b".", b"a..b", b"a b", b"a/b", b"a:1", &long_label, &long_name, b"ex\xffample"] {
            assert_eq!(normalize_host(bad), None, "{:?}", bad.escape_ascii().to_string());
        }
    }
}
