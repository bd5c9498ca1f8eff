//! The client's Initial keys (RFC 9001 section 5.2, RFC 9369 section 3.3), derived for the client direction
//! only.
//!
//! rustls' `quic::Keys::initial` serves a QUIC endpoint: each call keys HMAC with the version's salt, expands
//! the client and the server secret, from each a packet key, IV and header-protection key, and sets up two
//! AES-GCM and two AES keys. A sniffer reads only what the client sends, so this derives the client secret and
//! its three keys alone, with the salt's HMAC key set up once per version: per DCID, five one-block HMACs, two
//! HMAC key setups, one AES-GCM and one AES key setup.
//!
//! Which library does what, and why:
//! - HKDF is HMAC-SHA256 from RustCrypto's `hmac` and `sha2` (SHA-NI where the CPU has it). ring's HMAC, the
//!   one rustls uses, spends about 150 ns per short HMAC besides its two SHA-256 blocks (context copies,
//!   finishing, output formatting): this schedule's HKDF took 1.44-1.54 us with ring and 0.80-0.83 us with these
//!   crates (same run, interleaved, on the loaded 2-core dev machine), and with ring's the sniffer stayed near
//!   0.6x the decrypt floor, about issue 6's 2 us bound.
//! - AES-128-GCM and the header-protection AES are ring's, as in rustls. rustls 0.23 cannot build client-only
//!   keys itself: it makes QUIC keys only from 32-byte `AeadKey`s (shortening one is crate-private), which
//!   AES-128 refuses.
//!
//! The RFC 9001 and RFC 9369 vectors, and rustls' `Keys::initial` for every version and DCID length
//! (`tests/quic_vectors.rs`), pin it down.

use std::sync::LazyLock;

use hmac::{Hmac, KeyInit, Mac};
use ring::aead::{self, LessSafeKey, NONCE_LEN, UnboundKey, quic::HeaderProtectionKey};
use sha2::Sha256;

use super::version::{KeySchedule, QuicVersion};

/// A keyed HMAC-SHA256: both padded key blocks are already absorbed, so a clone computes the HMAC of a short
/// message in two SHA-256 blocks.
type HmacSha256 = Hmac<Sha256>;

/// RFC 9001 section 5.2; also drafts 33 and 34.
const V1_SALT: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f,
    0x0a,
];
/// draft-ietf-quic-tls-29 section 5.2, unchanged up to draft 32.
const DRAFT29_SALT: [u8; 20] = [
    0xaf, 0xbf, 0xec, 0x28, 0x99, 0x93, 0xd2, 0x4c, 0x9e, 0x97, 0x86, 0xf1, 0x9c, 0x61, 0x11, 0xe0, 0x43, 0x90, 0xa8,
    0x99,
];
/// RFC 9369 section 3.3.1.
const V2_SALT: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9, 0xbd, 0x2e,
    0xd9,
];

/// The salts as HMAC keys (HKDF-Extract is HMAC keyed with the salt). A salt is fixed per version, so its key
/// setup is done once per process, not per flow.
static V1: LazyLock<HmacSha256> = LazyLock::new(|| hmac_key(&V1_SALT));
static DRAFT29: LazyLock<HmacSha256> = LazyLock::new(|| hmac_key(&DRAFT29_SALT));
static V2: LazyLock<HmacSha256> = LazyLock::new(|| hmac_key(&V2_SALT));

/// SHA-256 output: the length of the client Initial secret.
const SECRET_LEN: usize = 32;
/// AES-128 (RFC 9001 section 5.2: Initial packets use AEAD_AES_128_GCM): packet and header-protection keys.
const KEY_LEN: usize = 16;
/// RFC 8446 section 7.1: every HKDF-Expand-Label label starts with this.
const LABEL_PREFIX: &[u8] = b"tls13 ";
/// The longest label used here, `quicv2 key`.
const MAX_LABEL: usize = 10;
/// Output length (2 bytes), label length (1), prefixed label, context length (1; the context is empty).
const MAX_INFO: usize = 2 + 1 + LABEL_PREFIX.len() + MAX_LABEL + 1;

/// The `info` input of HKDF-Expand-Label (RFC 8446 section 7.1) with an empty context, built at compile time.
struct Label {
    info: [u8; MAX_INFO],
    len: usize,
}

impl Label {
    /// The info for `label` and an output of `out_len` bytes, at most one SHA-256 block ([`expand_label`]
    /// computes only the first). Checked at compile time: every `Label` is a `static`.
    const fn new(label: &[u8], out_len: usize) -> Self {
        assert!(label.len() <= MAX_LABEL && out_len <= SECRET_LEN);
        let mut info = [0; MAX_INFO];
        let [hi, lo] = (out_len as u16).to_be_bytes();
        info[0] = hi;
        info[1] = lo;
        info[2] = (LABEL_PREFIX.len() + label.len()) as u8;
        let mut at = 3;
        let mut i = 0;
        while i < LABEL_PREFIX.len() {
            info[at] = LABEL_PREFIX[i];
            at += 1;
            i += 1;
        }
        i = 0;
        while i < label.len() {
            info[at] = label[i];
            at += 1;
            i += 1;
        }
        // info[at] = 0: the empty context's length.
        Self { info, len: at + 1 }
    }

    fn info(&self) -> &[u8] {
        &self.info[..self.len]
    }
}

/// RFC 9001 section 5.2: `client_initial_secret = HKDF-Expand-Label(initial_secret, "client in", "", 32)`.
static CLIENT_IN: Label = Label::new(b"client in", SECRET_LEN);

/// The labels that derive the packet key, IV and header-protection key from the client secret.
struct Labels {
    key: Label,
    iv: Label,
    hp: Label,
}

/// RFC 9001 section 5.1 (and the drafts).
static V1_LABELS: Labels = Labels {
    key: Label::new(b"quic key", KEY_LEN),
    iv: Label::new(b"quic iv", NONCE_LEN),
    hp: Label::new(b"quic hp", KEY_LEN),
};
/// RFC 9369 section 3.3.2.
static V2_LABELS: Labels = Labels {
    key: Label::new(b"quicv2 key", KEY_LEN),
    iv: Label::new(b"quicv2 iv", NONCE_LEN),
    hp: Label::new(b"quicv2 hp", KEY_LEN),
};

/// What protects a client's Initial packets: AES-128-GCM with its IV, and the AES-128 header-protection key.
pub(super) struct ClientKeys {
    pub(super) packet: LessSafeKey,
    pub(super) iv: [u8; NONCE_LEN],
    pub(super) header: HeaderProtectionKey,
}

impl ClientKeys {
    /// Derives the keys of `version`'s Initials sent to `dcid`.
    pub(super) fn derive(version: QuicVersion, dcid: &[u8]) -> Self {
        let (salt, labels): (&HmacSha256, _) = match version.key_schedule() {
            KeySchedule::V1 => (&V1, &V1_LABELS),
            KeySchedule::Draft29 => (&DRAFT29, &V1_LABELS),
            KeySchedule::V2 => (&V2, &V2_LABELS),
        };
        // initial_secret = HKDF-Extract(salt, DCID); client_initial_secret = HKDF-Expand-Label(initial_secret,
        // "client in", "", 32); the keys are HKDF-Expand-Label(client_initial_secret, label, "", length).
        let initial_secret = hmac(salt, &[dcid]);
        let client = hmac_key(&expand_label(&hmac_key(&initial_secret), &CLIENT_IN));
        let key = expand_label(&client, &labels.key);
        let hp = expand_label(&client, &labels.hp);
        let mut iv = [0; NONCE_LEN];
        iv.copy_from_slice(&expand_label(&client, &labels.iv)[..NONCE_LEN]);
        // The `expect`s cannot fire: the key lengths are the algorithms' (`label_lengths_match_the_algorithms`).
        let packet = UnboundKey::new(&aead::AES_128_GCM, &key[..KEY_LEN]).expect("AES-128 key length");
        let header = HeaderProtectionKey::new(&aead::quic::AES_128, &hp[..KEY_LEN]).expect("AES-128 key length");
        Self { packet: LessSafeKey::new(packet), iv, header }
    }
}

/// An HMAC-SHA256 key. Never fails: HMAC takes keys of any length.
fn hmac_key(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// HMAC-SHA256 under `key` of the concatenated `parts`.
fn hmac(key: &HmacSha256, parts: &[&[u8]]) -> [u8; SECRET_LEN] {
    let mut mac = key.clone();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// HKDF-Expand-Label (RFC 8446 section 7.1) with an empty context, for outputs of at most one SHA-256 block:
/// HKDF-Expand's first block `T(1) = HMAC(PRK, info || 0x01)` (RFC 5869 section 2.3), of which the caller
/// takes the label's length.
fn expand_label(prk: &HmacSha256, label: &Label) -> [u8; SECRET_LEN] {
    const FIRST_BLOCK: u8 = 1;
    hmac(prk, &[label.info(), &[FIRST_BLOCK]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_label_info_is_laid_out_per_rfc8446() {
        assert_eq!(CLIENT_IN.info(), b"\x00\x20\x0ftls13 client in\x00");
        assert_eq!(V2_LABELS.key.info(), b"\x00\x10\x10tls13 quicv2 key\x00");
        assert_eq!(V1_LABELS.iv.info(), b"\x00\x0c\x0dtls13 quic iv\x00");
    }

    #[test]
    fn label_lengths_match_the_algorithms() {
        assert_eq!(aead::AES_128_GCM.key_len(), KEY_LEN);
        assert_eq!(aead::quic::AES_128.key_len(), KEY_LEN);
        assert_eq!(<Sha256 as sha2::digest::OutputSizeUser>::output_size(), SECRET_LEN);
    }
}
