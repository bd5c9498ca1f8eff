//! Initial packet protection done wholly by rustls, as a QUIC endpoint does it: `quic::Keys::initial` derives
//! both directions' keys from the client's Destination Connection ID, and its `DirectionalKeys` remove header
//! protection and open (or seal) the payload.
//!
//! Not used on the datapath ([`super::InitialKeys`] derives the client's keys only). It is the decrypt floor of
//! the benchmarks, as issue 6 defines it ("rustls `Keys::initial` and open"), the sealer of the packets
//! [`super::build`] makes, and the oracle the tests hold the sniffer's own key schedule to.

use std::sync::LazyLock;

use rustls::{
    Side,
    crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    quic::{DirectionalKeys, Suite},
};

use super::{
    protection::{MAX_PN_LEN, OpenError, SAMPLE_LEN},
    version::QuicVersion,
};

/// RFC 9001 section 5.2: Initial packets always use TLS_AES_128_GCM_SHA256. ring's suite always carries its
/// QUIC algorithm (`initial_suite_is_available` pins this), so the `expect` cannot fire.
static INITIAL_SUITE: LazyLock<Suite> = LazyLock::new(|| {
    TLS13_AES_128_GCM_SHA256
        .tls13()
        .and_then(|suite| suite.quic_suite())
        .expect("ring's TLS 1.3 AES-128-GCM supports QUIC")
});

/// The keys of one direction of a connection's Initial packets, derived and applied by rustls.
pub struct RustlsKeys {
    keys: DirectionalKeys,
}

impl std::fmt::Debug for RustlsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RustlsKeys").finish_non_exhaustive()
    }
}

impl RustlsKeys {
    /// The keys that open a client's Initials of `version` sent to `dcid`: `Keys::initial` as a server derives
    /// them (both directions), keeping the remote one.
    pub fn client(version: QuicVersion, dcid: &[u8]) -> Self {
        Self { keys: INITIAL_SUITE.keys(dcid, Side::Server, version.rustls()).remote }
    }

    /// The same keys, oriented for sealing: what a client builds its Initials with.
    pub fn client_sealing(version: QuicVersion, dcid: &[u8]) -> Self {
        Self { keys: INITIAL_SUITE.keys(dcid, Side::Client, version.rustls()).local }
    }

    /// Copies the packet `bytes` (exactly one packet, its packet number at `pn_offset`) into `scratch`, removes
    /// header protection and decrypts; returns the plaintext frames.
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
    /// payload with 16 spare bytes at its end for the tag. `None` if `packet` is too short for that.
    pub fn seal(&self, packet: &mut [u8], pn_offset: usize, pn: u64) -> Option<()> {
        let pn_len = usize::from(*packet.first()? & 0b11) + 1;
        let tag_len = self.keys.packet.tag_len();
        let body_end = packet.len().checked_sub(tag_len)?;
        let body_len = body_end.checked_sub(pn_offset + pn_len)?;
        let (header, payload) = packet.split_at_mut(pn_offset + pn_len);
        let tag = self.keys.packet.encrypt_in_place(pn, header, &mut payload[..body_len]).ok()?;
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
