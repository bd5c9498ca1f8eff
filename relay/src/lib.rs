//! Relaying for dae-rs.
//!
//! Dials the outbound — direct, SOCKS5 or HTTP CONNECT, through groups of nodes with health checks
//! ([`outbound`]) — moves bytes with splice or io_uring, keeps UDP sessions full-cone with timeouts, sends
//! replies from transparent sockets; sniffs QUIC Initials, TLS ClientHello and HTTP Host as sans-IO cores for
//! domain routing ([`sniff`]).
//!
//! Not built yet: the relay loop and sessions; outbound protocols beyond SOCKS5 and HTTP CONNECT.
#![forbid(unsafe_code)]

pub mod outbound;
pub mod sniff;
