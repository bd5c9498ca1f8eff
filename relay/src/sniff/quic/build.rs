//! Builds protected client Initial packets, as a client would: for tests, fuzz seeds and benchmarks. Not used
//! on the datapath.

use super::{reference::RustlsKeys, version::QuicVersion};

/// Packet number length used by built packets (RFC 9001 Appendix A uses 4).
const PN_LEN: usize = 4;
/// AEAD tag length of AES-128-GCM.
const TAG_LEN: usize = 16;

/// A CRYPTO frame (type 0x06) carrying `data` at stream `offset`.
pub fn crypto_frame(offset: u64, data: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x06];
    put_varint(&mut frame, offset);
    put_varint(&mut frame, data.len() as u64);
    frame.extend_from_slice(data);
    frame
}

/// A protected client Initial of `version` to `dcid` from `scid`, packet number `pn` (4-byte encoding), carrying
/// `frames` followed by PADDING so that the packet is at least `min_len` bytes long. Sealed by rustls, so that
/// every test that opens one checks the sniffer's own key schedule against rustls'.
pub fn client_initial(
    version: QuicVersion,
    dcid: &[u8],
    scid: &[u8],
    pn: u32,
    frames: &[u8],
    min_len: usize,
) -> Vec<u8> {
    let first = 0xc0 | (version.initial_type_bits() << 4) | (PN_LEN as u8 - 1);
    let mut packet = vec![first];
    packet.extend_from_slice(&version.wire().to_be_bytes());
    packet.push(dcid.len() as u8);
    packet.extend_from_slice(dcid);
    packet.push(scid.len() as u8);
    packet.extend_from_slice(scid);
    packet.push(0); // token length
    let header_len = packet.len() + 2; // plus a 2-byte Length varint
    let unpadded = header_len + PN_LEN + frames.len() + TAG_LEN;
    let payload_len = frames.len() + min_len.saturating_sub(unpadded);
    let length = PN_LEN + payload_len + TAG_LEN;
    packet.extend_from_slice(&(0x4000 | length as u16).to_be_bytes());
    let pn_offset = packet.len();
    packet.extend_from_slice(&pn.to_be_bytes());
    packet.extend_from_slice(frames);
    packet.resize(pn_offset + length, 0);
    RustlsKeys::client_sealing(version, dcid).seal(&mut packet, pn_offset, u64::from(pn));
    packet
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..0x40 => out.push(v as u8),
        0x40..0x4000 => out.extend_from_slice(&(0x4000 | v as u16).to_be_bytes()),
        0x4000..0x4000_0000 => out.extend_from_slice(&(0x8000_0000 | v as u32).to_be_bytes()),
        _ => out.extend_from_slice(&(0xc000_0000_0000_0000 | v).to_be_bytes()),
    }
}
