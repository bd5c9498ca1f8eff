//! Initial packet protection (RFC 9001 section 5, RFC 9369 section 3.3), client to server only: keys from the
//! client's Destination Connection ID ([`ClientKeys`]), header protection removed, payload opened with
//! AES-128-GCM; with ring, the provider rustls is built with here.
//!
//! The AEAD tag is checked although Initial keys are public (anyone who sees the DCID can forge a packet): it is
//! what tells a QUIC Initial from other datagrams that pass the pre-check, and it keeps the outcomes exactly
//! those of a QUIC server, which drops what does not authenticate.

use ring::aead::{Aad, NONCE_LEN, Nonce};

use super::{
    packet::{LongPacket, MAX_CID_LEN},
    schedule::ClientKeys,
    version::QuicVersion,
};

/// RFC 9001 section 5.4.2: the header-protection sample starts 4 bytes after the packet number offset, as if
/// the packet number were 4 bytes long, and is 16 bytes for AES.
pub(crate) const MAX_PN_LEN: usize = 4;
pub(crate) const SAMPLE_LEN: usize = 16;
/// RFC 9001 section 5.4.1: in a long header, the low four bits of the first byte (reserved bits and packet
/// number length) are masked.
const LONG_HEADER_MASKED_BITS: u8 = 0x0f;
/// The packet number length minus one, in the first byte.
const PN_LEN_BITS: u8 = 0b11;
/// RFC 9001 section 5.3: the packet number is XORed into the IV's last 8 bytes.
const PN_IN_NONCE: usize = NONCE_LEN - size_of::<u64>();

/// Why a packet could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The packet is too short to hold a header-protection sample.
    #[error("packet too short for a header protection sample")]
    TooShort,
    /// Authentication failed: wrong keys (not a client Initial, or another version's salt) or altered bytes.
    #[error("AEAD authentication failed")]
    Decrypt,
}

/// The keys a client protects its Initial packets with, for one version and Destination Connection ID.
pub struct InitialKeys {
    version: QuicVersion,
    dcid: [u8; MAX_CID_LEN],
    dcid_len: usize,
    keys: ClientKeys,
}

impl std::fmt::Debug for InitialKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialKeys").field("version", &self.version).field("dcid", &self.dcid()).finish()
    }
}

impl InitialKeys {
    /// Derives the client's Initial keys for `version` from its Destination Connection ID (at most
    /// [`MAX_CID_LEN`] bytes: [`LongPacket`] enforces it; longer input is cut there).
    #[inline(always)]
    pub fn client(version: QuicVersion, dcid: &[u8]) -> Self {
        let dcid = &dcid[..dcid.len().min(MAX_CID_LEN)];
        let mut stored = [0; MAX_CID_LEN];
        stored[..dcid.len()].copy_from_slice(dcid);
        Self { version, dcid: stored, dcid_len: dcid.len(), keys: ClientKeys::derive(version, dcid) }
    }

    /// The Destination Connection ID the keys were derived from.
    pub fn dcid(&self) -> &[u8] {
        &self.dcid[..self.dcid_len]
    }

    /// Whether these keys open Initials of `version` sent to `dcid`.
    pub fn matches(&self, version: QuicVersion, dcid: &[u8]) -> bool {
        self.version == version && self.dcid() == dcid
    }

    /// Copies `packet` into `scratch` (the caller's datagram is never modified: it may still be forwarded),
    /// removes header protection and decrypts; returns the plaintext frames.
    pub fn open<'s>(&self, packet: &LongPacket<&[u8]>, scratch: &'s mut Vec<u8>) -> Result<&'s [u8], OpenError> {
        self.open_at(packet.bytes(), packet.pn_offset(), scratch)
    }

    /// [`Self::open`] for a packet whose layout is already known: `bytes` is exactly one packet and its packet
    /// number starts at `pn_offset`.
    pub fn open_at<'s>(&self, bytes: &[u8], pn_offset: usize, scratch: &'s mut Vec<u8>) -> Result<&'s [u8], OpenError> {
        let sample_at = pn_offset + MAX_PN_LEN;
        let sample = bytes.get(sample_at..sample_at + SAMPLE_LEN).ok_or(OpenError::TooShort)?;
        // Cannot fail: the sample has the length AES asks for.
        let mask = self.keys.header.new_mask(sample).map_err(|_| OpenError::TooShort)?;
        scratch.clear();
        scratch.extend_from_slice(bytes);
        // In bounds: the sample lies past the packet number field.
        let (header, rest) = scratch.split_at_mut(pn_offset);
        let Some(first) = header.first_mut() else { return Err(OpenError::TooShort) };
        *first ^= mask[0] & LONG_HEADER_MASKED_BITS;
        let pn_len = usize::from(*first & PN_LEN_BITS) + 1;
        // Client Initials start at packet number 0 and a sniff session sees only the first few, so the
        // truncated number is the full one (RFC 9000 section 17.1 with no packet acknowledged yet).
        let mut pn = 0u64;
        for (byte, m) in rest[..pn_len].iter_mut().zip(&mask[1..]) {
            *byte ^= m;
            pn = (pn << 8) | u64::from(*byte);
        }
        let (header, payload) = scratch.split_at_mut(pn_offset + pn_len);
        match self.keys.packet.open_in_place(self.nonce(pn), Aad::from(&*header), payload) {
            Ok(plain) => Ok(plain),
            Err(_) => Err(OpenError::Decrypt),
        }
    }

    /// RFC 9001 section 5.3: the IV with the packet number XORed into its end.
    fn nonce(&self, pn: u64) -> Nonce {
        let mut nonce = self.keys.iv;
        for (byte, p) in nonce[PN_IN_NONCE..].iter_mut().zip(pn.to_be_bytes()) {
            *byte ^= p;
        }
        Nonce::assume_unique_for_key(nonce)
    }
}
