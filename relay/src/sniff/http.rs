//! HTTP/1 `Host` (RFC 9112 section 3.2): the request line, then header lines until `Host:`.
//!
//! [`HostReader`] is fed the client's byte stream as it grows; it scans each byte once, so the total work is
//! linear in the stream however it is segmented. It decides "not HTTP" from the first bytes, without waiting
//! for a line end, when they cannot start a known method.

use std::net::Ipv6Addr;

use super::normalize_host;

/// Request methods recognised (RFC 9110 section 9 plus PATCH). An unknown method is treated as "not HTTP"
/// so that other client-first protocols are released at once instead of waiting for a line end.
const METHODS: [&[u8]; 9] = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH"];
/// The longest method plus its space: bytes beyond this without a space cannot be a known method.
const MAX_METHOD_PREFIX: usize = 8;
/// Request heads longer than this without a `Host` line are given up on; 8 KiB is the common server limit
/// (nginx `large_client_header_buffers`, Apache `LimitRequestFieldSize`).
pub const MAX_HEAD_LEN: usize = 8 * 1024;

/// Progress of reading the `Host` of an HTTP/1 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostProgress {
    /// More bytes are needed.
    NeedMore,
    /// The normalised host: lower-cased, port and trailing dot removed, IPv6 brackets removed.
    Host(String),
    /// An HTTP/1 request without a usable `Host` (absent, empty, invalid, or not within [`MAX_HEAD_LEN`]).
    NoHost,
    /// The stream is not an HTTP/1 request.
    NotHttp,
}

/// Reads the `Host` header from the start of a client's byte stream.
#[derive(Debug, Default)]
pub struct HostReader {
    /// Bytes already searched for a line end.
    scanned: usize,
    /// Start of the line being read.
    line_start: usize,
    /// Whether the request line has been read and validated.
    request_line_seen: bool,
}

impl HostReader {
    /// A reader positioned at the start of the stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads what `stream` (everything the client has sent so far, each call extending the previous bytes)
    /// adds.
    pub fn poll(&mut self, stream: &[u8]) -> HostProgress {
        if !self.request_line_seen && !could_be_method(stream) {
            return HostProgress::NotHttp;
        }
        let limit = stream.len().min(MAX_HEAD_LEN);
        while self.scanned < limit {
            let Some(at) = stream[self.scanned..limit].iter().position(|&b| b == b'\n') else {
                self.scanned = limit;
                break;
            };
            let end = self.scanned + at;
            let line = &stream[self.line_start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.scanned = end + 1;
            self.line_start = end + 1;
            if !self.request_line_seen {
                if !is_request_line(line) {
                    return HostProgress::NotHttp;
                }
                self.request_line_seen = true;
            } else if line.is_empty() {
                return HostProgress::NoHost;
            } else if let Some(value) = header_value(line, b"host") {
                return parse_host(value).map_or(HostProgress::NoHost, HostProgress::Host);
            }
        }
        if stream.len() >= MAX_HEAD_LEN { HostProgress::NoHost } else { HostProgress::NeedMore }
    }
}

/// Whether `stream` starts with (a prefix of) a known method followed by a space.
fn could_be_method(stream: &[u8]) -> bool {
    let head = &stream[..stream.len().min(MAX_METHOD_PREFIX)];
    match head.iter().position(|&b| b == b' ') {
        Some(space) => METHODS.contains(&&head[..space]),
        None => head.len() < MAX_METHOD_PREFIX && METHODS.iter().any(|m| m.starts_with(head)),
    }
}

/// `method SP request-target SP HTTP/1.x`.
fn is_request_line(line: &[u8]) -> bool {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    METHODS.contains(&method) && !target.is_empty() && version.len() == 8 && version.starts_with(b"HTTP/1.")
}

/// The value of header `name` (lower-case) in `line`, without surrounding whitespace.
fn header_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let (field, rest) = line.split_at_checked(name.len())?;
    let value = rest.strip_prefix(b":")?;
    field.eq_ignore_ascii_case(name).then(|| value.trim_ascii())
}

/// The host of a `Host` value: `name[:port]`, `v4[:port]` or `[v6][:port]`.
fn parse_host(value: &[u8]) -> Option<String> {
    if let Some(rest) = value.strip_prefix(b"[") {
        let close = rest.iter().position(|&b| b == b']')?;
        let port = &rest[close + 1..];
        if !(port.is_empty() || is_port(port.strip_prefix(b":")?)) {
            return None;
        }
        let addr: Ipv6Addr = std::str::from_utf8(&rest[..close]).ok()?.parse().ok()?;
        return Some(addr.to_string());
    }
    let host = match value.iter().rposition(|&b| b == b':') {
        Some(colon) if is_port(&value[colon + 1..]) => &value[..colon],
        Some(_) => return None,
        None => value,
    };
    normalize_host(host)
}

fn is_port(digits: &[u8]) -> bool {
    (1..=5).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(stream: &[u8]) -> HostProgress {
        HostReader::new().poll(stream)
    }

    #[test]
    fn host_is_found_case_insensitively_and_normalised() {
        let req = b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nhOsT:  WWW.Example.com.:8080 \r\n\r\n";
        assert_eq!(read(req), HostProgress::Host("www.example.com".into()));
    }

    #[test]
    fn ipv6_literal_host_loses_brackets_and_port() {
        assert_eq!(read(b"GET / HTTP/1.1\r\nHost: [2001:DB8::1]:80\r\n\r\n"), HostProgress::Host("2001:db8::1".into()));
        assert_eq!(read(b"GET / HTTP/1.1\r\nHost: [2001:db8::1\r\n\r\n"), HostProgress::NoHost);
    }

    #[test]
    fn request_without_host_ends_at_the_blank_line() {
        assert_eq!(read(b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n"), HostProgress::NoHost);
        assert_eq!(read(b"GET / HTTP/1.0\r\nAccept: */*\r\n"), HostProgress::NeedMore);
    }

    #[test]
    fn non_method_prefix_is_rejected_from_the_first_byte() {
        assert_eq!(read(b"S"), HostProgress::NotHttp);
        assert_eq!(read(b"SSH-2.0-OpenSSH"), HostProgress::NotHttp);
        assert_eq!(read(b"GETX / HTTP/1.1\r\n"), HostProgress::NotHttp);
        assert_eq!(read(b"PRI * HTTP/2.0\r\n"), HostProgress::NotHttp);
        assert_eq!(read(b"GE"), HostProgress::NeedMore);
    }

    #[test]
    fn request_line_with_wrong_version_is_not_http() {
        assert_eq!(read(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"), HostProgress::NotHttp);
        assert_eq!(read(b"GET /\r\nHost: a\r\n\r\n"), HostProgress::NotHttp);
    }

    #[test]
    fn byte_by_byte_delivery_finds_the_host_when_its_line_ends() {
        let req = b"POST /upload HTTP/1.1\nHost: api.example\n\n";
        let line_end = req.len() - 1;
        let mut reader = HostReader::new();
        for end in 1..line_end {
            assert_eq!(reader.poll(&req[..end]), HostProgress::NeedMore, "at {end}");
        }
        assert_eq!(reader.poll(&req[..line_end]), HostProgress::Host("api.example".into()));
    }

    #[test]
    fn head_longer_than_the_bound_without_host_gives_up() {
        let mut req = b"GET / HTTP/1.1\r\n".to_vec();
        while req.len() < MAX_HEAD_LEN + 10 {
            req.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        req.extend_from_slice(b"Host: late.example\r\n\r\n");
        assert_eq!(read(&req), HostProgress::NoHost);
    }

    #[test]
    fn host_with_bad_port_or_characters_is_no_host() {
        assert_eq!(read(b"GET / HTTP/1.1\r\nHost: a.example:http\r\n\r\n"), HostProgress::NoHost);
        assert_eq!(read(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), HostProgress::NoHost);
        assert_eq!(read(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"), HostProgress::NoHost);
    }
}
