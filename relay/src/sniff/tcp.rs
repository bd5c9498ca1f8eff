//! The TCP sniff state machine: the client's first bytes and the clock in, a decision out.
//!
//! The gateway accepts a proxied connection, creates a [`TcpSniffer`] and calls [`TcpSniffer::poll`] with
//! everything the client has sent so far, at once (no bytes yet) and whenever bytes arrive or the deadline
//! passes. It holds the bytes itself (it must forward them after dialing); the sniffer keeps only offsets and,
//! for a ClientHello split over several TLS records, the handshake bytes.
//!
//! It never waits past `sniffing_timeout` from creation: server-first protocols (SMTP, SSH, FTP, ...) send
//! nothing and are released at the deadline; ports where a server speaks first, or that carry no name, are
//! released at once.

use std::time::{Duration, Instant};

use super::{
    Protocol,
    http::{HostProgress, HostReader},
    tls::{HelloProgress, HelloReader},
};

/// Destination ports never sniffed: server-first or name-less protocols (FTP, SSH, SMTP, DNS, NNTP, NTP, SNMP,
/// MySQL, PostgreSQL, Redis, Elasticsearch, MongoDB, memcached). dae's list (`control/tcp_sniff_policy.go`).
pub const EXCLUDED_PORTS: [u16; 14] = [20, 21, 22, 25, 53, 119, 123, 161, 3306, 5432, 6379, 9200, 27017, 11211];

/// Whether dae's policy leaves TCP destination `port` unsniffed.
pub fn port_excluded(port: u16) -> bool {
    EXCLUDED_PORTS.contains(&port)
}

/// What to do with a connection being sniffed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpDecision {
    /// Wait for more client bytes, but call [`TcpSniffer::poll`] again no later than `deadline`.
    NeedMore {
        /// When the sniffer gives up if nothing more arrives.
        deadline: Instant,
    },
    /// Stop sniffing: route and dial by the original destination.
    GiveUp(GiveUpReason),
    /// A name was found.
    Name {
        /// TLS (SNI) or HTTP (Host).
        protocol: Protocol,
        /// The server name or host, normalised (see [`crate::sniff::normalize_host`]).
        name: String,
        /// ALPN protocol names (TLS only).
        alpn: Vec<String>,
    },
}

/// Why sniffing stopped without a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GiveUpReason {
    /// `sniffing_timeout` is zero: sniffing is off.
    Disabled,
    /// The destination port is in [`EXCLUDED_PORTS`].
    ExcludedPort,
    /// The deadline passed first (a server-first protocol, or a client that stalls).
    Timeout,
    /// The first bytes are neither a TLS handshake nor an HTTP/1 request.
    NotTlsOrHttp,
    /// TLS or HTTP, but the message is malformed or larger than the bounds.
    Malformed,
    /// A well-formed ClientHello or request that carries no name.
    NoName,
}

#[derive(Debug)]
enum State {
    Classify,
    Tls(HelloReader),
    Http(HostReader),
    Done(TcpDecision),
}

/// Sniffs one TCP connection's first bytes for a TLS server name or an HTTP host.
#[derive(Debug)]
pub struct TcpSniffer {
    deadline: Instant,
    state: State,
    /// The protocol once the bytes proved to be a ClientHello or an HTTP/1 request (named or not).
    protocol: Option<Protocol>,
}

impl TcpSniffer {
    /// A sniffer for a connection to `dst_port` accepted at `now`, giving up `timeout` later.
    pub fn new(dst_port: u16, timeout: Duration, now: Instant) -> Self {
        let state = if timeout.is_zero() {
            State::Done(TcpDecision::GiveUp(GiveUpReason::Disabled))
        } else if port_excluded(dst_port) {
            State::Done(TcpDecision::GiveUp(GiveUpReason::ExcludedPort))
        } else {
            State::Classify
        };
        Self { deadline: now + timeout, state, protocol: None }
    }

    /// TLS or HTTP once the bytes proved to be a ClientHello or an HTTP/1 request, with or without a name.
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// When the sniffer gives up if no decision has been reached.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Reads `received` (everything the client has sent so far; each call extends the previous bytes) at time
    /// `now`. Once a call returns `GiveUp` or `Name`, every later call returns the same decision.
    pub fn poll(&mut self, received: &[u8], now: Instant) -> TcpDecision {
        if let State::Done(decision) = &self.state {
            return decision.clone();
        }
        let decision = self.read(received).unwrap_or(if now >= self.deadline {
            TcpDecision::GiveUp(GiveUpReason::Timeout)
        } else {
            TcpDecision::NeedMore { deadline: self.deadline }
        });
        if !matches!(decision, TcpDecision::NeedMore { .. }) {
            self.state = State::Done(decision.clone());
        }
        decision
    }

    /// A final decision from the bytes, or `None` to wait.
    fn read(&mut self, received: &[u8]) -> Option<TcpDecision> {
        if let State::Classify = self.state {
            // TLS records start with content type 22; anything else must look like an HTTP method.
            self.state = match received.first()? {
                0x16 => State::Tls(HelloReader::new()),
                _ => State::Http(HostReader::new()),
            };
        }
        match &mut self.state {
            State::Tls(reader) => match reader.poll(received) {
                HelloProgress::NeedMore => None,
                HelloProgress::Hello(hello) => {
                    self.protocol = Some(Protocol::Tls);
                    Some(match hello.sni {
                        Some(name) => TcpDecision::Name { protocol: Protocol::Tls, name, alpn: hello.alpn },
                        None => TcpDecision::GiveUp(GiveUpReason::NoName),
                    })
                }
                HelloProgress::Failed(_) => Some(TcpDecision::GiveUp(GiveUpReason::Malformed)),
            },
            State::Http(reader) => match reader.poll(received) {
                HostProgress::NeedMore => None,
                HostProgress::Host(name) => {
                    self.protocol = Some(Protocol::Http);
                    Some(TcpDecision::Name { protocol: Protocol::Http, name, alpn: Vec::new() })
                }
                HostProgress::NoHost => {
                    self.protocol = Some(Protocol::Http);
                    Some(TcpDecision::GiveUp(GiveUpReason::NoName))
                }
                HostProgress::NotHttp => Some(TcpDecision::GiveUp(GiveUpReason::NotTlsOrHttp)),
            },
            State::Classify | State::Done(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sniff::tls::client_hello::tests::{hello_with, sni_ext};

    const TIMEOUT: Duration = Duration::from_millis(30);

    fn tls_stream(name: &[u8]) -> Vec<u8> {
        let msg = hello_with(&[sni_ext(name)]);
        let mut out = vec![0x16, 3, 1];
        out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        out.extend_from_slice(&msg);
        out
    }

    #[test]
    fn excluded_port_gives_up_before_any_byte() {
        let now = Instant::now();
        let mut s = TcpSniffer::new(22, TIMEOUT, now);
        assert_eq!(s.poll(&[], now), TcpDecision::GiveUp(GiveUpReason::ExcludedPort));
    }

    #[test]
    fn zero_timeout_disables_sniffing() {
        let now = Instant::now();
        let mut s = TcpSniffer::new(443, Duration::ZERO, now);
        assert_eq!(s.poll(&tls_stream(b"a.example"), now), TcpDecision::GiveUp(GiveUpReason::Disabled));
    }

    #[test]
    fn silent_client_is_released_exactly_at_the_deadline() {
        let t0 = Instant::now();
        let mut s = TcpSniffer::new(443, TIMEOUT, t0);
        assert_eq!(s.poll(&[], t0), TcpDecision::NeedMore { deadline: t0 + TIMEOUT });
        assert_eq!(
            s.poll(&[], t0 + TIMEOUT - Duration::from_nanos(1)),
            TcpDecision::NeedMore { deadline: t0 + TIMEOUT }
        );
        assert_eq!(s.poll(&[], t0 + TIMEOUT), TcpDecision::GiveUp(GiveUpReason::Timeout));
    }

    #[test]
    fn partial_hello_at_the_deadline_gives_up_and_stays_given_up() {
        let t0 = Instant::now();
        let stream = tls_stream(b"late.example");
        let mut s = TcpSniffer::new(443, TIMEOUT, t0);
        assert!(matches!(s.poll(&stream[..10], t0), TcpDecision::NeedMore { .. }));
        assert_eq!(s.poll(&stream[..20], t0 + TIMEOUT), TcpDecision::GiveUp(GiveUpReason::Timeout));
        assert_eq!(s.poll(&stream, t0 + TIMEOUT), TcpDecision::GiveUp(GiveUpReason::Timeout));
    }

    #[test]
    fn tls_hello_over_segments_yields_the_server_name() {
        let t0 = Instant::now();
        let stream = tls_stream(b"seg.example");
        let mut s = TcpSniffer::new(8443, TIMEOUT, t0);
        let (a, b) = stream.split_at(stream.len() / 2);
        assert!(matches!(s.poll(a, t0), TcpDecision::NeedMore { .. }));
        let mut whole = a.to_vec();
        whole.extend_from_slice(b);
        assert_eq!(
            s.poll(&whole, t0 + Duration::from_millis(1)),
            TcpDecision::Name { protocol: Protocol::Tls, name: "seg.example".into(), alpn: vec![] }
        );
    }

    #[test]
    fn http_request_yields_host_and_other_protocols_give_up_at_once() {
        let t0 = Instant::now();
        let mut s = TcpSniffer::new(80, TIMEOUT, t0);
        assert_eq!(
            s.poll(b"GET / HTTP/1.1\r\nHost: h.example\r\n\r\n", t0),
            TcpDecision::Name { protocol: Protocol::Http, name: "h.example".into(), alpn: vec![] }
        );
        let mut s = TcpSniffer::new(4000, TIMEOUT, t0);
        assert_eq!(s.poll(b"\x00\x00\x00\x10", t0), TcpDecision::GiveUp(GiveUpReason::NotTlsOrHttp));
    }
}
