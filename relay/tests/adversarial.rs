//! Truncated, oversized, garbage and adversarial inputs: every sniffer answers, none panics. Property tests
//! feed random bytes, random frames behind valid packet protection, and random segmentations.

mod common;

use std::time::{Duration, Instant};

use common::vectors;
use proptest::prelude::*;
use relay::sniff::{
    http::HostReader,
    pcap::report_bytes,
    quic::{
        InitialSniffer, MIN_INITIAL_DATAGRAM, Outcome, QuicVersion,
        build::{client_initial, crypto_frame},
        is_likely_initial, sniff_datagram,
    },
    tcp::{TcpDecision, TcpSniffer},
    tls::{HelloReader, client_hello},
};

const DCID: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

fn rfc_packet() -> Vec<u8> {
    vectors("rfc9001-a2-client-initial.txt")["protected_packet"].clone()
}

fn rfc_hello() -> Vec<u8> {
    vectors("rfc9001-a2-client-initial.txt")["crypto_frame"][4..].to_vec()
}

fn sealed(frames: &[u8]) -> Vec<u8> {
    client_initial(QuicVersion::V1, &DCID, b"", 0, frames, MIN_INITIAL_DATAGRAM)
}

#[test]
fn every_truncation_of_a_real_initial_is_answered_without_a_name() {
    let packet = rfc_packet();
    for len in 0..packet.len() {
        let outcome = sniff_datagram(&packet[..len]);
        assert_eq!(outcome, Outcome::NotQuic, "truncated to {len}");
    }
}

#[test]
fn length_field_past_the_datagram_is_not_quic() {
    let mut packet = rfc_packet();
    // The Length varint (0x449e) sits at bytes 16-17 of the RFC packet; claim 0x3fff bytes.
    packet[16..18].copy_from_slice(&[0x7f, 0xff]);
    assert_eq!(sniff_datagram(&packet), Outcome::NotQuic);
}

#[test]
fn huge_crypto_offset_and_length_varints_end_without_a_name() {
    // Offset 2^62 - 1 with one byte of data: past the stream bound.
    let mut frame = vec![0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, b'x'];
    assert_eq!(sniff_datagram(&sealed(&frame)), Outcome::NoName);
    // A length varint far past the payload: the frame walk stops; no CRYPTO data, so the hello never completes.
    frame = vec![0x06, 0x00, 0xbf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(sniff_datagram(&sealed(&frame)), Outcome::NeedMore);
}

#[test]
fn client_hello_claiming_sixteen_megabytes_ends_without_a_name() {
    let frame = crypto_frame(0, &[0x01, 0xff, 0xff, 0xff, 0x03, 0x03]);
    assert_eq!(sniff_datagram(&sealed(&frame)), Outcome::NoName);
}

#[test]
fn overlapping_identical_crypto_offsets_still_yield_the_name() {
    let hello = rfc_hello();
    let frames = [crypto_frame(0, &hello[..150]), crypto_frame(100, &hello[100..]), crypto_frame(0, &hello)].concat();
    assert!(matches!(sniff_datagram(&sealed(&frames)), Outcome::Name { sni, .. } if sni == "example.com"));
}

#[test]
fn contradicting_crypto_offsets_in_one_packet_end_without_a_name() {
    let hello = rfc_hello();
    let mut forged = hello[100..].to_vec();
    forged[5] ^= 0x20;
    let frames = [crypto_frame(0, &hello), crypto_frame(100, &forged)].concat();
    assert_eq!(sniff_datagram(&sealed(&frames)), Outcome::NoName);
}

#[test]
fn hello_with_the_sni_bytes_altered_to_garbage_is_no_name() {
    let mut hello = rfc_hello();
    let at = hello.windows(11).position(|w| w == b"example.com").unwrap();
    hello[at + 3] = b' ';
    assert_eq!(sniff_datagram(&sealed(&crypto_frame(0, &hello))), Outcome::NoName);
}

#[test]
fn garbage_after_the_initial_and_a_second_version_are_ignored() {
    let mut datagram = client_initial(QuicVersion::V1, &DCID, b"", 0, &crypto_frame(0, &rfc_hello()), 0);
    let v2 = client_initial(QuicVersion::V2, &DCID, b"", 0, &[0x01], 0);
    datagram.extend_from_slice(&v2);
    datagram.extend_from_slice(&[0xff; 300]);
    datagram.resize(MIN_INITIAL_DATAGRAM, 0x5a);
    assert!(matches!(sniff_datagram(&datagram), Outcome::Name { version: QuicVersion::V1, .. }));
}

#[test]
fn ping_and_padding_only_initial_needs_more() {
    assert_eq!(sniff_datagram(&sealed(&[0x01])), Outcome::NeedMore);
}

#[test]
fn one_byte_tcp_segments_of_a_hello_over_tiny_records_are_read_to_the_name() {
    let hello = rfc_hello();
    let mut stream = Vec::new();
    for chunk in hello.chunks(3) {
        stream.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, chunk.len() as u8]);
        stream.extend_from_slice(chunk);
    }
    let t0 = Instant::now();
    let mut sniffer = TcpSniffer::new(443, Duration::from_millis(30), t0);
    for end in 1..stream.len() {
        assert!(matches!(sniffer.poll(&stream[..end], t0), TcpDecision::NeedMore { .. }), "at {end}");
    }
    assert!(matches!(sniffer.poll(&stream, t0), TcpDecision::Name { name, .. } if name == "example.com"));
}

fn random_time_ms() -> impl Strategy<Value = u64> {
    0u64..100
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn random_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let _ = is_likely_initial(&bytes);
        let _ = sniff_datagram(&bytes);
    }

    #[test]
    fn random_long_headers_never_panic(
        first in 0xc0u8..=0xff,
        version in prop_oneof![Just(1u32), Just(0x6b33_43cf), Just(0xff00_001d)],
        rest in proptest::collection::vec(any::<u8>(), 1195..1400),
    ) {
        let mut d = vec![first];
        d.extend_from_slice(&version.to_be_bytes());
        d.extend_from_slice(&rest);
        prop_assert!(sniff_datagram(&d) != Outcome::NeedMore || is_likely_initial(&d));
    }

    #[test]
    fn random_frames_behind_valid_protection_never_panic(frames in proptest::collection::vec(any::<u8>(), 1..1100)) {
        let _ = sniff_datagram(&sealed(&frames));
    }

    #[test]
    fn random_crypto_fragments_never_panic(
        pieces in proptest::collection::vec((0u64..3000, proptest::collection::vec(any::<u8>(), 0..200)), 1..6),
    ) {
        let frames: Vec<u8> = pieces.iter().flat_map(|(o, d)| crypto_frame(*o, d)).collect();
        let _ = sniff_datagram(&sealed(&frames[..frames.len().min(1100)]));
    }

    #[test]
    fn real_hello_in_random_pieces_and_order_always_yields_the_name(
        cuts in proptest::collection::btree_set(1usize..240, 0..8),
        seed in any::<u64>(),
    ) {
        let hello = rfc_hello();
        let mut bounds: Vec<usize> = std::iter::once(0).chain(cuts).chain(std::iter::once(hello.len())).collect();
        bounds.dedup();
        let mut frames: Vec<Vec<u8>> =
            bounds.windows(2).map(|w| crypto_frame(w[0] as u64, &hello[w[0]..w[1]])).collect();
        let n = frames.len();
        frames.rotate_left((seed as usize) % n);
        let (mut sniffer, mut scratch) = (InitialSniffer::new(), Vec::new());
        let mut outcome = Outcome::NeedMore;
        for (pn, frame) in frames.iter().enumerate() {
            let datagram = client_initial(QuicVersion::V1, &DCID, b"", pn as u32, frame, MIN_INITIAL_DATAGRAM);
            outcome = sniffer.on_datagram(&datagram, &mut scratch);
            if outcome != Outcome::NeedMore {
                break;
            }
        }
        prop_assert!(matches!(outcome, Outcome::Name { ref sni, .. } if sni == "example.com"), "{:?}", outcome);
    }

    #[test]
    fn random_client_hello_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = client_hello::parse(&bytes);
        let mut msg = vec![1, 0, (bytes.len() >> 8) as u8, bytes.len() as u8];
        msg.extend_from_slice(&bytes);
        let _ = client_hello::parse(&msg);
    }

    #[test]
    fn random_tcp_streams_in_random_segments_never_panic_and_never_outlive_the_deadline(
        stream in proptest::collection::vec(any::<u8>(), 0..3000),
        tls_prefix in any::<bool>(),
        cuts in proptest::collection::vec(0usize..3000, 0..10),
        late in random_time_ms(),
    ) {
        let mut stream = stream;
        if tls_prefix {
            stream.splice(0..0, [0x16, 0x03, 0x01]);
        }
        let timeout = Duration::from_millis(30);
        let t0 = Instant::now();
        let mut sniffer = TcpSniffer::new(443, timeout, t0);
        let mut ends: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
        ends.sort_unstable();
        ends.push(stream.len());
        for end in ends {
            let _ = HelloReader::new().poll(&stream[..end]);
            let _ = HostReader::new().poll(&stream[..end]);
            let _ = sniffer.poll(&stream[..end], t0);
        }
        let at = t0 + Duration::from_millis(late);
        let decision = sniffer.poll(&stream, at);
        if at >= t0 + timeout {
            prop_assert!(!matches!(decision, TcpDecision::NeedMore { .. }), "{:?}", decision);
        }
    }

    #[test]
    fn random_capture_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), ng in any::<bool>()) {
        let mut file = if ng { vec![0x0a, 0x0d, 0x0d, 0x0a] } else { vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0] };
        file.extend_from_slice(&bytes);
        let _ = report_bytes(&file);
    }
}
