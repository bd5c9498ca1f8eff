//! QUIC Initial test vectors: RFC 9001 Appendix A (v1) and RFC 9369 Appendix A (v2).

mod common;

use common::{hex, vectors};
use relay::sniff::quic::{
    InitialKeys, InitialSniffer, LongPacket, MAX_CID_LEN, OpenError, Outcome, QuicVersion,
    build::{client_initial, crypto_frame},
    reference::RustlsKeys,
    sniff_datagram,
};

const VECTORS: &str = "rfc9001-a2-client-initial.txt";
/// RFC 9001 A.2: the client's first Initial has packet number 2 and pads the datagram to 1200 bytes.
const RFC_PN: u32 = 2;
const RFC_DATAGRAM_LEN: usize = 1200;

fn example_name(version: QuicVersion) -> Outcome {
    Outcome::Name { sni: "example.com".into(), alpn: vec!["alpn".into()], version }
}

/// The ClientHello of RFC 9001 A.2, without its CRYPTO frame header (type 0x06, offset 0x00, length 0x40f1).
fn rfc_client_hello() -> Vec<u8> {
    vectors(VECTORS)["crypto_frame"][4..].to_vec()
}

#[test]
fn rfc9001_a2_client_initial_yields_example_com_and_its_alpn() {
    let packet = &vectors(VECTORS)["protected_packet"];
    assert_eq!(packet.len(), RFC_DATAGRAM_LEN);
    assert_eq!(sniff_datagram(packet), example_name(QuicVersion::V1));
}

#[test]
fn builder_reproduces_the_rfc9001_a2_packet_byte_for_byte() {
    let v = vectors(VECTORS);
    let built = client_initial(QuicVersion::V1, &v["dcid"], &[], RFC_PN, &v["crypto_frame"], RFC_DATAGRAM_LEN);
    assert_eq!(built, v["protected_packet"]);
}

/// RFC 9369 Appendix A.2 protects the same ClientHello with the v2 keys; its protected header (first 22 bytes)
/// is quoted here from the RFC. tshark dissects the full packet too (`tshark_agrees_on_built_v2_initial` in
/// `pcap_oracle.rs`).
const RFC9369_A2_PROTECTED_HEADER: &str = "d76b3343cf088394c8f03e5157080000449ea0c95e82";

#[test]
fn v2_initial_built_per_rfc9369_appendix_a_matches_its_header_and_is_sniffed() {
    let v = vectors(VECTORS);
    let packet = client_initial(QuicVersion::V2, &v["dcid"], &[], RFC_PN, &v["crypto_frame"], RFC_DATAGRAM_LEN);
    assert_eq!(packet[..22], hex(RFC9369_A2_PROTECTED_HEADER));
    assert_eq!(sniff_datagram(&packet), example_name(QuicVersion::V2));
}

#[test]
fn draft29_initial_is_decrypted_with_the_draft_salt() {
    let v = vectors(VECTORS);
    let packet = client_initial(QuicVersion::Draft(29), &v["dcid"], &[], 0, &v["crypto_frame"], RFC_DATAGRAM_LEN);
    assert_eq!(sniff_datagram(&packet), example_name(QuicVersion::Draft(29)));
    // The same bytes labelled as v1 do not authenticate: the salt differs.
    let mut relabelled = packet.clone();
    relabelled[1..5].copy_from_slice(&1u32.to_be_bytes());
    assert_eq!(sniff_datagram(&relabelled), Outcome::NotQuic);
}

#[test]
fn one_flipped_bit_anywhere_in_the_protected_payload_fails_authentication() {
    let mut packet = vectors(VECTORS)["protected_packet"].clone();
    let pn_offset = LongPacket::new_checked(&packet[..]).unwrap().pn_offset();
    for at in [pn_offset + 30, 600, RFC_DATAGRAM_LEN - 1] {
        packet[at] ^= 0x01;
        assert_eq!(sniff_datagram(&packet), Outcome::NotQuic, "flip at {at}");
        packet[at] ^= 0x01;
    }
}

#[test]
fn client_hello_split_over_two_datagrams_needs_the_second() {
    let v = vectors(VECTORS);
    let hello = rfc_client_hello();
    let (a, b) = hello.split_at(100);
    let dcid = &v["dcid"];
    let first = client_initial(QuicVersion::V1, dcid, b"s", 0, &crypto_frame(0, a), RFC_DATAGRAM_LEN);
    let second = client_initial(QuicVersion::V1, dcid, b"s", 1, &crypto_frame(100, b), RFC_DATAGRAM_LEN);
    let (mut sniffer, mut scratch) = (InitialSniffer::new(), Vec::new());
    assert_eq!(sniffer.on_datagram(&first, &mut scratch), Outcome::NeedMore);
    assert_eq!(sniffer.on_datagram(&second, &mut scratch), example_name(QuicVersion::V1));
}

#[test]
fn fragments_shuffled_across_frames_and_coalesced_packets_reassemble() {
    let v = vectors(VECTORS);
    let hello = rfc_client_hello();
    let dcid = &v["dcid"];
    // Packet 0 carries pieces 3 and 1 (Chrome-style shuffling); packet 1, coalesced after it, carries 2 and 0.
    let piece = |i: usize| crypto_frame((i * 61) as u64, &hello[i * 61..((i + 1) * 61).min(hello.len())]);
    let p0 = client_initial(QuicVersion::V1, dcid, b"", 0, &[piece(3), piece(1)].concat(), 0);
    let p1 = client_initial(QuicVersion::V1, dcid, b"", 1, &[piece(2), piece(0)].concat(), RFC_DATAGRAM_LEN - p0.len());
    let datagram = [p0, p1].concat();
    assert_eq!(datagram.len(), RFC_DATAGRAM_LEN);
    assert_eq!(sniff_datagram(&datagram), example_name(QuicVersion::V1));
}

/// HKDF-Expand-Label (RFC 8446 section 7.1) with an empty context, computed with ring's HKDF: an implementation
/// independent of both the sniffer's own key schedule and rustls'.
fn expand_label(prk: &ring::hkdf::Prk, label: &str, len: usize) -> Vec<u8> {
    struct Len(usize);
    impl ring::hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let full = format!("tls13 {label}");
    let info = [&(len as u16).to_be_bytes()[..], &[full.len() as u8], full.as_bytes(), &[0]].concat();
    let mut out = vec![0; len];
    prk.expand(&[&info], Len(len)).unwrap().fill(&mut out).unwrap();
    out
}

fn client_key_iv_hp(salt: &[u8], dcid: &[u8], prefix: &str) -> [Vec<u8>; 3] {
    let initial = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, salt).extract(dcid);
    let client = expand_label(&initial, "client in", 32);
    let client = ring::hkdf::Prk::new_less_safe(ring::hkdf::HKDF_SHA256, &client);
    [
        expand_label(&client, &format!("{prefix} key"), 16),
        expand_label(&client, &format!("{prefix} iv"), 12),
        expand_label(&client, &format!("{prefix} hp"), 16),
    ]
}

#[test]
fn initial_key_schedules_match_rfc9001_a1_and_rfc9369_a1() {
    let v = vectors(VECTORS);
    let v1_salt = hex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a");
    let [key, iv, hp] = client_key_iv_hp(&v1_salt, &v["dcid"], "quic");
    assert_eq!([key, iv, hp], [v["client_key"].clone(), v["client_iv"].clone(), v["client_hp"].clone()]);
    // RFC 9369 A.1.
    let v2_salt = hex("0dede3def700a6db819381be6e269dcbf9bd2ed9");
    let [key, iv, hp] = client_key_iv_hp(&v2_salt, &v["dcid"], "quicv2");
    assert_eq!(key, hex("8b1a0bc121284290a29e0971b5cd045d"));
    assert_eq!(iv, hex("91f73e2351d8fa91660e909f"));
    assert_eq!(hp, hex("45b95e15235d6f45a6b19cbcb0294ba9"));
}

/// Every version the sniffer reads, with each initial salt and label set.
const VERSIONS: [QuicVersion; 6] = [
    QuicVersion::V1,
    QuicVersion::V2,
    QuicVersion::Draft(29),
    QuicVersion::Draft(32),
    QuicVersion::Draft(33),
    QuicVersion::Draft(34),
];

#[test]
fn own_client_key_schedule_opens_what_rustls_seals_for_every_version_and_dcid_length() {
    // `client_initial` seals with rustls' `Keys::initial`; the sniffer derives the client's keys on its own.
    let frames = crypto_frame(0, &rfc_client_hello());
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for version in VERSIONS {
        for dcid_len in 0..=MAX_CID_LEN {
            let dcid: Vec<u8> = (0..dcid_len).map(|i| (i as u8).wrapping_mul(37) ^ version.wire() as u8).collect();
            let packet = client_initial(version, &dcid, b"s", 7, &frames, RFC_DATAGRAM_LEN);
            let view = LongPacket::new_checked(&packet[..]).unwrap();
            let opened = InitialKeys::client(version, &dcid).open(&view, &mut ours);
            let reference = RustlsKeys::client(version, &dcid).open_at(view.bytes(), view.pn_offset(), &mut theirs);
            assert_eq!(opened.unwrap(), reference.unwrap(), "{version} DCID of {dcid_len} bytes");
        }
    }
}

#[test]
fn keys_of_another_salt_or_label_set_do_not_open() {
    let dcid = &vectors(VECTORS)["dcid"];
    let frames = crypto_frame(0, &rfc_client_hello());
    let mut scratch = Vec::new();
    for (sealed, opened) in [
        (QuicVersion::V1, QuicVersion::V2),
        (QuicVersion::V2, QuicVersion::V1),
        (QuicVersion::Draft(29), QuicVersion::Draft(33)),
        (QuicVersion::Draft(34), QuicVersion::Draft(32)),
    ] {
        let packet = client_initial(sealed, dcid, b"", 0, &frames, RFC_DATAGRAM_LEN);
        let view = LongPacket::new_checked(&packet[..]).unwrap();
        assert_eq!(InitialKeys::client(opened, dcid).open(&view, &mut scratch), Err(OpenError::Decrypt));
    }
}
