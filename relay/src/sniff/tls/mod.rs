//! TLS: the ClientHello message and the record layer that carries it over TCP.

pub mod client_hello;
pub mod record;

pub use client_hello::{ClientHello, HelloError};
pub use record::{HelloProgress, HelloReader};
