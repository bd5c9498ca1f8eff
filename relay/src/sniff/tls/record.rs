//! The TLS record layer as far as the first handshake message (RFC 8446 section 5.1): a ClientHello can be
//! split over several records, and records over several TCP segments.
//!
//! [`HelloReader`] is fed the client's byte stream as it grows and does work only when a whole record has
//! arrived, so one-byte segments cost O(1) each and the total work is linear in the stream.

use super::client_hello::{self, ClientHello, HelloError};
use crate::sniff::wire::Reader;

/// Record header: content type (1), legacy version (2), length (2).
const RECORD_HEADER_LEN: usize = 5;
/// `handshake` content type.
const CONTENT_HANDSHAKE: u8 = 22;
/// RFC 8446 section 5.1: a plaintext record fragment is at most 2^14 bytes.
const MAX_RECORD_LEN: usize = 1 << 14;

/// Progress of reading a ClientHello out of TLS records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloProgress {
    /// More bytes are needed.
    NeedMore,
    /// The ClientHello is complete and parsed.
    Hello(ClientHello),
    /// The stream is not a TLS ClientHello we can read.
    Failed(HelloError),
}

/// Reassembles the first handshake message from the records at the start of a client's byte stream.
#[derive(Debug, Default)]
pub struct HelloReader {
    /// Offset in the stream of the next record header.
    next_record: usize,
    /// Handshake bytes gathered from earlier records; stays empty (no copy) when the ClientHello fits one record.
    gathered: Vec<u8>,
}

impl HelloReader {
    /// A reader positioned at the start of the stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads what `stream` (everything the client has sent so far: each call passes the previous bytes
    /// extended, never changed) adds.
    pub fn poll(&mut self, stream: &[u8]) -> HelloProgress {
        loop {
            let Some(unread) = stream.get(self.next_record..) else {
                return HelloProgress::Failed(HelloError::Malformed("stream shrank between calls"));
            };
            let mut r = Reader::new(unread);
            let (Some(kind), Some([major, _]), Some(len)) = (r.u8(), r.array::<2>(), r.u16()) else {
                return HelloProgress::NeedMore;
            };
            let len = usize::from(len);
            if kind != CONTENT_HANDSHAKE {
                return HelloProgress::Failed(HelloError::Malformed("record is not a handshake record"));
            }
            if major != 3 {
                return HelloProgress::Failed(HelloError::Malformed("record version is not 3.x"));
            }
            if len == 0 || len > MAX_RECORD_LEN {
                return HelloProgress::Failed(HelloError::Malformed("record length is 0 or above 2^14"));
            }
            let Some(fragment) = r.bytes(len) else { return HelloProgress::NeedMore };
            self.next_record += RECORD_HEADER_LEN + len;
            if self.gathered.is_empty() {
                // Fast path: the whole message is in this record.
                match client_hello::message_len(fragment) {
                    Err(e) => return HelloProgress::Failed(e),
                    Ok(Some(total)) if total <= fragment.len() => return finish(client_hello::parse(fragment)),
                    Ok(_) => {}
                }
            }
            self.gathered.extend_from_slice(fragment);
            match client_hello::message_len(&self.gathered) {
                Err(e) => return HelloProgress::Failed(e),
                // `message_len` bounds `total` by MAX_CLIENT_HELLO_LEN, so `gathered` stays within that plus one
                // record.
                Ok(Some(total)) if total <= self.gathered.len() => return finish(client_hello::parse(&self.gathered)),
                Ok(_) => {}
            }
        }
    }
}

fn finish(result: Result<ClientHello, HelloError>) -> HelloProgress {
    match result {
        Ok(hello) => HelloProgress::Hello(hello),
        Err(e) => HelloProgress::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sniff::tls::client_hello::tests::{alpn_ext, hello_with, sni_ext};

    fn records(message: &[u8], fragment: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in message.chunks(fragment) {
            out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn hello_split_over_records_and_one_byte_segments_is_read() {
        let msg = hello_with(&[sni_ext(b"split.example"), alpn_ext(&[b"h2"])]);
        let stream = records(&msg, 7);
        let mut reader = HelloReader::new();
        for end in 0..stream.len() {
            assert_eq!(reader.poll(&stream[..end]), HelloProgress::NeedMore, "at {end}");
        }
        let HelloProgress::Hello(hello) = reader.poll(&stream) else { panic!("no hello") };
        assert_eq!(hello.sni.as_deref(), Some("split.example"));
        assert_eq!(hello.alpn, ["h2"]);
    }

    #[test]
    fn application_data_record_first_is_not_a_hello() {
        let stream = [23, 3, 3, 0, 1, 0];
        assert!(matches!(HelloReader::new().poll(&stream), HelloProgress::Failed(HelloError::Malformed(_))));
    }

    #[test]
    fn oversized_record_length_fails_without_waiting() {
        let stream = [CONTENT_HANDSHAKE, 3, 1, 0x40, 0x01];
        assert!(matches!(HelloReader::new().poll(&stream), HelloProgress::Failed(_)));
    }

    #[test]
    fn hello_claiming_more_than_the_bound_fails_at_its_header() {
        let stream = records(&[1, 0x00, 0x50, 0x00], 4);
        assert_eq!(HelloReader::new().poll(&stream), HelloProgress::Failed(HelloError::TooLarge));
    }
}
