//! A QUIC long-header packet as a typed view (RFC 9000 section 17.2), in the style of smoltcp's `wire`:
//! [`LongPacket::new_checked`] validates every length once and records the field layout; the accessors then
//! cannot fail.
//!
//! ```text
//! first byte | version (4) | DCID len (1) | DCID | SCID len (1) | SCID
//!   [Initial only: token length (varint) | token]
//!   [not Retry: length (varint) = packet number + protected payload]
//!   packet number (1-4, protected) | payload (protected)
//! ```

use std::ops::Range;

use super::{
    precheck::{LONG_HEADER, TYPE_SHIFT},
    version::{PacketType, QuicVersion},
};
use crate::sniff::wire::Reader;

/// RFC 9000 section 17.2: in versions 1 and 2 a connection ID is at most 20 bytes; longer ones are dropped.
pub const MAX_CID_LEN: usize = 20;

/// Why bytes are not a long-header packet of a known version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Short header, or fewer bytes than the fixed part.
    #[error("not a long-header packet")]
    NotLongHeader,
    /// A version we cannot decrypt (or Version Negotiation, version 0).
    #[error("unknown QUIC version {0:#010x}")]
    UnknownVersion(u32),
    /// A connection ID longer than [`MAX_CID_LEN`].
    #[error("connection ID longer than {MAX_CID_LEN} bytes")]
    CidTooLong,
    /// A length field points past the end of the datagram.
    #[error("length field past the end of the datagram")]
    Truncated,
}

/// Where each field of a validated packet lies in the buffer.
#[derive(Debug, Clone)]
struct Layout {
    version: QuicVersion,
    packet_type: PacketType,
    dcid: Range<usize>,
    scid: Range<usize>,
    token: Range<usize>,
    pn_offset: usize,
    end: usize,
}

/// A long-header packet at the start of `buffer`, which may hold further coalesced packets after it.
#[derive(Debug, Clone)]
pub struct LongPacket<T: AsRef<[u8]>> {
    buffer: T,
    layout: Layout,
}

impl<T: AsRef<[u8]>> LongPacket<T> {
    /// Validates the header of the packet at the start of `buffer`: form bit, known version, connection ID
    /// lengths, token and length fields within the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, PacketError> {
        let layout = Self::layout(buffer.as_ref())?;
        Ok(Self { buffer, layout })
    }

    fn layout(bytes: &[u8]) -> Result<Layout, PacketError> {
        let mut r = Reader::new(bytes);
        let (Some(first), Some(wire_version)) = (r.u8(), r.u32()) else { return Err(PacketError::NotLongHeader) };
        if first & LONG_HEADER == 0 {
            return Err(PacketError::NotLongHeader);
        }
        let version = QuicVersion::from_wire(wire_version).ok_or(PacketError::UnknownVersion(wire_version))?;
        let packet_type = version.packet_type(first >> TYPE_SHIFT);
        let dcid = cid(&mut r, bytes.len())?;
        let scid = cid(&mut r, bytes.len())?;
        let token = if packet_type == PacketType::Initial {
            let len = r.varint_len(r.rest().len()).ok_or(PacketError::Truncated)?;
            let start = bytes.len() - r.rest().len();
            r.skip(len).ok_or(PacketError::Truncated)?;
            start..start + len
        } else {
            scid.end..scid.end
        };
        let (pn_offset, end) = if packet_type == PacketType::Retry {
            // A Retry has no Length: it runs to the end of the datagram.
            (bytes.len(), bytes.len())
        } else {
            let len = r.varint().ok_or(PacketError::Truncated)?;
            let pn_offset = bytes.len() - r.rest().len();
            // Checked against what follows the varint, not what preceded it (the fuzz target found that
            // off-by-the-varint's-size).
            let len = usize::try_from(len).ok().filter(|&l| l <= r.rest().len()).ok_or(PacketError::Truncated)?;
            (pn_offset, pn_offset + len)
        };
        Ok(Layout { version, packet_type, dcid, scid, token, pn_offset, end })
    }

    /// The version.
    pub fn version(&self) -> QuicVersion {
        self.layout.version
    }

    /// The packet type, decoded with the version's numbering.
    pub fn packet_type(&self) -> PacketType {
        self.layout.packet_type
    }

    /// The Destination Connection ID (for a client's first Initial, the input of the Initial keys).
    pub fn dcid(&self) -> &[u8] {
        &self.buffer.as_ref()[self.layout.dcid.clone()]
    }

    /// The Source Connection ID.
    pub fn scid(&self) -> &[u8] {
        &self.buffer.as_ref()[self.layout.scid.clone()]
    }

    /// The token (Initial only; empty otherwise).
    pub fn token(&self) -> &[u8] {
        &self.buffer.as_ref()[self.layout.token.clone()]
    }

    /// Offset of the (protected) packet number: the header up to here is the unprotected part.
    pub fn pn_offset(&self) -> usize {
        self.layout.pn_offset
    }

    /// Length of this packet, header included: the next coalesced packet, if any, starts here.
    pub fn packet_len(&self) -> usize {
        self.layout.end
    }

    /// This packet's bytes (header and protected payload).
    pub fn bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.layout.end]
    }
}

/// A connection ID with its one-byte length prefix, as a range of the packet.
fn cid(r: &mut Reader<'_>, total: usize) -> Result<Range<usize>, PacketError> {
    let len = usize::from(r.u8().ok_or(PacketError::Truncated)?);
    if len > MAX_CID_LEN {
        return Err(PacketError::CidTooLong);
    }
    let start = total - r.rest().len();
    r.skip(len).ok_or(PacketError::Truncated)?;
    Ok(start..start + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v1 Initial header with the given token and length fields, followed by `payload` bytes of zeros.
    fn initial(token: &[u8], length_field: &[u8], payload: usize) -> Vec<u8> {
        let mut p = vec![0xc3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 2, 0xaa, 0xbb];
        p.push(token.len() as u8);
        p.extend_from_slice(token);
        p.extend_from_slice(length_field);
        p.resize(p.len() + payload, 0);
        p
    }

    #[test]
    fn fields_are_located_once_and_read_without_offsets() {
        let p = initial(b"tok", &[0x40, 0x20], 0x20 + 5);
        let packet = LongPacket::new_checked(&p[..]).unwrap();
        assert_eq!(packet.version(), QuicVersion::V1);
        assert_eq!(packet.packet_type(), PacketType::Initial);
        assert_eq!(packet.dcid(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(packet.scid(), &[0xaa, 0xbb]);
        assert_eq!(packet.token(), b"tok");
        assert_eq!(packet.pn_offset(), 23);
        assert_eq!(packet.packet_len(), 23 + 0x20);
        assert_eq!(packet.bytes().len(), packet.packet_len());
    }

    #[test]
    fn length_past_the_datagram_is_truncated() {
        let p = initial(b"", &[0x44, 0xd0], 100);
        assert_eq!(LongPacket::new_checked(&p[..]).unwrap_err(), PacketError::Truncated);
    }

    #[test]
    fn length_one_past_the_end_counting_its_own_bytes_is_truncated() {
        // The remaining bytes after the Length varint are `payload`; a Length of payload + 1 or + 2 (the
        // varint's own size) once slipped through.
        for extra in 1..=2u16 {
            let p = initial(b"", &(0x4000 | (100 + extra)).to_be_bytes(), 100);
            assert_eq!(LongPacket::new_checked(&p[..]).unwrap_err(), PacketError::Truncated, "+{extra}");
        }
        let p = initial(b"", &(0x4000u16 | 100).to_be_bytes(), 100);
        assert_eq!(LongPacket::new_checked(&p[..]).unwrap().packet_len(), p.len());
    }

    #[test]
    fn huge_varint_token_length_is_truncated_not_a_panic() {
        let mut p = initial(b"", &[], 0);
        p.pop(); // replace the 1-byte token length by an 8-byte varint near 2^62
        p.extend_from_slice(&[0xff; 8]);
        p.resize(1200, 0);
        assert_eq!(LongPacket::new_checked(&p[..]).unwrap_err(), PacketError::Truncated);
    }

    #[test]
    fn connection_id_longer_than_twenty_bytes_is_rejected() {
        let mut p = vec![0xc3, 0, 0, 0, 1, 21];
        p.resize(1200, 0);
        assert_eq!(LongPacket::new_checked(&p[..]).unwrap_err(), PacketError::CidTooLong);
    }

    #[test]
    fn unknown_version_and_short_header_are_named() {
        assert_eq!(LongPacket::new_checked(&[0xc3, 0, 0, 0, 7][..]).unwrap_err(), PacketError::UnknownVersion(7));
        assert_eq!(LongPacket::new_checked(&[0x43, 0, 0, 0, 1][..]).unwrap_err(), PacketError::NotLongHeader);
        assert_eq!(LongPacket::new_checked(&[0xc3][..]).unwrap_err(), PacketError::NotLongHeader);
    }

    #[test]
    fn v2_initial_type_bits_are_read_as_initial() {
        let mut p = initial(b"", &[0x05], 5);
        p[0] = 0xd3;
        p[1..5].copy_from_slice(&0x6b33_43cfu32.to_be_bytes());
        let packet = LongPacket::new_checked(&p[..]).unwrap();
        assert_eq!((packet.version(), packet.packet_type()), (QuicVersion::V2, PacketType::Initial));
    }
}
