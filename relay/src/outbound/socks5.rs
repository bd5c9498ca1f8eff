//! SOCKS5 (RFC 1928) with username/password authentication (RFC 1929): sans-IO encoders and decoders over
//! byte slices, and the blocking client on top ([`connect`], [`associate`]).
//!
//! Decoders of variable-length messages return [`Decoded::Need`] with the total length they need, so the
//! driver reads exactly that many bytes and never consumes a byte of the tunnel.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use thiserror::Error;

use super::Target;
use super::dial::{Deadline, connect_endpoint, with_deadline};
use super::exchange::{Exchange, Progress, Wire};
use super::link::{Credentials, Proxy};

const VERSION: u8 = 5;
/// The version byte of the RFC 1929 sub-negotiation (not the SOCKS version).
const AUTH_VERSION: u8 = 1;
const METHOD_NO_AUTH: u8 = 0x00;
const METHOD_PASSWORD: u8 = 0x02;
const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 0x01;
const CMD_UDP_ASSOCIATE: u8 = 0x03;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;
const REPLY_SUCCEEDED: u8 = 0x00;
/// VER REP RSV ATYP and the first address byte: enough to know the length of any reply.
const REPLY_PREFIX_LEN: usize = 5;
/// RSV(2) FRAG(1) ATYP(1) before the address of a UDP datagram (§7).
const UDP_PREFIX_LEN: usize = 4;

/// A SOCKS5 address: an IP and port, or a domain name and port (only ever received: this client sends IPs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// ATYP 1 or 4.
    Ip(SocketAddr),
    /// ATYP 3: the name's bytes as sent (not necessarily UTF-8) and the port.
    Domain(Vec<u8>, u16),
}

/// The outcome of a decoder given a prefix of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// The message is complete; it took this many bytes.
    Done(T, usize),
    /// The message needs this many bytes in total (more than given).
    Need(usize),
}

/// A SOCKS5 protocol failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Socks5Error {
    /// A reply with another version byte: the server is not a SOCKS5 proxy.
    #[error("the server answered with version {0}, not SOCKS5")]
    BadVersion(u8),
    /// The server accepts none of the offered methods (typically: it wants credentials the link lacks).
    #[error(
        "the proxy accepts none of the offered authentication methods (add `user:pass@` to the link if it needs them)"
    )]
    NoAcceptableMethod,
    /// The server chose a method that was not offered.
    #[error("the proxy chose authentication method {0:#04x}, which was not offered")]
    UnexpectedMethod(u8),
    /// RFC 1929 status non-zero.
    #[error("the proxy refused the user name or password")]
    AuthFailed,
    /// A non-zero REP field.
    #[error("the proxy refused the request: {}", reply_text(*.0))]
    Refused(u8),
    /// An ATYP this client does not know.
    #[error("the proxy sent unknown address type {0:#04x}")]
    BadAddressType(u8),
    /// A UDP datagram with non-zero FRAG: fragments are not reassembled (RFC 1928 §7 allows dropping them).
    #[error("fragmented SOCKS5 UDP datagram (fragment {0}); fragments are dropped")]
    Fragmented(u8),
    /// A UDP datagram shorter than its header.
    #[error("truncated SOCKS5 UDP datagram")]
    Truncated,
}

/// RFC 1928 §6 reply codes as text.
fn reply_text(code: u8) -> &'static str {
    match code {
        0x01 => "general SOCKS server failure",
        0x02 => "connection not allowed by ruleset",
        0x03 => "network unreachable",
        0x04 => "host unreachable",
        0x05 => "connection refused",
        0x06 => "TTL expired",
        0x07 => "command not supported",
        0x08 => "address type not supported",
        _ => "unassigned reply code",
    }
}

impl Socks5Error {
    /// The `io::ErrorKind` a caller of `dial` sees, so a refused target reads like a refused direct connect.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            Socks5Error::AuthFailed | Socks5Error::NoAcceptableMethod | Socks5Error::Refused(0x02) => {
                io::ErrorKind::PermissionDenied
            }
            Socks5Error::Refused(0x03) => io::ErrorKind::NetworkUnreachable,
            Socks5Error::Refused(0x04) => io::ErrorKind::HostUnreachable,
            Socks5Error::Refused(0x05) => io::ErrorKind::ConnectionRefused,
            Socks5Error::Refused(0x06) => io::ErrorKind::TimedOut,
            Socks5Error::Refused(0x07 | 0x08) => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::InvalidData,
        }
    }
}

impl From<Socks5Error> for io::Error {
    fn from(error: Socks5Error) -> Self {
        io::Error::new(error.io_kind(), error)
    }
}

/// The authentication method the server chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// No authentication.
    NoAuth,
    /// RFC 1929 username/password.
    Password,
}

/// The greeting: version and the methods offered (no-auth, plus username/password when `with_password`).
pub fn encode_greeting(with_password: bool, out: &mut Vec<u8>) {
    if with_password {
        out.extend_from_slice(&[VERSION, 2, METHOD_NO_AUTH, METHOD_PASSWORD]);
    } else {
        out.extend_from_slice(&[VERSION, 1, METHOD_NO_AUTH]);
    }
}

/// The server's method selection (2 bytes); `offered_password` says whether the greeting offered it.
pub fn decode_method(reply: [u8; 2], offered_password: bool) -> Result<Method, Socks5Error> {
    match reply {
        [VERSION, METHOD_NO_AUTH] => Ok(Method::NoAuth),
        [VERSION, METHOD_PASSWORD] if offered_password => Ok(Method::Password),
        [VERSION, METHOD_NONE_ACCEPTABLE] => Err(Socks5Error::NoAcceptableMethod),
        [VERSION, other] => Err(Socks5Error::UnexpectedMethod(other)),
        [version, _] => Err(Socks5Error::BadVersion(version)),
    }
}

/// The RFC 1929 request. Lengths are bounded by [`super::link::MAX_CREDENTIAL_LEN`] when the link is parsed.
pub fn encode_password(credentials: &Credentials, out: &mut Vec<u8>) {
    let (user, pass) = (credentials.username.as_bytes(), credentials.password.as_bytes());
    out.push(AUTH_VERSION);
    out.push(u8::try_from(user.len()).expect("user name length checked when the link was parsed"));
    out.extend_from_slice(user);
    out.push(u8::try_from(pass.len()).expect("password length checked when the link was parsed"));
    out.extend_from_slice(pass);
}

/// The RFC 1929 status (2 bytes); any non-zero status is a refusal.
pub fn decode_password_status(reply: [u8; 2]) -> Result<(), Socks5Error> {
    match reply {
        [AUTH_VERSION, 0] => Ok(()),
        [AUTH_VERSION, _] => Err(Socks5Error::AuthFailed),
        // Some servers answer the sub-negotiation with the SOCKS version byte; the status is what counts.
        [VERSION, 0] => Ok(()),
        [_, _] => Err(Socks5Error::AuthFailed),
    }
}

/// A CONNECT request to `target`.
pub fn encode_connect(target: SocketAddr, out: &mut Vec<u8>) {
    encode_request(CMD_CONNECT, target, out);
}

/// A CONNECT request to a domain name (ATYP 3): the proxy resolves it. Names longer than 255 bytes do not fit
/// the field and are refused.
pub fn encode_connect_domain(name: &str, port: u16, out: &mut Vec<u8>) -> Result<(), Socks5Error> {
    let len = u8::try_from(name.len()).map_err(|_| Socks5Error::Truncated)?;
    out.extend_from_slice(&[VERSION, CMD_CONNECT, 0, ATYP_DOMAIN, len]);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    Ok(())
}

/// A UDP ASSOCIATE request; `client` is where the client will send from, or unspecified (`0.0.0.0:0`) when it
/// does not know yet.
pub fn encode_udp_associate(client: SocketAddr, out: &mut Vec<u8>) {
    encode_request(CMD_UDP_ASSOCIATE, client, out);
}

fn encode_request(command: u8, address: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, command, 0]);
    encode_address(address, out);
}

fn encode_address(address: SocketAddr, out: &mut Vec<u8>) {
    match address.ip() {
        IpAddr::V4(ip) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&address.port().to_be_bytes());
}

/// Decodes ATYP, address and port at the start of `buf`.
fn decode_address(buf: &[u8]) -> Result<Decoded<Address>, Socks5Error> {
    let Some(&atyp) = buf.first() else { return Ok(Decoded::Need(1)) };
    let address_len = match atyp {
        ATYP_IPV4 => 4,
        ATYP_IPV6 => 16,
        ATYP_DOMAIN => match buf.get(1) {
            Some(&len) => 1 + usize::from(len),
            None => return Ok(Decoded::Need(2)),
        },
        other => return Err(Socks5Error::BadAddressType(other)),
    };
    let total = 1 + address_len + 2;
    if buf.len() < total {
        return Ok(Decoded::Need(total));
    }
    let port = u16::from_be_bytes([buf[total - 2], buf[total - 1]]);
    let bytes = &buf[1..1 + address_len];
    let address = match atyp {
        ATYP_IPV4 => {
            let octets: [u8; 4] = bytes.try_into().expect("length checked");
            Address::Ip(SocketAddr::new(Ipv4Addr::from(octets).into(), port))
        }
        ATYP_IPV6 => {
            let octets: [u8; 16] = bytes.try_into().expect("length checked");
            Address::Ip(SocketAddr::new(Ipv6Addr::from(octets).into(), port))
        }
        _ => Address::Domain(bytes[1..].to_vec(), port),
    };
    Ok(Decoded::Done(address, total))
}

/// The reply to CONNECT or UDP ASSOCIATE: the bound address on success, the reply code as an error otherwise.
pub fn decode_reply(buf: &[u8]) -> Result<Decoded<Address>, Socks5Error> {
    if buf.len() < REPLY_PREFIX_LEN {
        return Ok(Decoded::Need(REPLY_PREFIX_LEN));
    }
    if buf[0] != VERSION {
        return Err(Socks5Error::BadVersion(buf[0]));
    }
    if buf[1] != REPLY_SUCCEEDED {
        return Err(Socks5Error::Refused(buf[1]));
    }
    const HEAD: usize = 3;
    Ok(match decode_address(&buf[HEAD..])? {
        Decoded::Done(address, len) => Decoded::Done(address, HEAD + len),
        Decoded::Need(len) => Decoded::Need(HEAD + len),
    })
}

/// The RFC 1928 §7 header of a UDP datagram sent to the relay for `target` (FRAG 0); the payload follows it.
pub fn encode_udp_header(target: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0]);
    encode_address(target, out);
}

/// Splits a datagram from the relay into the address it came from and its payload.
pub fn decode_udp_datagram(datagram: &[u8]) -> Result<(Address, &[u8]), Socks5Error> {
    if datagram.len() < UDP_PREFIX_LEN {
        return Err(Socks5Error::Truncated);
    }
    let fragment = datagram[2];
    if fragment != 0 {
        return Err(Socks5Error::Fragmented(fragment));
    }
    match decode_address(&datagram[3..])? {
        Decoded::Done(address, len) => Ok((address, &datagram[3 + len..])),
        Decoded::Need(_) => Err(Socks5Error::Truncated),
    }
}

/// Runs the method negotiation, authentication and `request` on a connected blocking stream, and returns the
/// bound address of the reply. Reads exactly the reply, nothing after it.
fn handshake(stream: &mut impl Wire, credentials: Option<&Credentials>, request: &[u8]) -> io::Result<Address> {
    let mut exchange = Exchange::socks5(credentials.cloned(), request.to_vec());
    match exchange.drive(stream)? {
        Progress::Done(Some(address)) => Ok(address),
        // A blocking stream finishes or fails; a SOCKS5 reply always carries an address.
        _ => Err(io::Error::new(io::ErrorKind::WouldBlock, "the proxy handshake did not finish")),
    }
}

/// Connects to `proxy` and asks it to CONNECT to `target`; every step finishes within `timeout`.
pub(crate) fn connect(proxy: &Proxy, target: Target<'_>, mark: u32, timeout: Duration) -> io::Result<TcpStream> {
    let deadline = Deadline::after(timeout);
    let mut request = Vec::with_capacity(22);
    match target {
        Target::Addr(addr) => encode_connect(addr, &mut request),
        Target::Domain { name, port, .. } => encode_connect_domain(name, port, &mut request)?,
    }
    let mut stream = connect_endpoint(&proxy.server, mark, &deadline)?;
    with_deadline(&mut stream, &deadline, |io| handshake(io, proxy.credentials.as_ref(), &request))?;
    Ok(stream)
}

/// A SOCKS5 UDP association: the relay lives as long as the control connection, which this value owns.
#[derive(Debug)]
pub struct UdpAssociation {
    control: TcpStream,
    relay: SocketAddr,
}

impl UdpAssociation {
    /// The association whose ASSOCIATE reply named `bound`, on `control`, a connection to the proxy at
    /// `proxy_ip`. A relay bound to an unspecified address is taken to be on the proxy's own address.
    pub(crate) fn new(control: TcpStream, bound: Address, proxy_ip: IpAddr) -> io::Result<Self> {
        let relay = match bound {
            Address::Ip(relay) if relay.ip().is_unspecified() => SocketAddr::new(proxy_ip, relay.port()),
            Address::Ip(relay) => relay,
            Address::Domain(..) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the proxy named its UDP relay by domain name; only IP relays are supported",
                ));
            }
        };
        Ok(Self { control, relay })
    }

    /// Where to send datagrams (each prefixed with [`encode_udp_header`]) and whence replies come.
    pub fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// The control connection; the association ends when it closes. Watch it for EOF to learn that the proxy
    /// dropped the association.
    pub fn control(&self) -> &TcpStream {
        &self.control
    }
}

/// Opens a UDP association on `proxy`. The client address is sent as unspecified, so the proxy accepts
/// datagrams from any port of this host. A relay bound to an unspecified address (`0.0.0.0`) is taken to be on
/// the proxy's own address, as most servers mean it.
pub fn associate(proxy: &Proxy, mark: u32, timeout: Duration) -> io::Result<UdpAssociation> {
    let deadline = Deadline::after(timeout);
    let mut control = connect_endpoint(&proxy.server, mark, &deadline)?;
    let proxy_ip = control.peer_addr()?.ip();
    let mut request = Vec::with_capacity(22);
    encode_udp_associate(unspecified_like(proxy_ip), &mut request);
    let bound = with_deadline(&mut control, &deadline, |io| handshake(io, proxy.credentials.as_ref(), &request))?;
    UdpAssociation::new(control, bound, proxy_ip)
}

/// The unspecified address and port 0 in `ip`'s family: the client address of a UDP ASSOCIATE that lets the
/// proxy accept datagrams from any port of this host.
pub(crate) fn unspecified_like(ip: IpAddr) -> SocketAddr {
    match ip {
        IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        IpAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn credentials(user: &str, pass: &str) -> Credentials {
        Credentials { username: user.into(), password: pass.into() }
    }

    /// A scripted server: what it answers, and what the client wrote.
    struct Script {
        input: io::Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Wire for Script {
        fn peek(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::Unsupported.into())
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn greeting_offers_password_only_with_credentials() {
        let mut out = Vec::new();
        encode_greeting(false, &mut out);
        assert_eq!(out, [5, 1, 0]);
        out.clear();
        encode_greeting(true, &mut out);
        assert_eq!(out, [5, 2, 0, 2]);
    }

    #[test]
    fn method_selection_refuses_unoffered_and_none_acceptable() {
        assert_eq!(decode_method([5, 0], false), Ok(Method::NoAuth));
        assert_eq!(decode_method([5, 2], true), Ok(Method::Password));
        assert_eq!(decode_method([5, 2], false), Err(Socks5Error::UnexpectedMethod(2)));
        assert_eq!(decode_method([5, 0xff], true), Err(Socks5Error::NoAcceptableMethod));
        assert_eq!(decode_method([4, 0], false), Err(Socks5Error::BadVersion(4)));
    }

    #[test]
    fn password_request_is_length_prefixed() {
        let mut out = Vec::new();
        encode_password(&credentials("ab", "xyz"), &mut out);
        assert_eq!(out, [1, 2, b'a', b'b', 3, b'x', b'y', b'z']);
        assert_eq!(decode_password_status([1, 0]), Ok(()));
        assert_eq!(decode_password_status([1, 1]), Err(Socks5Error::AuthFailed));
    }

    #[test]
    fn connect_request_carries_ipv4_and_ipv6() {
        let mut out = Vec::new();
        encode_connect("10.0.0.1:443".parse().unwrap(), &mut out);
        assert_eq!(out, [5, 1, 0, 1, 10, 0, 0, 1, 0x01, 0xbb]);
        out.clear();
        encode_connect("[2001:db8::1]:80".parse().unwrap(), &mut out);
        assert_eq!(out.len(), 4 + 16 + 2);
        assert_eq!(&out[..4], [5, 1, 0, 4]);
        assert_eq!(out[4..6], [0x20, 0x01]);
        assert_eq!(out[20..], [0, 80]);
    }

    #[test]
    fn reply_decoder_asks_for_exactly_the_missing_bytes() {
        let ipv4 = [5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];
        assert_eq!(decode_reply(&ipv4[..2]), Ok(Decoded::Need(5)));
        assert_eq!(decode_reply(&ipv4[..5]), Ok(Decoded::Need(10)));
        assert_eq!(decode_reply(&ipv4), Ok(Decoded::Done(Address::Ip("127.0.0.1:8080".parse().unwrap()), 10)));
        let domain = [5, 0, 0, 3, 3, b'a', b'.', b'b', 0, 53];
        assert_eq!(decode_reply(&domain[..5]), Ok(Decoded::Need(10)));
        assert_eq!(decode_reply(&domain), Ok(Decoded::Done(Address::Domain(b"a.b".to_vec(), 53), 10)));
        assert_eq!(decode_reply(&[5, 0, 0, 4, 0]), Ok(Decoded::Need(22)));
    }

    #[test]
    fn reply_codes_map_to_errors_and_io_kinds() {
        assert_eq!(decode_reply(&[5, 5, 0, 1, 0]), Err(Socks5Error::Refused(5)));
        assert_eq!(Socks5Error::Refused(5).io_kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(Socks5Error::Refused(2).io_kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(Socks5Error::Refused(4).io_kind(), io::ErrorKind::HostUnreachable);
        assert!(Socks5Error::Refused(4).to_string().contains("host unreachable"));
        assert_eq!(decode_reply(&[5, 0, 0, 9, 0]), Err(Socks5Error::BadAddressType(9)));
        assert_eq!(decode_reply(&[4, 0, 0, 1, 0]), Err(Socks5Error::BadVersion(4)));
    }

    #[test]
    fn udp_header_round_trips_and_refuses_fragments() {
        for target in ["192.0.2.7:53", "[2001:db8::53]:5353"] {
            let target: SocketAddr = target.parse().unwrap();
            let mut datagram = Vec::new();
            encode_udp_header(target, &mut datagram);
            datagram.extend_from_slice(b"payload");
            assert_eq!(decode_udp_datagram(&datagram), Ok((Address::Ip(target), &b"payload"[..])));
        }
        assert_eq!(decode_udp_datagram(&[0, 0, 1, 1, 0, 0, 0, 0, 0, 0]), Err(Socks5Error::Fragmented(1)));
        assert_eq!(decode_udp_datagram(&[0, 0, 0, 1, 1, 2]), Err(Socks5Error::Truncated));
        assert_eq!(decode_udp_datagram(&[0, 0]), Err(Socks5Error::Truncated));
    }

    #[test]
    fn handshake_with_password_reads_no_tunnel_bytes() {
        let mut server = [5u8, 2].to_vec();
        server.extend_from_slice(&[1, 0]);
        server.extend_from_slice(&[5, 0, 0, 1, 1, 2, 3, 4, 0, 80]);
        server.extend_from_slice(b"tunnel");
        let mut script = Script { input: io::Cursor::new(server), written: Vec::new() };
        let mut request = Vec::new();
        encode_connect("192.0.2.1:80".parse().unwrap(), &mut request);
        let bound = handshake(&mut script, Some(&credentials("u", "p")), &request).unwrap();
        assert_eq!(bound, Address::Ip("1.2.3.4:80".parse().unwrap()));
        let mut rest = Vec::new();
        script.input.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"tunnel");
        assert_eq!(&script.written[..4], [5, 2, 0, 2]);
    }

    #[test]
    fn handshake_reports_wrong_password_as_permission_denied() {
        let mut script = Script { input: io::Cursor::new(vec![5, 2, 1, 1]), written: Vec::new() };
        let error = handshake(&mut script, Some(&credentials("u", "bad")), &[]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
    }
}
