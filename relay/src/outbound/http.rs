//! HTTP/1.1 `CONNECT` proxies: a sans-IO request encoder and response-head parser, and the blocking client on
//! top ([`connect`]).
//!
//! The response head is read with `MSG_PEEK` first and then consumed exactly up to its blank line, so bytes the
//! target sends right after the proxy's `200` stay in the socket for the relay.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use thiserror::Error;

use super::Target;
use super::dial::{Deadline, connect_endpoint, with_deadline};
use super::exchange::Exchange;
use super::link::{Credentials, Proxy};

/// The longest response head accepted. Proxies answer CONNECT with a status line and a few headers; 8 KiB is
/// the common server-side limit for request heads and far above any real CONNECT reply.
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;
/// The end of a response head.
pub(crate) const HEAD_END: &[u8] = b"\r\n\r\n";

/// An HTTP proxy refused or garbled the CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HttpError {
    /// A first line that is not `HTTP/1.x NNN reason`.
    #[error("the proxy's reply is not an HTTP/1.x status line: {0:?}")]
    BadStatusLine(String),
    /// 407 (or 401, which tinyproxy sends): the proxy wants credentials or refused the ones given.
    #[error("the proxy requires authentication ({0}): add or fix `user:pass@` in the link")]
    AuthRequired(u16),
    /// Any other status outside 2xx.
    #[error("the proxy refused CONNECT with status {status} {reason}")]
    Refused {
        /// The status code.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// No blank line within [`MAX_RESPONSE_HEAD`] bytes.
    #[error("the proxy's reply head exceeds {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLong,
    /// The proxy closed the connection before the end of the head.
    #[error("the proxy closed the connection during the CONNECT reply")]
    Closed,
}

impl HttpError {
    /// The `io::ErrorKind` a caller of `dial` sees.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            HttpError::AuthRequired(_) | HttpError::Refused { status: 403, .. } => io::ErrorKind::PermissionDenied,
            HttpError::Refused { status: 502 | 503, .. } => io::ErrorKind::ConnectionRefused,
            HttpError::Refused { status: 504, .. } => io::ErrorKind::TimedOut,
            HttpError::Closed => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        }
    }
}

impl From<HttpError> for io::Error {
    fn from(error: HttpError) -> Self {
        io::Error::new(error.io_kind(), error)
    }
}

/// `CONNECT ip:port HTTP/1.1` with a `Host` header and, given credentials, `Proxy-Authorization: Basic`.
pub fn encode_connect(target: SocketAddr, credentials: Option<&Credentials>) -> Vec<u8> {
    encode_connect_to(&target.to_string(), credentials)
}

/// [`encode_connect`] to `authority` (`host:port`, `[v6]:port` or `name:port`).
pub fn encode_connect_to(authority: &str, credentials: Option<&Credentials>) -> Vec<u8> {
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(credentials) = credentials {
        let token = base64(format!("{}:{}", credentials.username, credentials.password).as_bytes());
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// The CONNECT request for a dial's target: the address, or the name and port.
pub fn encode_request(target: Target<'_>, credentials: Option<&Credentials>) -> Vec<u8> {
    match target {
        Target::Addr(addr) => encode_connect(addr, credentials),
        Target::Domain { name, port, .. } => encode_connect_to(&format!("{name}:{port}"), credentials),
    }
}

/// The length of the response head (through its blank line) if `buf` holds all of it.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    buf.windows(HEAD_END.len()).position(|window| window == HEAD_END).map(|at| at + HEAD_END.len())
}

/// Checks the status line of a complete head: `Ok` for 2xx.
pub fn check_status(head: &[u8]) -> Result<u16, HttpError> {
    let line_end = head.windows(2).position(|w| w == b"\r\n").unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let bad = || HttpError::BadStatusLine(line.chars().take(80).collect());
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().ok_or_else(bad)?;
    if !version.starts_with("HTTP/1.") {
        return Err(bad());
    }
    let status_text = parts.next().ok_or_else(bad)?;
    let status: u16 = status_text
        .parse()
        .ok()
        .filter(|_| status_text.len() == 3)
        .filter(|s| (100..600).contains(s))
        .ok_or_else(bad)?;
    match status {
        200..=299 => Ok(status),
        401 | 407 => Err(HttpError::AuthRequired(status)),
        _ => Err(HttpError::Refused { status, reason: parts.next().unwrap_or("").trim().to_owned() }),
    }
}

/// Connects to `proxy` and asks it to CONNECT to `target`; every step finishes within `timeout`.
pub(crate) fn connect(proxy: &Proxy, target: Target<'_>, mark: u32, timeout: Duration) -> io::Result<TcpStream> {
    let deadline = Deadline::after(timeout);
    let mut stream = connect_endpoint(&proxy.server, mark, &deadline)?;
    let request = encode_request(target, proxy.credentials.as_ref());
    with_deadline(&mut stream, &deadline, |io| Exchange::http(request).drive(io).map(drop))?;
    Ok(stream)
}

/// Standard base64 with padding (RFC 4648 §4), for the Basic credentials.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let bytes = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let group = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(char::from(ALPHABET[(group >> (18 - 6 * index) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let vectors =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")];
        for (input, expected) in vectors {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn connect_request_names_the_target_and_carries_basic_auth() {
        let target: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let credentials = Credentials { username: "Aladdin".into(), password: "open sesame".into() };
        let request = String::from_utf8(encode_connect(target, Some(&credentials))).unwrap();
        assert_eq!(
            request,
            "CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\
             Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
        let plain = encode_connect("192.0.2.1:80".parse().unwrap(), None);
        assert_eq!(plain, b"CONNECT 192.0.2.1:80 HTTP/1.1\r\nHost: 192.0.2.1:80\r\n\r\n");
    }

    #[test]
    fn head_ends_at_the_first_blank_line() {
        assert_eq!(head_len(b"HTTP/1.1 200 OK\r\n\r\ntunnel"), Some(19));
        assert_eq!(head_len(b"HTTP/1.1 200 OK\r\nVia: x\r\n"), None);
    }

    #[test]
    fn status_2xx_is_accepted_and_others_explained() {
        assert_eq!(check_status(b"HTTP/1.1 200 Connection established\r\n\r\n"), Ok(200));
        assert_eq!(check_status(b"HTTP/1.0 204 No Content\r\n\r\n"), Ok(204));
        assert_eq!(
            check_status(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"),
            Err(HttpError::AuthRequired(407))
        );
        assert_eq!(
            check_status(b"HTTP/1.1 403 Filtered\r\n\r\n"),
            Err(HttpError::Refused { status: 403, reason: "Filtered".into() })
        );
        assert!(matches!(check_status(b"SSH-2.0-OpenSSH\r\n\r\n"), Err(HttpError::BadStatusLine(_))));
        assert!(matches!(check_status(b"HTTP/1.1 2000 OK\r\n\r\n"), Err(HttpError::BadStatusLine(_))));
    }
}
