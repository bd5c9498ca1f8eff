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
//! - HKDF is HMAC-SHA256 over RustCrypto's SHA-256 compression function (`sha2::block_api::compress256`, SHA-NI
//!   where the CPU has it). Every message here (a DCID of at most 20 bytes, an HKDF-Expand-Label info of at most
//!   21) fits one padded block, so a keyed HMAC is two compressions from the two pad states and nothing else:
//!   14 compressions per DCID. ring's HMAC, the one rustls uses, spends about 150 ns per short HMAC besides its
//!   two blocks (context copies, finishing, output formatting): this schedule's HKDF took 1.44-1.54 us with ring
//!   and 0.80-0.83 us with the `hmac` crate (same run, interleaved, on the loaded 2-core dev machine); the
//!   `hmac` crate in turn spent a third of its time in buffering and finalising, which the fixed-size padding
//!   below does at compile time.
//! - AES-128-GCM and the header-protection AES are ring's, as in rustls. rustls 0.23 cannot build client-only
//!   keys itself: it makes QUIC keys only from 32-byte `AeadKey`s (shortening one is crate-private), which
//!   AES-128 refuses.
//!
//! The RFC 9001 and RFC 9369 vectors, and rustls' `Keys::initial` for every version and DCID length
//! (`tests/quic_vectors.rs`), pin it down.

use std::sync::LazyLock;

use ring::aead::{self, LessSafeKey, NONCE_LEN, UnboundKey, quic::HeaderProtectionKey};
use sha2::block_api::compress256;

use super::version::{KeySchedule, QuicVersion};

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
static V1: LazyLock<HmacSha256> = LazyLock::new(|| HmacSha256::new(&V1_SALT));
static DRAFT29: LazyLock<HmacSha256> = LazyLock::new(|| HmacSha256::new(&DRAFT29_SALT));
static V2: LazyLock<HmacSha256> = LazyLock::new(|| HmacSha256::new(&V2_SALT));

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

/// The `info` input of HKDF-Expand-Label (RFC 8446 section 7.1) with an empty context, and the one SHA-256 block
/// HKDF-Expand hashes for it (`info || 0x01`, padded), both built at compile time.
struct Label {
    block: [u8; BLOCK],
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
        let len = at + 1;
        // HKDF-Expand's first block `T(1) = HMAC(PRK, info || 0x01)` (RFC 5869 section 2.3).
        let mut message = [0; MAX_INFO + 1];
        i = 0;
        while i < len {
            message[i] = info[i];
            i += 1;
        }
        message[len] = FIRST_BLOCK;
        Self { block: last_block(&message, len + 1) }
    }

    /// The info, read back from the block (its length field counts key block, info and counter byte).
    #[cfg(test)]
    fn info(&self) -> &[u8] {
        let bits = u64::from_be_bytes(self.block[BLOCK - LEN_FIELD..].try_into().unwrap());
        let len = (bits / 8) as usize - BLOCK - 1;
        assert_eq!(self.block[len], FIRST_BLOCK);
        assert_eq!(self.block[len + 1], 0x80);
        &self.block[..len]
    }
}

/// RFC 9001 section 5.2: `client_initial_secret = HKDF-Expand-Label(initial_secret, "client in", "", 32)`.
static CLIENT_IN: Label = Label::new(b"client in", SECRET_LEN);

/// HKDF-Expand (RFC 5869 section 2.3): the counter byte of the first output block.
const FIRST_BLOCK: u8 = 1;
/// SHA-256's block size.
const BLOCK: usize = 64;
/// SHA-256's initial hash value (FIPS 180-4 section 5.3.3).
const SHA256_IV: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
/// RFC 2104: the inner and outer pad bytes.
const IPAD: u8 = 0x36;
const OPAD: u8 = 0x5c;
/// FIPS 180-4 section 5.1.1: a message is followed by a 1 bit, zeros, and its length in bits as 8 bytes.
const LEN_FIELD: usize = 8;

/// HMAC-SHA256 with its key absorbed (RFC 2104): the SHA-256 states after the key XOR ipad and the key XOR opad
/// blocks. An HMAC of a message of at most 55 bytes is then one inner and one outer compression.
#[derive(Clone)]
struct HmacSha256 {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl HmacSha256 {
    /// The state after one block: the key (padded with zeros) XOR `pad`. Keys longer than a block would first be
    /// hashed (RFC 2104); every key here is a 20-byte salt or a 32-byte secret, which the types guarantee.
    fn pad_state<const N: usize>(key: &[u8; N], pad: u8) -> [u32; 8] {
        const { assert!(N <= BLOCK) };
        let mut block = [pad; BLOCK];
        for (b, k) in block.iter_mut().zip(key) {
            *b ^= k;
        }
        let mut state = SHA256_IV;
        compress256(&mut state, &[block]);
        state
    }

    fn new<const N: usize>(key: &[u8; N]) -> Self {
        Self { inner: Self::pad_state(key, IPAD), outer: Self::pad_state(key, OPAD) }
    }

    /// The HMAC of a message given as its final padded block ([`last_block`]).
    fn mac_block(&self, block: &[u8; BLOCK]) -> [u8; SECRET_LEN] {
        let mut state = self.inner;
        compress256(&mut state, std::slice::from_ref(block));
        let inner = digest(state);
        let mut state = self.outer;
        compress256(&mut state, &[last_block(&inner, SECRET_LEN)]);
        digest(state)
    }

    /// The HMAC of `message`, at most one block less its padding (55 bytes; longer is cut): the tests use it.
    #[cfg(test)]
    fn mac(&self, message: &[u8]) -> [u8; SECRET_LEN] {
        let mut padded = [0; BLOCK];
        let len = message.len().min(BLOCK);
        padded[..len].copy_from_slice(&message[..len]);
        self.mac_block(&last_block(&padded, len))
    }
}

/// The longest DCID a client may send (RFC 9000 section 17.2); [`super::packet::LongPacket`] refuses longer.
const MAX_DCID: usize = 20;
const _: () = assert!(MAX_DCID + 1 + LEN_FIELD <= BLOCK && MAX_INFO + 1 + 1 + LEN_FIELD <= BLOCK);

/// The first `len` bytes of `message` as the one final block of a hash that absorbed one key block before
/// them: the bytes, 0x80, zeros, and the bit length of key block plus message. Callers pass at most 55 bytes;
/// longer input is cut (no caller can, see the assertion above). A `const fn`, so that every [`Label`]'s
/// block is built at compile time; a byte loop, which at run time (a DCID, an inner digest) costs less than a
/// call to `memcpy`.
const fn last_block<const N: usize>(message: &[u8; N], len: usize) -> [u8; BLOCK] {
    let mut len = if len < N { len } else { N };
    if len > BLOCK - 1 - LEN_FIELD {
        len = BLOCK - 1 - LEN_FIELD;
    }
    let mut block = [0; BLOCK];
    let mut i = 0;
    while i < len {
        block[i] = message[i];
        i += 1;
    }
    block[len] = 0x80;
    let bits = (((BLOCK + len) as u64) * 8).to_be_bytes();
    i = 0;
    while i < LEN_FIELD {
        block[BLOCK - LEN_FIELD + i] = bits[i];
        i += 1;
    }
    block
}

/// A SHA-256 state as its 32-byte digest (big-endian words).
fn digest(state: [u32; 8]) -> [u8; SECRET_LEN] {
    let mut out = [0; SECRET_LEN];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

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
    #[inline(always)]
    pub(super) fn derive(version: QuicVersion, dcid: &[u8]) -> Self {
        let (salt, labels): (&HmacSha256, _) = match version.key_schedule() {
            KeySchedule::V1 => (&V1, &V1_LABELS),
            KeySchedule::Draft29 => (&DRAFT29, &V1_LABELS),
            KeySchedule::V2 => (&V2, &V2_LABELS),
        };
        // initial_secret = HKDF-Extract(salt, DCID); client_initial_secret = HKDF-Expand-Label(initial_secret,
        // "client in", "", 32); the keys are HKDF-Expand-Label(client_initial_secret, label, "", length).
        let mut padded = [0; MAX_DCID];
        let len = dcid.len().min(MAX_DCID);
        padded[..len].copy_from_slice(&dcid[..len]);
        let initial_secret = salt.mac_block(&last_block(&padded, len));
        let client = HmacSha256::new(&expand_label(&HmacSha256::new(&initial_secret), &CLIENT_IN));
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

/// HKDF-Expand-Label (RFC 8446 section 7.1) with an empty context, for outputs of at most one SHA-256 block:
/// HKDF-Expand's first block `T(1) = HMAC(PRK, info || 0x01)` (RFC 5869 section 2.3), of which the caller
/// takes the label's length.
fn expand_label(prk: &HmacSha256, label: &Label) -> [u8; SECRET_LEN] {
    prk.mac_block(&label.block)
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
    }

    /// RFC 4231 test cases 1, 2 and 4 (keys of at most one block, messages that fit one block).
    #[test]
    fn hmac_matches_rfc4231() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
        };
        let case1 = HmacSha256::new(&[0x0b; 20]).mac(b"Hi There");
        assert_eq!(case1.to_vec(), hex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"));
        let case2 = HmacSha256::new(b"Jefe").mac(b"what do ya want for nothing?");
        assert_eq!(case2.to_vec(), hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
        let key: [u8; 25] = std::array::from_fn(|i| i as u8 + 1);
        let case4 = HmacSha256::new(&key).mac(&[0xcd; 50]);
        assert_eq!(case4.to_vec(), hex("82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"));
    }
}
