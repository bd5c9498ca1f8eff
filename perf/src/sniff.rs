//! Sniffer costs, each beside a same-run baseline:
//! - `sniff_quic_decrypt_floor_ns`: the floor itself (baseline = value).
//! - `sniff_quic_initial_to_sni_ns`: one datagram holding a whole client Initial (RFC 9001 A.2) to its SNI,
//!   against the floor: rustls (on ring) deriving the Initial keys with `quic::Keys::initial` and opening the
//!   same packet, layout given, no parsing (`RustlsKeys`). The sniffer derives the client's keys only, so it
//!   can beat its floor; target <= 1.5, and <= 2 us.
//! - `sniff_quic_session_to_sni_ns`: the same through a worker's session table (what the gateway calls).
//! - `sniff_quic_reject_ns`: the pre-check on non-QUIC datagrams (DNS, a 1-RTT short header, a long header of
//!   an unknown version, a 1400-byte non-QUIC datagram), both it and the baseline (an empty function) called
//!   out of line; the check's own cost is value - baseline (inlined in the gateway); target <= 5 ns.
//! - `sniff_quic_reject_table_ns`: the same datagrams through the session table's fast path.
//! - `sniff_tls_hello_to_sni_ns`: a TLS record holding the RFC 9001 ClientHello through the TCP sniffer to its
//!   SNI, against copying the record (what reading it costs anyway).
//! - `sniff_http_host_ns`: an HTTP/1.1 request head to its Host, against copying it.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use relay::sniff::{
    quic::{Outcome, QuicSessions, QuicVersion, is_likely_initial, reference::RustlsKeys, sniff_datagram},
    tcp::{TcpDecision, TcpSniffer},
};

use crate::report::{Figure, median};

/// Rounds per figure; the median is reported.
const ROUNDS: usize = 9;
/// Time one round should take: long enough to dwarf timer cost, short enough for a quick run.
const ROUND_TIME: Duration = Duration::from_millis(60);
/// RFC 9001 A.2: packet number offset of the sample Initial (18-byte header before it).
const RFC_PN_OFFSET: usize = 18;

const VECTORS: &str = include_str!("../../relay/tests/data/rfc9001-a2-client-initial.txt");

/// The hex value of `key` in the vector file (values may continue on lines without `=`).
fn vector(key: &str) -> Vec<u8> {
    let mut hex = String::new();
    let mut inside = false;
    for line in VECTORS.lines().filter(|l| !l.starts_with('#')) {
        match line.split_once('=') {
            Some((k, v)) => {
                inside = k.trim() == key;
                if inside {
                    hex.push_str(v);
                }
            }
            None if inside => hex.push_str(line),
            None => {}
        }
    }
    let digits: Vec<u8> = hex.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap_or("00"), 16).unwrap_or(0)).collect()
}

/// Nanoseconds per call of `op`: the median over [`ROUNDS`] rounds, each of a calibrated iteration count.
fn ns_per_op(mut op: impl FnMut(u64)) -> f64 {
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for i in 0..iters {
            op(i);
        }
        if t.elapsed() >= ROUND_TIME / 10 {
            iters = iters.saturating_mul(10);
            break;
        }
        iters *= 2;
    }
    let mut samples: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for i in 0..iters {
                op(i);
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    median(&mut samples)
}

fn figure(name: &str, value: f64, baseline: f64) -> Figure {
    Figure { name: name.into(), value, unit: "ns", baseline, ratio: value / baseline }
}

/// The baseline of the reject figure: an out-of-line call that looks at nothing.
#[inline(never)]
fn empty(datagram: &[u8]) -> bool {
    black_box(datagram);
    false
}

/// The pre-check behind the same out-of-line call, so that value minus baseline is the check itself.
#[inline(never)]
fn reject(datagram: &[u8]) -> bool {
    is_likely_initial(datagram)
}

/// Runs the group.
pub fn bench() -> Vec<Figure> {
    let packet = vector("protected_packet");
    let dcid = vector("dcid");
    let hello = vector("crypto_frame")[4..].to_vec();
    assert!(matches!(sniff_datagram(&packet), Outcome::Name { .. }), "the RFC 9001 packet must yield its SNI");

    let mut scratch = Vec::with_capacity(2048);
    let floor = ns_per_op(|_| {
        let keys = RustlsKeys::client(QuicVersion::V1, black_box(&dcid));
        black_box(keys.open_at(black_box(&packet), RFC_PN_OFFSET, &mut scratch).map(<[u8]>::len).ok());
    });
    let to_sni = ns_per_op(|_| {
        black_box(sniff_datagram(black_box(&packet)));
    });
    let mut table: QuicSessions<u64, &[u8]> = QuicSessions::default();
    let start = Instant::now();
    let session = ns_per_op(|i| {
        // A new flow each time, as every Initial of a real client opens one.
        black_box(table.on_datagram(i, black_box(&packet[..]), start).outcome);
    });

    let mut short_header = vec![0x5a; 1300];
    short_header[0] = 0x43;
    let mut unknown_version = vec![0u8; 1250];
    unknown_version[..5].copy_from_slice(&[0xc3, 0x0a, 0x1a, 0x2a, 0x3a]);
    let dns = [0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0];
    let big_other = vec![0x17; 1400];
    let datagrams: [&[u8]; 4] = [&dns, &short_header, &unknown_version, &big_other];
    assert!(datagrams.iter().all(|d| !is_likely_initial(d)));
    let pick = |i: u64| datagrams[(i % 4) as usize];
    let call = ns_per_op(|i| {
        black_box(empty(black_box(pick(i))));
    });
    let rejected = ns_per_op(|i| {
        black_box(reject(black_box(pick(i))));
    });
    let mut idle: QuicSessions<u64, &[u8]> = QuicSessions::default();
    let reject_table = ns_per_op(|i| {
        black_box(idle.on_datagram(i, black_box(pick(i)), start).release.count());
    });

    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    record.extend_from_slice(&hello);
    let mut copy = Vec::with_capacity(4096);
    let copy_record = ns_per_op(|_| {
        copy.clear();
        copy.extend_from_slice(black_box(&record));
        black_box(copy.len());
    });
    let timeout = Duration::from_millis(30);
    let tls = ns_per_op(|_| {
        let mut sniffer = TcpSniffer::new(443, timeout, start);
        black_box(matches!(sniffer.poll(black_box(&record), start), TcpDecision::Name { .. }));
    });
    let request =
        b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
    let copy_request = ns_per_op(|_| {
        copy.clear();
        copy.extend_from_slice(black_box(request));
        black_box(copy.len());
    });
    let http = ns_per_op(|_| {
        let mut sniffer = TcpSniffer::new(80, timeout, start);
        black_box(matches!(sniffer.poll(black_box(request), start), TcpDecision::Name { .. }));
    });

    vec![
        figure("sniff_quic_decrypt_floor_ns", floor, floor),
        figure("sniff_quic_initial_to_sni_ns", to_sni, floor),
        figure("sniff_quic_session_to_sni_ns", session, floor),
        figure("sniff_quic_reject_ns", rejected, call),
        figure("sniff_quic_reject_table_ns", reject_table, call),
        figure("sniff_tls_hello_to_sni_ns", tls, copy_record),
        figure("sniff_http_host_ns", http, copy_request),
    ]
}
