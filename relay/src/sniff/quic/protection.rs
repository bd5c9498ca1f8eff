//! Initial packet protection (RFC 9001 section 5, RFC 9369 section 3.3) through rustls: keys from the client's
//! Destination Connection ID, header protection removed, payload opened with AES-128-GCM.

use std::sync::LazyLock;

use rustls::{
    Side,
    crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    quic::{DirectionalKeys, Suite},
};

use super::{
    packet::{LongPacket, MAX_CID_LEN},
    version::QuicVersion,
};

/// RFC 9001 section 5.4.2: the header-protection sample starts 4 bytes after the packet number offset, as if
/// the packet number were 4 bytes long, and is 16 bytes for AES.
const MAX_PN_LEN: usize = 4;
const SAMPLE_LEN: usize = 16;

/// RFC 9001 section 5.2: Initial packets always use TLS_AES_128_GCM_SHA256. ring's suite always carries its
/// QUIC algorithm (`initial_suite_is_available` pins this), so the `expect` cannot fire.
static INITIAL_SUITE: LazyLock<Suite> = LazyLock::new(|| {
    TLS13_AES_128_GCM_SHA256
        .tls13()
        .and_then(|suite| suite.quic_suite())
        .expect("ring's TLS 1.3 AES-128-GCM supports QUIC")
});

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
    keys: DirectionalKeys,
}

impl std::fmt::Debug for InitialKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialKeys").field("version", &self.version).field("dcid", &self.dcid()).finish()
    }
}

impl InitialKeys {
    /// Derives the client's Initial keys for `version` from its Destination Connection ID (at most
    /// [`MAX_CID_LEN`] bytes: [`LongPacket`] enforces it; longer input is cut there).
    pub fn client(version: QuicVersion, dcid: &[u8]) -> Self {
        Self::derive(version, dcid, Side::Server, |keys| keys.remote)
    }

    /// The same keys, oriented for sealing: what a client uses to build packets (tests, fuzz seeds).
    pub(crate) fn client_sealing(version: QuicVersion, dcid: &[u8]) -> Self {
        Self::derive(version, dcid, Side::Client, |keys| keys.local)
    }

    fn derive(
        version: QuicVersion,
        dcid: &[u8],
        side: Side,
        pick: impl FnOnce(rustls::quic::Keys) -> DirectionalKeys,
    ) -> Self {
        let dcid = &dcid[..dcid.len().min(MAX_CID_LEN)];
        let mut stored = [0; MAX_CID_LEN];
        stored[..dcid.len()].copy_from_slice(dcid);
        let keys = pick(INITIAL_SUITE.keys(dcid, side, version.rustls()));
        Self { version, dcid: stored, dcid_len: dcid.len(), keys }
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
    /// number starts at `pn_offset`. The decrypt floor of the benchmarks calls this directly.
    pub fn open_at<'s>(&self, bytes: &[u8], pn_offset: usize, scratch: &'s mut Vec<u8>) -> Result<&'s [u8], OpenError> {
        let sample_at = pn_offset + MAX_PN_LEN;
        let sample: [u8; SAMPLE_LEN] =
            bytes.get(sample_at..sample_at + SAMPLE_LEN).and_then(|s| s.try_into().ok()).ok_or(OpenError::TooShort)?;
        scratch.clear();
        scratch.extend_from_slice(bytes);
        let (header, rest) = scratch.split_at_mut(pn_offset);
        let (Some(first), Some(pn_field)) = (header.first_mut(), rest.get_mut(..MAX_PN_LEN)) else {
            return Err(OpenError::TooShort);
        };
        self.keys.header.decrypt_in_place(&sample, first, pn_field).map_err(|_| OpenError::Decrypt)?;
        let pn_len = usize::from(*first & 0b11) + 1;
        // Client Initials start at packet number 0 and a sniff session sees only the first few, so the
        // truncated number is the full one (RFC 9000 section 17.1 with no packet acknowledged yet).
        let pn = pn_field[..pn_len].iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let (header, payload) = scratch.split_at_mut(pn_offset + pn_len);
        self.keys.packet.decrypt_in_place(pn, header, payload).map_err(|_| OpenError::Decrypt)
    }

    /// Protects `packet` in place: `packet[..pn_offset + pn_len]` is the unprotected header whose first byte
    /// already holds the packet-number length, `pn_len` bytes of packet number follow, then the plaintext
    /// payload with 16 spare bytes at its end for the tag. For building test packets.
    pub(crate) fn seal(&self, packet: &mut [u8], pn_offset: usize, pn: u64) -> Option<()> {
        let pn_len = usize::from(*packet.first()? & 0b11) + 1;
        let tag_len = self.keys.packet.tag_len();
        let body_end = packet.len().checked_sub(tag_len)?;
        let (header, payload) = packet.split_at_mut(pn_offset + pn_len);
        let tag = self.keys.packet.encrypt_in_place(pn, header, &mut payload[..body_end - pn_offset - pn_len]).ok()?;
        packet[body_end..].copy_from_slice(tag.as_ref());
        let sample_at = pn_offset + MAX_PN_LEN;
        let sample: [u8; SAMPLE_LEN] = packet.get(sample_at..sample_at + SAMPLE_LEN)?.try_into().ok()?;
        let (header, rest) = packet.split_at_mut(pn_offset);
        self.keys.header.encrypt_in_place(&sample, header.first_mut()?, &mut rest[..pn_len]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_suite_is_available() {
        assert_eq!(INITIAL_SUITE.suite.common.suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    }
}
