//! Reassembly of the Initial CRYPTO stream: fragments arrive in any order, across frames, coalesced packets and
//! datagrams, and may overlap (retransmissions). Overlapping bytes must agree: RFC 9000 section 19.6 makes
//! retransmitted CRYPTO data identical, so a contradiction means a broken or hostile sender, and we stop rather
//! than guess which copy the server will believe.

use std::ops::Range;

use crate::sniff::tls::client_hello::{HANDSHAKE_HEADER_LEN, MAX_CLIENT_HELLO_LEN};

/// The client's Initial CRYPTO stream holds exactly one message, the ClientHello: nothing past it is kept.
pub const MAX_STREAM_LEN: usize = HANDSHAKE_HEADER_LEN + MAX_CLIENT_HELLO_LEN;
/// At most this many disjoint received ranges. Real clients send 1 to 4 fragments per packet (Chrome splits
/// and shuffles its ClientHello); more gaps than this is fragmentation meant to cost us CPU.
pub const MAX_RANGES: usize = 32;

/// Why a fragment was refused; every one ends sniffing of the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    /// The fragment ends past [`MAX_STREAM_LEN`].
    #[error("CRYPTO data past {MAX_STREAM_LEN} bytes")]
    TooLong,
    /// The fragment contradicts bytes received before at the same offsets.
    #[error("CRYPTO fragments contradict each other")]
    Conflict,
    /// More than [`MAX_RANGES`] disjoint ranges.
    #[error("CRYPTO stream split into more than {MAX_RANGES} pieces")]
    TooFragmented,
}

/// The CRYPTO stream of one flow's Initial packets.
#[derive(Debug, Default)]
pub struct CryptoStream {
    /// Stream bytes by offset; bytes outside `ranges` are zero filler.
    buf: Vec<u8>,
    /// Received ranges: sorted, disjoint and not adjacent.
    ranges: Vec<Range<usize>>,
}

impl CryptoStream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the stream for another flow, keeping its buffers' capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ranges.clear();
    }

    /// Adds `data` at stream `offset`.
    pub fn insert(&mut self, offset: u64, data: &[u8]) -> Result<(), AssembleError> {
        let start = usize::try_from(offset).map_err(|_| AssembleError::TooLong)?;
        let end = start.checked_add(data.len()).filter(|&e| e <= MAX_STREAM_LEN).ok_or(AssembleError::TooLong)?;
        if data.is_empty() {
            return Ok(());
        }
        for have in self.ranges.iter().filter(|r| r.start < end && start < r.end) {
            let (lo, hi) = (have.start.max(start), have.end.min(end));
            if self.buf[lo..hi] != data[lo - start..hi - start] {
                return Err(AssembleError::Conflict);
            }
        }
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.buf[start..end].copy_from_slice(data);
        self.add_range(start..end)
    }

    fn add_range(&mut self, new: Range<usize>) -> Result<(), AssembleError> {
        // Ranges touching or overlapping `new` merge into it.
        let first = self.ranges.partition_point(|r| r.end < new.start);
        let last = self.ranges.partition_point(|r| r.start <= new.end);
        let merged = if first < last {
            self.ranges[first].start.min(new.start)..self.ranges[last - 1].end.max(new.end)
        } else {
            new
        };
        self.ranges.splice(first..last, [merged]);
        if self.ranges.len() > MAX_RANGES {
            return Err(AssembleError::TooFragmented);
        }
        Ok(())
    }

    /// The bytes received without a gap from offset 0.
    pub fn contiguous(&self) -> &[u8] {
        match self.ranges.first() {
            Some(r) if r.start == 0 => &self.buf[..r.end],
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_and_overlapping_fragments_join() {
        let mut s = CryptoStream::new();
        s.insert(6, b"world").unwrap();
        assert_eq!(s.contiguous(), b"");
        s.insert(3, b"lo wo").unwrap();
        s.insert(0, b"hel").unwrap();
        assert_eq!(s.contiguous(), b"hello world");
        s.insert(0, b"hello").unwrap(); // identical retransmission
        assert_eq!(s.contiguous(), b"hello world");
    }

    #[test]
    fn contradicting_overlap_is_refused_and_keeps_the_first_bytes() {
        let mut s = CryptoStream::new();
        s.insert(0, b"abcdef").unwrap();
        assert_eq!(s.insert(4, b"XY!"), Err(AssembleError::Conflict));
        assert_eq!(s.contiguous(), b"abcdef");
    }

    #[test]
    fn offsets_past_the_bound_and_huge_offsets_are_refused() {
        let mut s = CryptoStream::new();
        assert_eq!(s.insert(MAX_STREAM_LEN as u64, b"x"), Err(AssembleError::TooLong));
        assert_eq!(s.insert((1 << 62) - 1, b"x"), Err(AssembleError::TooLong));
        assert_eq!(s.insert(u64::MAX, b""), Err(AssembleError::TooLong));
        assert!(s.insert(MAX_STREAM_LEN as u64 - 1, b"x").is_ok());
    }

    #[test]
    fn many_disjoint_fragments_are_refused() {
        let mut s = CryptoStream::new();
        let mut result = Ok(());
        for i in 0..=MAX_RANGES {
            result = s.insert((i * 2) as u64, b"x");
        }
        assert_eq!(result, Err(AssembleError::TooFragmented));
    }

    #[test]
    fn a_cleared_stream_holds_nothing_of_the_last_one() {
        let mut s = CryptoStream::new();
        s.insert(0, b"secret").unwrap();
        s.clear();
        assert_eq!(s.contiguous(), b"");
        s.insert(3, b"xyz").unwrap();
        s.insert(0, b"abc").unwrap(); // would conflict with the old bytes had they stayed
        assert_eq!(s.contiguous(), b"abcxyz");
    }

    #[test]
    fn adjacent_fragments_merge_into_one_range() {
        let mut s = CryptoStream::new();
        for i in (0..100u64).rev() {
            s.insert(i, &[i as u8]).unwrap();
        }
        assert_eq!(s.ranges.len(), 1);
        assert_eq!(s.contiguous().len(), 100);
    }
}
