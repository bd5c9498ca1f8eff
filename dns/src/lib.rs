//! The DNS forwarder of dae-rs.
//!
//! Request routing (qname, qtype, interface, source) -> scoped cache -> singleflight -> pipelined upstream
//! connections -> response routing -> reply. Answers publish `IP -> names` to a domain-routing callback so
//! `domain(...)` routing rules also route the connections that follow (`../../docs/dns.md`).
//!
//! - [`core`]: the sans-IO forwarder of one worker ([`Core`]): bytes and `Instant`s in, answers, socket and
//!   connection commands, timers and domain updates out. `#![forbid(unsafe_code)]` holds for it and for
//!   [`wire`], [`cache`].
//! - [`service`]: the edges: one thread per core, each owning its sockets (SO_REUSEPORT listeners with
//!   IP_PKTINFO, batched `recvmmsg`/`sendmmsg`, upstream sockets and connections), the domain publisher, and
//!   [`Service::start`] / [`Handle::stop`] for `dae run`.
//! - `bin/dae-dns`: the forwarder alone, for tests and benchmarks (`dae-dns -c FILE`).
#![deny(unsafe_code)]

pub mod cache;
pub mod core;
mod hash;
pub mod rng;
pub mod service;
pub mod wire;

pub use crate::core::{
    ClientAddr, ConnId, Core, DomainUpdate, Handled, Output, QueryContext, Settings, SocketId, Stats,
};
pub use service::{AnswerSink, DomainHook, Handle, Hooks, Intercepted, Service, ServiceError};
