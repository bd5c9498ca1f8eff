//! The QUIC versions whose Initial packets we can decrypt, and how each encodes long-header packet types.

use std::fmt;

/// A QUIC version with known Initial protection.
///
/// Drafts 29 to 32 share one initial salt; drafts 33 and 34 already used version 1's salt and labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuicVersion {
    /// Version 1, RFC 9000 (`0x00000001`).
    V1,
    /// Version 2, RFC 9369 (`0x6b3343cf`).
    V2,
    /// IETF draft 29 to 34 (`0xff00001d` to `0xff000022`); the number is the draft.
    Draft(u8),
}

/// Long-header packet types (RFC 9000 section 17.2, RFC 9369 section 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// Initial: carries the ClientHello.
    Initial,
    /// 0-RTT.
    ZeroRtt,
    /// Handshake.
    Handshake,
    /// Retry: has no Length field and ends the datagram.
    Retry,
}

/// The Initial key schedules: which initial salt, and which labels derive the keys from the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySchedule {
    /// Version 1 and drafts 33 and 34: RFC 9001 section 5.2 salt, `quic key`/`quic iv`/`quic hp`.
    V1,
    /// Drafts 29 to 32: draft-ietf-quic-tls-29 section 5.2 salt, version 1's labels.
    Draft29,
    /// Version 2: RFC 9369 section 3.3.1 salt, `quicv2 key`/`quicv2 iv`/`quicv2 hp` (section 3.3.2).
    V2,
}

const WIRE_V1: u32 = 0x0000_0001;
const WIRE_V2: u32 = 0x6b33_43cf;
const WIRE_DRAFT_PREFIX: u32 = 0xff00_0000;
const FIRST_DRAFT: u8 = 29;
/// Drafts from here on use version 1's initial salt.
const FIRST_DRAFT_WITH_V1_SALT: u8 = 33;
const LAST_DRAFT: u8 = 34;

impl QuicVersion {
    /// The version a long header's version field names, if we can decrypt its Initials.
    #[inline]
    pub const fn from_wire(version: u32) -> Option<Self> {
        match version {
            WIRE_V1 => Some(Self::V1),
            WIRE_V2 => Some(Self::V2),
            v if v & 0xffff_ff00 == WIRE_DRAFT_PREFIX => {
                let draft = (v & 0xff) as u8;
                if draft >= FIRST_DRAFT && draft <= LAST_DRAFT { Some(Self::Draft(draft)) } else { None }
            }
            _ => None,
        }
    }

    /// The version field's value.
    pub const fn wire(self) -> u32 {
        match self {
            Self::V1 => WIRE_V1,
            Self::V2 => WIRE_V2,
            Self::Draft(n) => WIRE_DRAFT_PREFIX | n as u32,
        }
    }

    /// The two type bits (bits 5 and 4 of the first byte) of an Initial packet: v2 renumbered the types so that
    /// middleboxes ossified on v1's numbering do not misread v2 packets.
    #[inline]
    pub const fn initial_type_bits(self) -> u8 {
        match self {
            Self::V2 => 0b01,
            Self::V1 | Self::Draft(_) => 0b00,
        }
    }

    /// The packet type that type bits `bits` (0 to 3) denote in this version.
    pub const fn packet_type(self, bits: u8) -> PacketType {
        let v1_numbering = match self {
            // RFC 9369 section 3.2: Initial 0b01, 0-RTT 0b10, Handshake 0b11, Retry 0b00.
            Self::V2 => (bits + 3) & 0b11,
            Self::V1 | Self::Draft(_) => bits & 0b11,
        };
        match v1_numbering {
            0 => PacketType::Initial,
            1 => PacketType::ZeroRtt,
            2 => PacketType::Handshake,
            _ => PacketType::Retry,
        }
    }

    /// The initial salt and labels this version's Initial packets are protected with.
    pub(crate) const fn key_schedule(self) -> KeySchedule {
        match self {
            Self::V1 => KeySchedule::V1,
            Self::V2 => KeySchedule::V2,
            Self::Draft(n) if n >= FIRST_DRAFT_WITH_V1_SALT => KeySchedule::V1,
            Self::Draft(_) => KeySchedule::Draft29,
        }
    }

    /// The rustls key schedule for this version.
    pub(crate) fn rustls(self) -> rustls::quic::Version {
        match self.key_schedule() {
            KeySchedule::V1 => rustls::quic::Version::V1,
            KeySchedule::V2 => rustls::quic::Version::V2,
            KeySchedule::Draft29 => rustls::quic::Version::V1Draft,
        }
    }
}

impl fmt::Display for QuicVersion {
    /// `v1`, `v2` or `draft-29`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V1 => f.write_str("v1"),
            Self::V2 => f.write_str("v2"),
            Self::Draft(n) => write!(f, "draft-{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_versions_round_trip_and_others_are_unknown() {
        for v in [QuicVersion::V1, QuicVersion::V2, QuicVersion::Draft(29), QuicVersion::Draft(34)] {
            assert_eq!(QuicVersion::from_wire(v.wire()), Some(v));
        }
        for unknown in [0, 2, 0xff00_001c, 0xff00_0023, 0x709a_50c4, 0x5130_3530, 0x1a2a_3a4a] {
            assert_eq!(QuicVersion::from_wire(unknown), None, "{unknown:#x}");
        }
    }

    #[test]
    fn v2_renumbers_long_header_types() {
        use PacketType::*;
        let v2: Vec<_> = (0..4).map(|b| QuicVersion::V2.packet_type(b)).collect();
        assert_eq!(v2, [Retry, Initial, ZeroRtt, Handshake]);
        let v1: Vec<_> = (0..4).map(|b| QuicVersion::V1.packet_type(b)).collect();
        assert_eq!(v1, [Initial, ZeroRtt, Handshake, Retry]);
        assert_eq!(QuicVersion::V2.packet_type(QuicVersion::V2.initial_type_bits()), Initial);
    }

    #[test]
    fn version_names_read_like_tshark() {
        assert_eq!(QuicVersion::Draft(29).to_string(), "draft-29");
        assert_eq!(QuicVersion::V2.to_string(), "v2");
    }
}
