//! QUIC Initial sniffing: pre-check, long-header view, Initial protection (v1, v2, drafts 29-34; the client's
//! keys only), CRYPTO reassembly and per-flow sessions.
//!
//! Layers, from one datagram up:
//! - [`is_likely_initial`]: a few-nanosecond filter run on every datagram.
//! - [`LongPacket`]: a checked view of one long-header packet; coalesced packets follow it.
//! - [`InitialKeys`]: the client's Initial keys for a version and DCID; removes header protection and decrypts.
//!   [`reference::RustlsKeys`] does the same wholly through rustls: the benchmarks' floor and the tests' oracle.
//! - [`InitialSniffer`]: one flow across datagrams, returning an [`Outcome`].
//! - [`QuicSessions`]: a worker's bounded table of flows, holding and releasing datagrams in order.

use std::cell::RefCell;

pub mod build;
mod crypto_stream;
mod frames;
mod initial;
mod packet;
mod precheck;
mod protection;
pub mod reference;
mod schedule;
mod session;
mod version;

pub use crypto_stream::{AssembleError, CryptoStream, MAX_RANGES, MAX_STREAM_LEN};
pub use frames::{FrameError, for_each_crypto};
pub use initial::{InitialSniffer, Outcome};
pub use packet::{LongPacket, MAX_CID_LEN, PacketError};
pub use precheck::{MIN_INITIAL_DATAGRAM, is_likely_initial};
pub use protection::{InitialKeys, OpenError};
pub use session::{
    Limits, MAX_HELD_BYTES, MAX_HELD_DATAGRAMS, MAX_NEGATIVE, MAX_SESSIONS, NEGATIVE_TTL, QuicSessions, Release,
    SESSION_TTL, Stats, Verdict,
};
pub use version::{PacketType, QuicVersion};

/// Sniffs a single datagram with a fresh flow state: the whole ClientHello must be in it.
pub fn sniff_datagram(datagram: &[u8]) -> Outcome {
    thread_local! {
        /// Decryption scratch and a sniffer reset for each call, reused as a worker's [`QuicSessions`] reuses
        /// its own: the buffers are allocated once per thread (as large as the largest datagram and ClientHello
        /// seen), not per call.
        static STATE: RefCell<(Vec<u8>, InitialSniffer)> = RefCell::new((Vec::new(), InitialSniffer::new()));
    }
    STATE.with_borrow_mut(|(scratch, sniffer)| {
        sniffer.reset();
        sniffer.on_datagram(datagram, scratch)
    })
}
