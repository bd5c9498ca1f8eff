//! Relaying for dae-rs.
//!
//! Dials the outbound (direct first; SOCKS5/HTTP and other proxy protocols later), moves bytes with splice or
//! io_uring, keeps UDP sessions full-cone with timeouts, sends replies from transparent sockets; sniffs QUIC
//! Initials, TLS ClientHello and HTTP Host as sans-IO cores for domain routing ([`sniff`]).
//!
//! Not built yet: issue 4 (relay, sessions, outbounds).
#![forbid(unsafe_code)]

pub mod sniff;
