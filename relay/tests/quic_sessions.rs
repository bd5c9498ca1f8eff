//! Per-flow QUIC sniff sessions: held datagrams come back in order, and every bound ends a session.

mod common;

use std::time::{Duration, Instant};

use common::vectors;
use relay::sniff::quic::{
    Limits, Outcome, QuicSessions, QuicVersion, SESSION_TTL,
    build::{client_initial, crypto_frame},
};

const DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
const DATAGRAM: usize = 1200;

/// A datagram tagged with its position in the client's send order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tagged(u32, Vec<u8>);

impl AsRef<[u8]> for Tagged {
    fn as_ref(&self) -> &[u8] {
        &self.1
    }
}

fn hello() -> Vec<u8> {
    vectors("rfc9001-a2-client-initial.txt")["crypto_frame"][4..].to_vec()
}

/// The ClientHello in `parts` Initials, one per datagram, tagged 0.. in order.
fn split_hello(parts: usize) -> Vec<Tagged> {
    let hello = hello();
    let step = hello.len().div_ceil(parts);
    hello
        .chunks(step)
        .enumerate()
        .map(|(i, chunk)| {
            let frame = crypto_frame((i * step) as u64, chunk);
            Tagged(i as u32, client_initial(QuicVersion::V1, &DCID, b"c", i as u32, &frame, DATAGRAM))
        })
        .collect()
}

fn tags(release: impl Iterator<Item = Tagged>) -> Vec<u32> {
    release.map(|t| t.0).collect()
}

fn is_name(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Name { sni, .. } if sni == "example.com")
}

#[test]
fn held_datagrams_are_released_in_arrival_order_with_the_name() {
    let mut table: QuicSessions<u8, Tagged> = QuicSessions::default();
    let now = Instant::now();
    let parts = split_hello(3);
    for part in &parts[..2] {
        let v = table.on_datagram(1, part.clone(), now);
        assert_eq!(v.outcome, Outcome::NeedMore);
        assert_eq!(tags(v.release), Vec::<u32>::new());
    }
    // A 0-RTT-only datagram mid-session is held too, keeping its place.
    let mut zero_rtt = parts[0].1.clone();
    zero_rtt[0] = 0xd3;
    let v = table.on_datagram(1, Tagged(9, zero_rtt), now);
    assert_eq!((v.outcome, tags(v.release)), (Outcome::NeedMore, vec![]));
    let v = table.on_datagram(1, parts[2].clone(), now);
    assert!(is_name(&v.outcome), "{:?}", v.outcome);
    assert_eq!(tags(v.release), [0, 1, 9, 2]);
    assert!(table.is_empty());
    assert_eq!((table.stats().named, table.stats().sessions_created), (1, 1));
}

#[test]
fn non_quic_datagrams_pass_at_once_and_other_flows_are_untouched() {
    let mut table: QuicSessions<u8, Tagged> = QuicSessions::default();
    let now = Instant::now();
    let v = table.on_datagram(1, Tagged(0, vec![0x17; 40]), now);
    assert_eq!((v.outcome, tags(v.release)), (Outcome::NotQuic, vec![0]));
    table.on_datagram(2, split_hello(2)[0].clone(), now);
    let v = table.on_datagram(3, Tagged(5, vec![0x40; 1300]), now);
    assert_eq!((v.outcome, tags(v.release)), (Outcome::NotQuic, vec![5]));
    assert_eq!(table.len(), 1);
}

#[test]
fn expired_session_releases_its_datagrams_and_the_flow_is_negatively_cached() {
    let mut table: QuicSessions<u8, Tagged> = QuicSessions::default();
    let t0 = Instant::now();
    let parts = split_hello(2);
    table.on_datagram(1, parts[0].clone(), t0);
    assert_eq!(table.next_deadline(), Some(t0 + SESSION_TTL));
    assert!(table.poll_expired(t0 + SESSION_TTL - Duration::from_millis(1)).is_none());
    let (key, release) = table.poll_expired(t0 + SESSION_TTL).expect("expired");
    assert_eq!((key, tags(release)), (1, vec![0]));
    assert!(table.poll_expired(t0 + SESSION_TTL).is_none());
    // The flow's next Initial is answered from the negative cache, not sniffed again.
    let v = table.on_datagram(1, parts[0].clone(), t0 + SESSION_TTL);
    assert_eq!((v.outcome, tags(v.release)), (Outcome::NoName, vec![0]));
    assert_eq!((table.stats().expired, table.stats().negative_hits), (1, 1));
}

#[test]
fn held_datagram_bound_ends_the_session_without_a_name() {
    let limits = Limits { held_datagrams: 2, ..Limits::default() };
    let mut table: QuicSessions<u8, Tagged> = QuicSessions::new(limits);
    let now = Instant::now();
    let parts = split_hello(4);
    for part in &parts[..2] {
        assert_eq!(table.on_datagram(1, part.clone(), now).outcome, Outcome::NeedMore);
    }
    let v = table.on_datagram(1, parts[2].clone(), now);
    assert_eq!((v.outcome, tags(v.release)), (Outcome::NoName, vec![0, 1, 2]));
    assert_eq!(table.stats().held_limit, 1);
}

#[test]
fn held_byte_bound_ends_the_session_before_it_grows() {
    let limits = Limits { held_bytes: 2 * DATAGRAM, ..Limits::default() };
    let mut table: QuicSessions<u8, Tagged> = QuicSessions::new(limits);
    let now = Instant::now();
    let parts = split_hello(4);
    table.on_datagram(1, parts[0].clone(), now);
    table.on_datagram(1, parts[1].clone(), now);
    // The third of four parts: the hello is still incomplete, and holding it would pass the byte bound.
    let mut big = parts[2].clone();
    big.1.resize(DATAGRAM + 1, 0);
    let v = table.on_datagram(1, big, now);
    assert_eq!((v.outcome, tags(v.release)), (Outcome::NoName, vec![0, 1, 2]));
}

#[test]
fn full_table_lets_new_flows_through_unsniffed() {
    let mut table: QuicSessions<u8, Tagged> = QuicSessions::new(Limits { sessions: 1, ..Limits::default() });
    let now = Instant::now();
    let part = split_hello(2)[0].clone();
    assert_eq!(table.on_datagram(1, part.clone(), now).outcome, Outcome::NeedMore);
    let v = table.on_datagram(2, part, now);
    assert_eq!((v.outcome, tags(v.release)), (Outcome::NoName, vec![0]));
    assert_eq!(table.stats().table_full, 1);
}

#[test]
fn negative_cache_evicts_its_oldest_entry_when_full() {
    let mut table: QuicSessions<u8, Tagged> = QuicSessions::new(Limits { negative_entries: 2, ..Limits::default() });
    let now = Instant::now();
    // An Initial whose ClientHello has no SNI decides "no name" at once and is remembered.
    let no_sni = {
        let mut hello = hello();
        hello[0] = 2; // a ServerHello type: not a ClientHello
        client_initial(QuicVersion::V1, &DCID, b"", 0, &crypto_frame(0, &hello), DATAGRAM)
    };
    for flow in 1..=3 {
        assert_eq!(table.on_datagram(flow, Tagged(0, no_sni.clone()), now).outcome, Outcome::NoName);
    }
    let full = split_hello(1)[0].clone();
    assert!(is_name(&table.on_datagram(1, full.clone(), now).outcome), "flow 1 was evicted");
    assert_eq!(table.on_datagram(3, full, now).outcome, Outcome::NoName);
}

#[test]
fn contradicting_crypto_retransmission_ends_the_flow_without_a_name() {
    let mut table: QuicSessions<u8, Tagged> = QuicSessions::default();
    let now = Instant::now();
    let hello = hello();
    let first = client_initial(QuicVersion::V1, &DCID, b"", 0, &crypto_frame(0, &hello[..100]), DATAGRAM);
    let mut forged = hello[50..].to_vec();
    forged[0] ^= 0xff;
    let second = client_initial(QuicVersion::V1, &DCID, b"", 1, &crypto_frame(50, &forged), DATAGRAM);
    assert_eq!(table.on_datagram(1, Tagged(0, first), now).outcome, Outcome::NeedMore);
    let v = table.on_datagram(1, Tagged(1, second), now);
    assert_eq!((v.outcome, tags(v.release)), (Outcome::NoName, vec![0, 1]));
}

#[test]
fn connection_close_ends_the_flow_without_a_name() {
    let mut table: QuicSessions<u8, Tagged> = QuicSessions::default();
    let now = Instant::now();
    let parts = split_hello(2);
    table.on_datagram(1, parts[0].clone(), now);
    let close = client_initial(QuicVersion::V1, &DCID, b"", 1, &[0x1c, 0x0a, 0x00, 0x00], DATAGRAM);
    assert_eq!(table.on_datagram(1, Tagged(1, close), now).outcome, Outcome::NoName);
}

#[test]
fn coalesced_packet_for_another_connection_is_ignored() {
    let hello = hello();
    let ours = client_initial(QuicVersion::V1, &DCID, b"", 0, &crypto_frame(0, &hello[..100]), 0);
    let theirs = client_initial(QuicVersion::V1, b"otherdcid", b"", 0, &crypto_frame(100, &hello[100..]), 0);
    let mut datagram = [ours, theirs].concat();
    datagram.resize(DATAGRAM, 0);
    let mut table: QuicSessions<u8, Tagged> = QuicSessions::default();
    assert_eq!(table.on_datagram(1, Tagged(0, datagram), Instant::now()).outcome, Outcome::NeedMore);
}
