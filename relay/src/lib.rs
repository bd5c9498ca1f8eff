//! Relaying for dae-rs.
//!
//! Dials the outbound — direct, SOCKS5 or HTTP CONNECT, through groups of nodes with health checks
//! ([`outbound`]); sniffs QUIC Initials, TLS ClientHello and HTTP Host as sans-IO cores for domain routing
//! ([`sniff`]). The per-core loops that move the bytes (copy or splice), the UDP sessions and the transparent
//! reply sockets are the gateway's (`datapath::gateway`).
//!
//! Not built yet: outbound protocols beyond SOCKS5 and HTTP CONNECT.
#![forbid(unsafe_code)]

pub mod outbound;
pub mod sniff;
