//! The DNS forwarder of dae-rs.
//!
//! Request routing (qname, qtype, interface, source) -> scoped cache -> singleflight -> pipelined upstream
//! connections -> response routing -> reply. Answers publish `IP -> domain-rule bitmap` into a kernel map so
//! domain rules also route the connections that follow. The logic is a sans-IO core (bytes and time in,
//! decisions out); sockets live at the edges (`../shared/DESIGN.md`, "The walk of a packet", step 6).
//!
//! Not built yet: issue 5 holds the work.
#![forbid(unsafe_code)]
