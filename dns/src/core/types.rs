//! What goes in and out of the [`Core`](super::Core): client addresses, query context, outputs, settings,
//! counters.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use config::dns::PacketDirection;

/// Where a client query came from and how to answer it. Opaque to the core (only `peer.ip()` is read, by
/// `sip(...)` rules); handed back verbatim with the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr {
    /// The client's address and port.
    pub peer: SocketAddr,
    /// The address the client sent to (from IP_PKTINFO / the original destination), to answer from it.
    pub local: Option<IpAddr>,
    /// The ingress interface index (0: unknown).
    pub ifindex: u32,
    /// The edge's socket the query arrived on.
    pub listener: u32,
    /// The edge's TCP connection, for a query that came over TCP.
    pub tcp: Option<u64>,
}

/// The routing context of a query besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryContext<'a> {
    /// Who asked.
    pub client: ClientAddr,
    /// LAN-in (a client of a LAN interface), WAN-out (the gateway's own), or neither.
    pub direction: Option<PacketDirection>,
    /// The interface of that direction, by name.
    pub interface: Option<&'a str>,
    /// The server the client addressed (intercepted DNS), for `asis`.
    pub original_dst: Option<SocketAddr>,
}

/// An edge UDP socket the core asked for: slot and generation, so a late event for a closed socket is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u64);

/// An edge TCP (or TLS) connection the core asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Something the edge must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `payload` to the client (over UDP, or as one framed message on its TCP connection).
    Answer {
        /// To whom.
        client: ClientAddr,
        /// The DNS message.
        payload: Vec<u8>,
    },
    /// Open a UDP socket connected to `remote` (so the kernel drops datagrams from anyone else).
    UdpOpen {
        /// The socket's id in later events.
        socket: SocketId,
        /// The upstream.
        remote: SocketAddr,
    },
    /// Send one datagram on `socket`.
    UdpSend {
        /// The socket.
        socket: SocketId,
        /// The DNS message.
        payload: Vec<u8>,
    },
    /// Close `socket`.
    UdpClose {
        /// The socket.
        socket: SocketId,
    },
    /// Connect to `remote` over TCP (with TLS and this server name when `tls` is set); report
    /// [`Core::tcp_connected`](super::Core::tcp_connected) or [`Core::tcp_closed`](super::Core::tcp_closed).
    TcpConnect {
        /// The connection's id in later events.
        conn: ConnId,
        /// The upstream.
        remote: SocketAddr,
        /// TLS server name (DoT and DoH), if any.
        tls: Option<Arc<str>>,
        /// DNS over HTTPS: the HTTP path; the connection is an HTTP/2 session and each framed message one
        /// POST (RFC 8484). The edge keeps the message ID (sent as 0) and restores it in the answer.
        doh_path: Option<Arc<str>>,
    },
    /// Write `payload` (already length-prefixed) on `conn`.
    TcpSend {
        /// The connection.
        conn: ConnId,
        /// Bytes to write.
        payload: Vec<u8>,
    },
    /// Close `conn`.
    TcpClose {
        /// The connection.
        conn: ConnId,
    },
}

/// What [`Core::handle_query`](super::Core::handle_query) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The reply buffer holds the answer: send it now.
    Answered,
    /// The answer comes later as [`Output::Answer`].
    Pending,
    /// Nothing to send (not a DNS query at all).
    Dropped,
}

/// An address entering or leaving the domain routing table, with the names of the answer that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainUpdate {
    /// A cached answer holds `addr` for `names`.
    Add {
        /// The address.
        addr: IpAddr,
        /// The question name and the CNAME chain.
        names: Arc<[Box<str>]>,
    },
    /// The cached answer that held `addr` for `names` is gone.
    Remove {
        /// The address.
        addr: IpAddr,
        /// The names it was added with.
        names: Arc<[Box<str>]>,
    },
}

/// Timeouts and bounds of one core. [`Default`] holds the production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Client queries waiting at once; more are answered REFUSED (dae's 16384).
    pub max_in_flight: usize,
    /// Distinct upstream questions in flight at once.
    pub max_flights: usize,
    /// Clients waiting on one question.
    pub max_waiters: usize,
    /// A client query gets an answer or SERVFAIL within this.
    pub query_timeout: Duration,
    /// One UDP attempt waits this long before the query is sent again.
    pub udp_attempt_timeout: Duration,
    /// Sends of one question to one upstream (UDP retries and TCP retries after a broken connection).
    pub max_attempts: u8,
    /// Queries one UDP socket carries at once.
    pub max_pending_per_udp_socket: usize,
    /// UDP sockets per upstream.
    pub max_udp_sockets: usize,
    /// An answered or timed-out ID is not reused on its socket for this long (late answers stay recognisable).
    pub id_quarantine: Duration,
    /// Unexpected or mismatched datagrams a UDP socket may receive before it is retired.
    pub max_suspicious_datagrams: u32,
    /// TCP/TLS connections per upstream.
    pub max_tcp_conns: usize,
    /// A connection with this many queries pending makes the pool add another (up to `max_tcp_conns`).
    pub tcp_scale_up_pending: usize,
    /// Queries one TCP connection carries at once.
    pub max_pending_per_tcp_conn: usize,
    /// Idle upstream sockets and connections are closed after this.
    pub idle_timeout: Duration,
    /// Cache bound in bytes (entries come from the configuration).
    pub cache_max_bytes: usize,
    /// Lifetime of a synthesised `reject` answer in the cache (dae: 120 s, as for empty answers).
    pub reject_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_in_flight: 16_384,
            max_flights: 16_384,
            max_waiters: 1_024,
            query_timeout: Duration::from_secs(4),
            udp_attempt_timeout: Duration::from_millis(1_200),
            max_attempts: 3,
            // 4096 of 65536 IDs: random draws find a free ID on the first try 93% of the time even with the
            // socket full and as many IDs quarantined; 4 sockets carry 16384 queries.
            max_pending_per_udp_socket: 4_096,
            max_udp_sockets: 8,
            id_quarantine: Duration::from_secs(3),
            max_suspicious_datagrams: 64,
            max_tcp_conns: 4,
            tcp_scale_up_pending: 64,
            max_pending_per_tcp_conn: 4_096,
            idle_timeout: Duration::from_secs(30),
            cache_max_bytes: crate::cache::DEFAULT_MAX_BYTES,
            reject_ttl: Duration::from_secs(120),
        }
    }
}

/// Counters of one core (sum them across workers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Client queries received (well-formed).
    pub queries: u64,
    /// Malformed client messages (answered FORMERR when the header was readable).
    pub malformed: u64,
    /// Answered REFUSED because `max_in_flight` queries were waiting.
    pub refused_overload: u64,
    /// Answered REFUSED because `max_flights` or `max_waiters` was reached.
    pub refused_flight_limit: u64,
    /// Answered by `reject` rules.
    pub rejected: u64,
    /// Answered from the cache, fresh.
    pub cache_hits: u64,
    /// Answered from the cache, stale.
    pub stale_hits: u64,
    /// Background refreshes started.
    pub refreshes: u64,
    /// Background refreshes that failed (the entry's refresh re-arms).
    pub refresh_failures: u64,
    /// New upstream questions.
    pub flights: u64,
    /// Client queries that joined a question already in flight.
    pub joined: u64,
    /// Answered SERVFAIL (timeout, upstream unusable, too many re-queries).
    pub servfail: u64,
    /// Queries sent upstream (every attempt).
    pub upstream_sent: u64,
    /// UDP attempts that timed out.
    pub udp_timeouts: u64,
    /// UDP answers truncated and retried over TCP.
    pub tcp_fallbacks: u64,
    /// Datagrams for an ID in quarantine (late answers).
    pub late_datagrams: u64,
    /// Datagrams for an ID never issued on that socket, or unparsable.
    pub unexpected_datagrams: u64,
    /// Datagrams whose question differs from the pending query's.
    pub mismatched_datagrams: u64,
    /// UDP sockets retired after too many unexpected or mismatched datagrams.
    pub sockets_retired: u64,
    /// TCP/TLS connections opened.
    pub tcp_opened: u64,
    /// TCP/TLS connections that failed or broke.
    pub tcp_broken: u64,
    /// Queries re-sent, without spending an attempt, after a connection broke on an older query.
    pub tcp_bystanders: u64,
    /// Re-queries made by response rules.
    pub requeries: u64,
    /// Client queries waiting now.
    pub in_flight: u64,
    /// Upstream UDP sockets open now.
    pub udp_sockets: u64,
    /// Upstream TCP/TLS connections open or opening now.
    pub tcp_conns: u64,
    /// Queries registered on upstream sockets and connections now (0 when idle: no slot leaked).
    pub upstream_pending: u64,
    /// Questions in flight now.
    pub flights_now: u64,
    /// Domain updates dropped because nobody took them (see [`Core::poll_domain_update`](super::Core::poll_domain_update)).
    pub domain_updates_dropped: u64,
}
