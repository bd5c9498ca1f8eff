//! The blocking socket edge shared by the handshakes: marked TCP sockets, name resolution and one deadline
//! over a whole dial.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol as SocketProtocol, SockAddr, Socket, Type};

use super::link::{Endpoint, Host};

/// One instant by which a whole dial (connect and handshake) must be done.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Instant);

impl Deadline {
    pub(crate) fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }

    /// Time left, or `TimedOut` when none is (a zero socket timeout would mean "block forever").
    pub(crate) fn remaining(&self) -> io::Result<Duration> {
        match self.0.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(io::Error::new(io::ErrorKind::TimedOut, "the dial took longer than its timeout")),
        }
    }
}

/// Resolves an endpoint: an IP literal as is, a name with the system resolver (blocking; not bounded by the
/// dial's deadline, as `getaddrinfo` takes no timeout).
pub(crate) fn resolve(endpoint: &Endpoint) -> io::Result<Vec<SocketAddr>> {
    match &endpoint.host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, endpoint.port)]),
        Host::Name(name) => {
            let addrs: Vec<SocketAddr> = (name.as_str(), endpoint.port).to_socket_addrs()?.collect();
            if addrs.is_empty() {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("`{name}` has no address")));
            }
            Ok(addrs)
        }
    }
}

/// Opens a TCP connection to `addr` with SO_MARK `mark` (0: left unset) before `deadline`.
pub(crate) fn connect_addr(addr: SocketAddr, mark: u32, deadline: &Deadline) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(SocketProtocol::TCP))?;
    if mark != 0 {
        socket.set_mark(mark)?;
    }
    socket.connect_timeout(&SockAddr::from(addr), deadline.remaining()?)?;
    Ok(socket.into())
}

/// Connects to the first address of `endpoint` that answers before `deadline`; the error is the last one met.
pub(crate) fn connect_endpoint(endpoint: &Endpoint, mark: u32, deadline: &Deadline) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in resolve(endpoint)? {
        match connect_addr(addr, mark, deadline) {
            Ok(stream) => return Ok(stream),
            Err(error) => last = Some(error),
        }
    }
    let error = last.expect("resolve returns at least one address");
    Err(io::Error::new(error.kind(), format!("cannot connect to proxy {endpoint}: {error}")))
}

/// A stream whose every read and write ends by the deadline.
pub(crate) struct DeadlineIo<'a> {
    stream: &'a mut TcpStream,
    deadline: Deadline,
}

impl DeadlineIo<'_> {
    /// `recv(MSG_PEEK)` under the deadline: looks at buffered bytes without consuming them.
    pub(crate) fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.deadline.remaining()?))?;
        self.stream.peek(buf).map_err(timed_out)
    }
}

impl super::exchange::Wire for DeadlineIo<'_> {
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        DeadlineIo::peek(self, buf)
    }
}

impl Read for DeadlineIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.deadline.remaining()?))?;
        self.stream.read(buf).map_err(timed_out)
    }
}

impl Write for DeadlineIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.deadline.remaining()?))?;
        self.stream.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// A socket timeout surfaces as `WouldBlock` (EAGAIN); callers of a dial want `TimedOut`.
fn timed_out(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "the proxy handshake took longer than the dial timeout")
    } else {
        error
    }
}

/// Runs a handshake on `stream` under `deadline`, then clears the socket timeouts so the relay that takes the
/// stream over sees a plain blocking socket.
pub(crate) fn with_deadline<T>(
    stream: &mut TcpStream,
    deadline: &Deadline,
    handshake: impl FnOnce(&mut DeadlineIo<'_>) -> io::Result<T>,
) -> io::Result<T> {
    let result = handshake(&mut DeadlineIo { stream: &mut *stream, deadline: *deadline });
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    result
}
