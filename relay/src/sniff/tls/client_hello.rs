//! The TLS ClientHello handshake message (RFC 8446 section 4.1.2): server name (RFC 6066 section 3) and
//! application protocols (RFC 7301). Shared by the TCP sniffer (the message arrives in TLS records) and the
//! QUIC sniffer (it arrives in CRYPTO frames, without records).

use crate::sniff::{normalize_host, wire::Reader};

/// Handshake type of ClientHello.
const CLIENT_HELLO: u8 = 1;
/// Length of a handshake message header: type (1) and length (3).
pub(crate) const HANDSHAKE_HEADER_LEN: usize = 4;
/// The largest ClientHello body accepted. Real ones are 200 B to 2 KiB (a post-quantum key share adds about
/// 1.2 KiB per group); 16 KiB leaves room for several such shares and large session tickets while bounding
/// what a flow can make us buffer.
pub const MAX_CLIENT_HELLO_LEN: usize = 16 * 1024;
/// `server_name` extension (RFC 6066).
const EXT_SERVER_NAME: u16 = 0;
/// `application_layer_protocol_negotiation` extension (RFC 7301).
const EXT_ALPN: u16 = 16;
/// `host_name` entry of a server name list.
const NAME_TYPE_HOST: u8 = 0;
/// Longest `legacy_session_id` (RFC 8446: `<0..32>`).
const MAX_SESSION_ID_LEN: usize = 32;
/// At most this many ALPN protocol names are kept; browsers send 1 to 3, the rest is noise for routing.
pub const MAX_ALPN_PROTOCOLS: usize = 8;

/// What a ClientHello says about where the client is going.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` from the `server_name` extension, lower-cased, without a trailing dot; `None` when the
    /// extension is absent.
    pub sni: Option<String>,
    /// ALPN protocol names in the client's order (at most [`MAX_ALPN_PROTOCOLS`]); bytes outside printable
    /// ASCII are shown as `\xNN` escapes.
    pub alpn: Vec<String>,
}

/// Why bytes are not a usable ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The first handshake message is not a ClientHello.
    #[error("the first handshake message is not a ClientHello")]
    NotClientHello,
    /// The ClientHello is longer than [`MAX_CLIENT_HELLO_LEN`].
    #[error("ClientHello longer than {MAX_CLIENT_HELLO_LEN} bytes")]
    TooLarge,
    /// A length field or value contradicts the structure; the static string names which.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

/// The total length (header included) of the handshake message that starts `prefix`, once its 4-byte header is
/// there: `Ok(None)` while fewer than 4 bytes are available.
pub(crate) fn message_len(prefix: &[u8]) -> Result<Option<usize>, HelloError> {
    let mut r = Reader::new(prefix);
    let (Some(kind), Some(len)) = (r.u8(), r.u24()) else { return Ok(None) };
    if kind != CLIENT_HELLO {
        return Err(HelloError::NotClientHello);
    }
    let len = len as usize;
    if len > MAX_CLIENT_HELLO_LEN {
        return Err(HelloError::TooLarge);
    }
    Ok(Some(HANDSHAKE_HEADER_LEN + len))
}

/// Parses one complete ClientHello handshake message (`message` starts at its 4-byte header and holds at least
/// the whole message; bytes after it are ignored).
pub fn parse(message: &[u8]) -> Result<ClientHello, HelloError> {
    let total = message_len(message)?.ok_or(HelloError::Malformed("truncated handshake header"))?;
    let body = message.get(HANDSHAKE_HEADER_LEN..total).ok_or(HelloError::Malformed("truncated message"))?;
    parse_body(body)
}

fn parse_body(body: &[u8]) -> Result<ClientHello, HelloError> {
    use HelloError::Malformed;
    let mut r = Reader::new(body);
    let [major, _minor] = r.array().ok_or(Malformed("truncated version"))?;
    if major != 3 {
        return Err(Malformed("legacy_version is not 3.x"));
    }
    r.skip(32).ok_or(Malformed("truncated random"))?;
    let session_id = r.vec8().ok_or(Malformed("truncated session id"))?;
    if session_id.len() > MAX_SESSION_ID_LEN {
        return Err(Malformed("session id longer than 32 bytes"));
    }
    let suites = r.vec16().ok_or(Malformed("truncated cipher suites"))?;
    if suites.is_empty() || !suites.len().is_multiple_of(2) {
        return Err(Malformed("cipher suite list is empty or odd"));
    }
    let compression = r.vec8().ok_or(Malformed("truncated compression methods"))?;
    if compression.is_empty() {
        return Err(Malformed("no compression method"));
    }
    let mut hello = ClientHello::default();
    if r.is_empty() {
        // A TLS 1.2-era hello may end here: no extensions, so no name.
        return Ok(hello);
    }
    let extensions = r.vec16().ok_or(Malformed("truncated extensions"))?;
    if !r.is_empty() {
        return Err(Malformed("bytes after the extensions"));
    }
    let (mut seen_sni, mut seen_alpn) = (false, false);
    let mut exts = Reader::new(extensions);
    while !exts.is_empty() {
        let kind = exts.u16().ok_or(Malformed("truncated extension type"))?;
        let data = exts.vec16().ok_or(Malformed("extension longer than the extension block"))?;
        match kind {
            EXT_SERVER_NAME if seen_sni => return Err(Malformed("duplicate server_name extension")),
            EXT_SERVER_NAME => {
                seen_sni = true;
                hello.sni = Some(server_name(data)?);
            }
            EXT_ALPN if seen_alpn => return Err(Malformed("duplicate ALPN extension")),
            EXT_ALPN => {
                seen_alpn = true;
                hello.alpn = alpn(data)?;
            }
            _ => {}
        }
    }
    Ok(hello)
}

/// The `host_name` of a `server_name` extension body.
fn server_name(data: &[u8]) -> Result<String, HelloError> {
    use HelloError::Malformed;
    let mut r = Reader::new(data);
    let list = r.vec16().ok_or(Malformed("truncated server name list"))?;
    if !r.is_empty() || list.is_empty() {
        return Err(Malformed("server name list is empty or followed by bytes"));
    }
    let mut entries = Reader::new(list);
    let mut host = None;
    while !entries.is_empty() {
        let kind = entries.u8().ok_or(Malformed("truncated server name type"))?;
        let name = entries.vec16().ok_or(Malformed("truncated server name"))?;
        if kind == NAME_TYPE_HOST {
            if host.is_some() {
                // RFC 6066: at most one name of each type.
                return Err(Malformed("two host_name entries"));
            }
            host = Some(normalize_host(name).ok_or(Malformed("server name is not a host name"))?);
        }
    }
    host.ok_or(Malformed("server name list has no host_name"))
}

/// The protocol names of an ALPN extension body.
fn alpn(data: &[u8]) -> Result<Vec<String>, HelloError> {
    use HelloError::Malformed;
    let mut r = Reader::new(data);
    let list = r.vec16().ok_or(Malformed("truncated ALPN list"))?;
    if !r.is_empty() || list.is_empty() {
        return Err(Malformed("ALPN list is empty or followed by bytes"));
    }
    let mut names = Reader::new(list);
    let mut out = Vec::new();
    while !names.is_empty() {
        let name = names.vec8().ok_or(Malformed("truncated ALPN protocol name"))?;
        if name.is_empty() {
            return Err(Malformed("empty ALPN protocol name"));
        }
        if out.len() < MAX_ALPN_PROTOCOLS {
            out.push(printable(name));
        }
    }
    Ok(out)
}

/// An ALPN protocol name as text, `escape_ascii`d so that odd bytes show and cannot fake another name; names
/// that it leaves unchanged (printable ASCII without quotes or backslashes: every registered one) are copied
/// without the formatter.
fn printable(name: &[u8]) -> String {
    let plain = |b: &u8| b.is_ascii_graphic() && !matches!(b, b'\\' | b'\'' | b'"');
    match std::str::from_utf8(name) {
        Ok(text) if name.iter().all(plain) => text.to_owned(),
        _ => name.escape_ascii().to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a ClientHello handshake message with the given extensions (type, body).
    pub(crate) fn hello_with(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut exts = Vec::new();
        for (kind, data) in extensions {
            exts.extend_from_slice(&kind.to_be_bytes());
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend_from_slice(data);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0x11; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![CLIENT_HELLO];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    pub(crate) fn sni_ext(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![NAME_TYPE_HOST];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name);
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        (EXT_SERVER_NAME, data)
    }

    pub(crate) fn alpn_ext(names: &[&[u8]]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for n in names {
            list.push(n.len() as u8);
            list.extend_from_slice(n);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        (EXT_ALPN, data)
    }

    #[test]
    fn sni_and_alpn_are_extracted_in_client_order() {
        let msg = hello_with(&[(10, vec![0, 2, 0, 29]), sni_ext(b"WWW.Example.COM."), alpn_ext(&[b"h2", b"http/1.1"])]);
        let hello = parse(&msg).unwrap();
        assert_eq!(hello.sni.as_deref(), Some("www.example.com"));
        assert_eq!(hello.alpn, ["h2", "http/1.1"]);
    }

    #[test]
    fn hello_without_extensions_has_no_name() {
        let mut msg = hello_with(&[]);
        msg.truncate(msg.len() - 2); // drop the empty extensions block entirely
        let len = (msg.len() - 4) as u32;
        msg[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
        assert_eq!(parse(&msg).unwrap(), ClientHello::default());
    }

    #[test]
    fn duplicate_server_name_extension_is_malformed() {
        let msg = hello_with(&[sni_ext(b"a.example"), sni_ext(b"b.example")]);
        assert_eq!(parse(&msg), Err(HelloError::Malformed("duplicate server_name extension")));
    }

    #[test]
    fn server_name_with_forbidden_bytes_is_malformed() {
        for bad in [&b"exa mple.com"[..], b"a\0b.com", b"", b".", b"caf\xc3\xa9.fr"] {
            let msg = hello_with(&[sni_ext(bad)]);
            assert!(matches!(parse(&msg), Err(HelloError::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn extension_length_past_the_block_is_malformed() {
        let mut msg = hello_with(&[sni_ext(b"example.com")]);
        let ext_len_at = msg.len() - sni_ext(b"example.com").1.len() - 2;
        msg[ext_len_at] = 0x7f;
        assert_eq!(parse(&msg), Err(HelloError::Malformed("extension longer than the extension block")));
    }

    #[test]
    fn other_handshake_types_and_oversized_lengths_are_rejected_from_the_header() {
        assert_eq!(message_len(&[2, 0, 0, 10]), Err(HelloError::NotClientHello));
        assert_eq!(message_len(&[1, 0x01, 0, 1]), Err(HelloError::TooLarge));
        assert_eq!(message_len(&[1, 0]), Ok(None));
        assert_eq!(message_len(&[1, 0, 1, 0]), Ok(Some(260)));
    }

    #[test]
    fn alpn_names_are_bounded_and_escaped() {
        let many: Vec<&[u8]> = vec![b"\x01x"; MAX_ALPN_PROTOCOLS + 3];
        let hello = parse(&hello_with(&[alpn_ext(&many)])).unwrap();
        assert_eq!(hello.alpn.len(), MAX_ALPN_PROTOCOLS);
        assert_eq!(hello.alpn[0], "\\x01x");
        for odd in [&b"a\\b"[..], b"it's", b"\"q\"", b"sp ace", b"\xff"] {
            assert_eq!(printable(odd), odd.escape_ascii().to_string());
        }
        assert_eq!(printable(b"h3-29"), "h3-29");
        assert!(parse(&hello_with(&[alpn_ext(&[b""])])).is_err());
    }
}
