//! Upstream TCP/TLS connections, pipelined out of order (RFC 7766): every query gets an ID unique on its
//! connection, answers are matched by ID and question in any order; a broken connection hands back exactly
//! its own queries.

use std::time::Instant;

use super::FlightRef;
use crate::hash::{FxBuild, FxMap};
use crate::wire::MAX_MESSAGE;

/// Connection progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnState {
    /// Dialling (and for TLS, handshaking); writes are queued.
    Connecting,
    /// Open.
    Open,
}

/// Bytes queued while a connection dials, at most (about 1,000 queries); more queries go elsewhere or wait.
pub(super) const MAX_QUEUED_BYTES: usize = 64 * 1024;

/// One upstream connection.
pub(super) struct TcpConn {
    pub generation: u32,
    pub upstream: usize,
    pub state: ConnState,
    pub pending: FxMap<u16, (FlightRef, u32)>,
    next_id: u16,
    /// Frames written before the connection opened.
    pub queued: Vec<u8>,
    /// Received bytes not yet a whole frame.
    rx: Vec<u8>,
    pub last_used: Instant,
}

/// A frame that cannot be a DNS message: the connection is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BadFrame;

impl TcpConn {
    pub fn new(generation: u32, upstream: usize, now: Instant, first_id: u16, seed: u64) -> Self {
        Self {
            generation,
            upstream,
            state: ConnState::Connecting,
            pending: FxMap::with_capacity_and_hasher(64, FxBuild(seed)),
            next_id: first_id,
            queued: Vec::new(),
            rx: Vec::new(),
            last_used: now,
        }
    }

    /// The next ID not pending on this connection. IDs advance sequentially from a random start, so an ID
    /// comes back only after 65,536 queries on the connection: a late answer to a timed-out query is
    /// recognised (and then also checked against the question).
    pub fn allocate(&mut self, flight: FlightRef, attempt: u32) -> Option<u16> {
        for _ in 0..=u16::MAX {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if let std::collections::hash_map::Entry::Vacant(slot) = self.pending.entry(id) {
                slot.insert((flight, attempt));
                return Some(id);
            }
        }
        None
    }

    /// How many IDs were allocated on this connection since `id` (IDs advance sequentially): larger is older.
    pub fn age(&self, id: u16) -> u16 {
        self.next_id.wrapping_sub(id)
    }

    /// Appends received bytes and moves every complete message into `frames`.
    pub fn receive(&mut self, bytes: &[u8], frames: &mut Vec<Vec<u8>>) -> Result<(), BadFrame> {
        self.rx.extend_from_slice(bytes);
        let mut at = 0;
        while self.rx.len() - at >= 2 {
            let len = usize::from(u16::from_be_bytes([self.rx[at], self.rx[at + 1]]));
            if len < crate::wire::HEADER_LEN {
                return Err(BadFrame);
            }
            if self.rx.len() - at - 2 < len {
                break;
            }
            frames.push(self.rx[at + 2..at + 2 + len].to_vec());
            at += 2 + len;
        }
        self.rx.drain(..at);
        debug_assert!(self.rx.len() < MAX_MESSAGE + 2);
        Ok(())
    }
}

/// `message` with its two-byte length prefix.
pub(super) fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 2);
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
    out
}
