//! The proxy handshakes as state machines over any byte stream, blocking or not: [`Exchange::drive`] moves a
//! handshake as far as the stream allows and says whether it finished. The blocking dials (health checks, UDP
//! associations, [`super::dial_target`]) drive it over a socket with a deadline; the gateway drives it over a
//! non-blocking socket from its per-core loop ([`super::Dialing`]), one readiness event at a time, so a slow proxy
//! costs a table entry, not a thread.
//!
//! Neither handshake reads past its own end: SOCKS5 replies are read to the length their header announces, and the
//! HTTP response head is found by peeking and then consumed up to its blank line. What the target sends next stays
//! in the socket for the relay.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

use socket2::{Domain, Protocol as SocketProtocol, SockAddr, Socket, Type};

use super::{
    Node, Target,
    http::{self, HEAD_END, HttpError, MAX_RESPONSE_HEAD},
    link::{Credentials, Host, Protocol, Proxy},
    socks5::{self, Address, Decoded, Method},
};

/// A stream a handshake can run on: reads, writes, and a look at what is buffered without consuming it.
pub(crate) trait Wire: Read + Write {
    /// `recv(MSG_PEEK)`: copies buffered bytes into `buf` without consuming them.
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

impl Wire for &TcpStream {
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::peek(self, buf)
    }
}

/// Whether a handshake finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The stream would block: call [`Exchange::drive`] again when it is readable or writable.
    Pending,
    /// The proxy accepted; for SOCKS5, the address its reply carried.
    Done(Option<Address>),
}

/// Where a handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// SOCKS5: the greeting is out, the method selection (2 bytes) is awaited.
    Socks5Method,
    /// SOCKS5: the username/password request is out, its status (2 bytes) is awaited.
    Socks5Password,
    /// SOCKS5: the request is out, its reply (length given by its header) is awaited.
    Socks5Reply,
    /// HTTP: the CONNECT is out, the response head is awaited.
    HttpHead,
    /// Finished.
    Done,
}

/// Bytes looked at per peek while searching for the end of an HTTP response head.
const PEEK_CHUNK: usize = 1024;

/// One proxy handshake, from the first byte the client sends to the last byte of the proxy's answer.
#[derive(Debug)]
pub struct Exchange {
    step: Step,
    /// Bytes to send, and how many are sent.
    out: Vec<u8>,
    sent: usize,
    /// Bytes of the current answer received so far.
    got: Vec<u8>,
    /// SOCKS5: the credentials offered, and the request sent after authentication.
    credentials: Option<Credentials>,
    request: Vec<u8>,
}

impl Exchange {
    /// A SOCKS5 handshake (RFC 1928; RFC 1929 with `credentials`) that sends `request` (CONNECT or UDP
    /// ASSOCIATE) once a method is agreed.
    pub fn socks5(credentials: Option<Credentials>, request: Vec<u8>) -> Self {
        let mut out = Vec::with_capacity(4);
        socks5::encode_greeting(credentials.is_some(), &mut out);
        Self { step: Step::Socks5Method, out, sent: 0, got: Vec::with_capacity(32), credentials, request }
    }

    /// An HTTP CONNECT whose request is `request` ([`http::encode_connect`]).
    pub fn http(request: Vec<u8>) -> Self {
        Self { step: Step::HttpHead, out: request, sent: 0, got: Vec::new(), credentials: None, request: Vec::new() }
    }

    /// Sends and receives what `io` allows. A blocking `io` returns only `Done` or an error; a non-blocking one
    /// returns `Pending` when it would block. Errors keep meaningful kinds (see [`super::dial_target`]); EOF
    /// before the answer is complete is `UnexpectedEof` (SOCKS5) or `ConnectionAborted` (HTTP).
    pub(crate) fn drive(&mut self, io: &mut impl Wire) -> io::Result<Progress> {
        loop {
            while self.sent < self.out.len() {
                match io.write(&self.out[self.sent..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => self.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::Pending),
                    Err(e) => return Err(e),
                }
            }
            let done = match self.step {
                Step::Socks5Method | Step::Socks5Password => self.fill(io, 2)?.then(|| self.on_two_bytes()),
                Step::Socks5Reply => match socks5::decode_reply(&self.got)? {
                    Decoded::Done(address, _) => {
                        self.step = Step::Done;
                        return Ok(Progress::Done(Some(address)));
                    }
                    Decoded::Need(len) => {
                        if !self.fill(io, len)? {
                            return Ok(Progress::Pending);
                        }
                        continue;
                    }
                },
                Step::HttpHead => {
                    if !self.read_head(io)? {
                        return Ok(Progress::Pending);
                    }
                    http::check_status(&self.got)?;
                    self.step = Step::Done;
                    return Ok(Progress::Done(None));
                }
                Step::Done => return Ok(Progress::Done(None)),
            };
            match done {
                None => return Ok(Progress::Pending),
                Some(result) => result?,
            }
        }
    }

    /// Reads until [`Self::got`] holds `len` bytes, never more; `false` when the stream would block first.
    fn fill(&mut self, io: &mut impl Wire, len: usize) -> io::Result<bool> {
        while self.got.len() < len {
            let have = self.got.len();
            self.got.resize(len, 0);
            let read = io.read(&mut self.got[have..]);
            self.got.truncate(have + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// A 2-byte SOCKS5 answer is complete: the method selection or the authentication status.
    fn on_two_bytes(&mut self) -> io::Result<()> {
        let two = [self.got[0], self.got[1]];
        self.got.clear();
        self.out.clear();
        self.sent = 0;
        let offered = self.credentials.is_some();
        if self.step == Step::Socks5Method
            && socks5::decode_method(two, offered)? == Method::Password
            && let Some(credentials) = &self.credentials
        {
            socks5::encode_password(credentials, &mut self.out);
            self.step = Step::Socks5Password;
            return Ok(());
        }
        if self.step == Step::Socks5Password {
            socks5::decode_password_status(two)?;
        }
        self.out.append(&mut self.request);
        self.step = Step::Socks5Reply;
        Ok(())
    }

    /// Moves the response head into [`Self::got`]: peeks, finds the blank line (which may straddle two peeks),
    /// consumes exactly up to it. `false` when the stream would block first.
    fn read_head(&mut self, io: &mut impl Wire) -> io::Result<bool> {
        let mut chunk = [0u8; PEEK_CHUNK];
        loop {
            let peeked = match io.peek(&mut chunk) {
                Ok(0) => return Err(HttpError::Closed.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            let from = self.got.len().saturating_sub(HEAD_END.len() - 1);
            let taken = self.got.len();
            self.got.extend_from_slice(&chunk[..peeked]);
            let take = match http::head_len(&self.got[from..]) {
                Some(len) => from + len - taken,
                None => peeked,
            };
            self.got.truncate(taken);
            if taken + take > MAX_RESPONSE_HEAD {
                return Err(HttpError::HeadTooLong.into());
            }
            // Consumes what the peek showed: buffered, so this read returns it at once (a short read leaves the
            // rest for the next round).
            self.got.resize(taken + take, 0);
            let read = io.read(&mut self.got[taken..]);
            self.got.truncate(taken + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => return Err(HttpError::Closed.into()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock) => continue,
                Err(e) => return Err(e),
            }
            if http::head_len(&self.got[from..]).is_some() {
                return Ok(true);
            }
        }
    }
}

/// A TCP dial through a node that never blocks: a non-blocking connect, then the proxy handshake, each advanced
/// by [`Dialing::poll`] when the socket is ready. The caller owns the timing (a deadline over the whole dial) and
/// the readiness (the socket is non-blocking; wait for it to be writable, then readable).
#[derive(Debug)]
pub struct Dialing {
    stream: TcpStream,
    connected: bool,
    /// The proxy handshake, none for a direct dial.
    exchange: Option<Exchange>,
    /// The proxy's further addresses, tried in turn when a connect fails.
    rest: Vec<SocketAddr>,
    mark: u32,
    /// The error of the last failed connect, reported when no address is left.
    last_error: Option<io::Error>,
    /// What the proxy's SOCKS5 reply carried (a UDP ASSOCIATE's relay address), once the handshake is done.
    bound: Option<Address>,
}

impl Dialing {
    /// Starts dialling `target` through `node` with SO_MARK `mark` (0: left unset). `None` when the dial would
    /// have to block: a proxy named by host name needs the system resolver, which has no non-blocking form (the
    /// caller runs [`super::dial_target`] on a thread instead). `block` is refused as [`super::dial_target`] does.
    pub fn start(node: &Node, target: Target<'_>, mark: u32) -> io::Result<Option<Self>> {
        let (addrs, exchange) = match node {
            Node::Direct => {
                let (Target::Addr(addr) | Target::Domain { addr, .. }) = target;
                (vec![addr], None)
            }
            Node::Block => {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, "blocked by the `block` outbound"));
            }
            Node::Proxy(proxy) => {
                let Host::Ip(ip) = proxy.server.host else { return Ok(None) };
                (vec![SocketAddr::new(ip, proxy.server.port)], Some(proxy_exchange(proxy, target)?))
            }
        };
        let mut rest = addrs;
        rest.reverse();
        let first = rest.pop().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Some(Self {
            stream: connect_nonblocking(first, mark)?,
            connected: false,
            exchange,
            rest,
            mark,
            last_error: None,
            bound: None,
        }))
    }

    /// Starts opening a SOCKS5 UDP association on `proxy` with SO_MARK `mark`, as [`socks5::associate`] does but
    /// without blocking; finish with [`Dialing::into_association`] once [`Dialing::poll`] says done. `None` for a
    /// proxy named by host name (see [`Dialing::start`]).
    pub fn associate(proxy: &Proxy, mark: u32) -> io::Result<Option<Self>> {
        let Host::Ip(ip) = proxy.server.host else { return Ok(None) };
        let mut request = Vec::with_capacity(22);
        socks5::encode_udp_associate(socks5::unspecified_like(ip), &mut request);
        let exchange = Exchange::socks5(proxy.credentials.clone(), request);
        let addr = SocketAddr::new(ip, proxy.server.port);
        Ok(Some(Self {
            stream: connect_nonblocking(addr, mark)?,
            connected: false,
            exchange: Some(exchange),
            rest: Vec::new(),
            mark,
            last_error: None,
            bound: None,
        }))
    }

    /// The socket being dialled (non-blocking); it changes when a connect fails and the next address is tried.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Advances the dial as far as the socket allows: `true` once the stream is connected and the proxy accepted
    /// (the stream is then positioned at the first byte from the target), `false` while it waits. May be called
    /// at any time; a call without progress changes nothing.
    pub fn poll(&mut self) -> io::Result<bool> {
        while !self.connected {
            if let Some(error) = self.stream.take_error()? {
                self.next_address(error)?;
                continue;
            }
            match self.stream.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => self.next_address(e)?,
            }
        }
        match &mut self.exchange {
            None => Ok(true),
            Some(exchange) => match exchange.drive(&mut &self.stream)? {
                Progress::Done(bound) => {
                    self.bound = bound;
                    Ok(true)
                }
                Progress::Pending => Ok(false),
            },
        }
    }

    /// The dialled stream (still non-blocking).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// The association a finished [`Dialing::associate`] opened (its control connection still non-blocking).
    pub fn into_association(self) -> io::Result<socks5::UdpAssociation> {
        let bound = self.bound.ok_or_else(|| io::Error::other("the UDP association is not open yet"))?;
        let proxy_ip = self.stream.peer_addr()?.ip();
        socks5::UdpAssociation::new(self.stream, bound, proxy_ip)
    }

    /// A connect failed with `error`: tries the next address, or fails with the error when none is left.
    fn next_address(&mut self, error: io::Error) -> io::Result<()> {
        self.last_error = Some(error);
        match self.rest.pop() {
            Some(addr) => {
                self.stream = connect_nonblocking(addr, self.mark)?;
                Ok(())
            }
            None => Err(self.last_error.take().unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into())),
        }
    }
}

/// The handshake that asks `proxy` to CONNECT to `target`.
fn proxy_exchange(proxy: &Proxy, target: Target<'_>) -> io::Result<Exchange> {
    Ok(match proxy.protocol {
        Protocol::Socks5 => {
            let mut request = Vec::with_capacity(22);
            match target {
                Target::Addr(addr) => socks5::encode_connect(addr, &mut request),
                Target::Domain { name, port, .. } => socks5::encode_connect_domain(name, port, &mut request)?,
            }
            Exchange::socks5(proxy.credentials.clone(), request)
        }
        Protocol::HttpConnect => Exchange::http(http::encode_request(target, proxy.credentials.as_ref())),
    })
}

/// A marked, non-blocking TCP socket with a connect to `addr` in progress (or done, on loopback).
fn connect_nonblocking(addr: SocketAddr, mark: u32) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(SocketProtocol::TCP))?;
    if mark != 0 {
        socket.set_mark(mark)?;
    }
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}
