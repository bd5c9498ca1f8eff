//! The per-datagram pre-check: is this worth decrypting as a client QUIC Initial?
//!
//! It runs on every UDP datagram of a proxied flow, so it reads five bytes and the length, no more.
//!
//! | check | why |
//! | --- | --- |
//! | length >= 1200 | RFC 9000 section 14.1: a client pads every datagram that carries an Initial to 1200 bytes, and a server discards smaller ones, so no connection starts from a shorter one. Rejects most non-QUIC traffic (DNS, games, VoIP) on the first compare. |
//! | header form bit set | long header. |
//! | version known | we can only decrypt v1, v2 and drafts 29-34; version 0 is Version Negotiation, never sent by a client. |
//! | type bits = Initial *for that version* | v1 and drafts use `0b00`, v2 uses `0b01` (RFC 9369 section 3.2). dae's check hard-codes `0b00` and so rejects every v2 Initial and accepts v2 Retry. |
//!
//! **The fixed bit (0x40) is not checked.** RFC 9287 lets a client clear it, in Initials too, when it holds a
//! NEW_TOKEN token from a server that sent `grease_quic_bit`; requiring it would lose those names and make the
//! fixed bit ossify, which is what RFC 9287 exists to prevent. Dropping it costs nothing in precision: the
//! version and AEAD checks that follow reject non-QUIC datagrams anyway (dae's later code dropped it too).

use super::version::QuicVersion;

/// RFC 9000 section 14.1: the smallest UDP payload that can carry a client Initial.
pub const MIN_INITIAL_DATAGRAM: usize = 1200;
/// Header form bit: 1 = long header.
pub(crate) const LONG_HEADER: u8 = 0x80;
/// The two long-packet-type bits.
pub(crate) const TYPE_SHIFT: u8 = 4;

/// Whether `datagram` looks like a datagram whose first packet is a client Initial of a version we can
/// decrypt. False positives are possible (it does not decrypt); false negatives are not, for those versions.
#[inline]
pub fn is_likely_initial(datagram: &[u8]) -> bool {
    if datagram.len() < MIN_INITIAL_DATAGRAM {
        return false;
    }
    let Some(&[first, a, b, c, d]) = datagram.first_chunk::<5>() else { return false };
    if first & LONG_HEADER == 0 {
        return false;
    }
    match QuicVersion::from_wire(u32::from_be_bytes([a, b, c, d])) {
        Some(version) => (first >> TYPE_SHIFT) & 0b11 == version.initial_type_bits(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(first: u8, version: u32) -> Vec<u8> {
        let mut d = vec![0u8; MIN_INITIAL_DATAGRAM];
        d[0] = first;
        d[1..5].copy_from_slice(&version.to_be_bytes());
        d
    }

    #[test]
    fn v1_and_v2_initials_pass_with_their_own_type_bits() {
        assert!(is_likely_initial(&datagram(0xc3, 0x1)));
        assert!(is_likely_initial(&datagram(0xd3, 0x6b33_43cf)));
        assert!(is_likely_initial(&datagram(0xc0, 0xff00_001d)));
    }

    #[test]
    fn other_packet_types_are_rejected_per_version() {
        // v1 0-RTT, Handshake, Retry; v2 Retry (0b00, which dae's check accepts) and v2 Handshake.
        for (first, version) in [(0xd0, 1), (0xe0, 1), (0xf0, 1), (0xc0, 0x6b33_43cf), (0xf0, 0x6b33_43cf)] {
            assert!(!is_likely_initial(&datagram(first, version)), "{first:#x} {version:#x}");
        }
    }

    #[test]
    fn fixed_bit_cleared_initial_is_accepted() {
        assert!(is_likely_initial(&datagram(0x83, 0x1)));
    }

    #[test]
    fn short_headers_unknown_versions_and_short_datagrams_are_rejected() {
        assert!(!is_likely_initial(&datagram(0x43, 0x1)));
        assert!(!is_likely_initial(&datagram(0xc3, 0x0)));
        assert!(!is_likely_initial(&datagram(0xc3, 0x709a_50c4)));
        let mut short = datagram(0xc3, 0x1);
        short.truncate(MIN_INITIAL_DATAGRAM - 1);
        assert!(!is_likely_initial(&short));
        assert!(!is_likely_initial(&[]));
    }
}
