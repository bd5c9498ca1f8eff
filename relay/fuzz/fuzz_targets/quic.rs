//! QUIC Initial sniffing. The first input byte picks how the rest is used:
//! - 0: raw datagrams (each `u16` length-prefixed) through a session table, as the gateway feeds them;
//! - 1: the rest is the plaintext frames of one Initial, sealed with real keys, so the frame walk, CRYPTO
//!   reassembly and ClientHello parser are reached behind the AEAD;
//! - 2: several sealed Initials (each `u8` length-prefixed frames) on one flow, with clock steps.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use relay::sniff::quic::{
    Limits, MIN_INITIAL_DATAGRAM, QuicSessions, QuicVersion, build::client_initial, sniff_datagram,
};

const DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

fn chunks(mut data: &[u8], wide: bool) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() && out.len() < 16 {
        let (len, rest) = if wide && data.len() >= 2 {
            (usize::from(u16::from_be_bytes([data[0], data[1]])), &data[2..])
        } else {
            (usize::from(data[0]), &data[1..])
        };
        let len = len.min(rest.len());
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let limits = Limits { held_datagrams: 4, sessions: 4, negative_entries: 4, ..Limits::default() };
    let mut table: QuicSessions<u8, Vec<u8>> = QuicSessions::new(limits);
    let mut now = Instant::now();
    match mode % 3 {
        0 => {
            for (i, d) in chunks(rest, true).into_iter().enumerate() {
                let _ = sniff_datagram(d);
                let mut padded = d.to_vec();
                if padded.len() < MIN_INITIAL_DATAGRAM && padded.len() > 5 {
                    padded.resize(MIN_INITIAL_DATAGRAM, 0);
                }
                let _ = table.on_datagram((i % 2) as u8, padded, now).release.count();
            }
        }
        1 => {
            let packet = client_initial(QuicVersion::V1, &DCID, b"", 0, rest, MIN_INITIAL_DATAGRAM);
            let _ = sniff_datagram(&packet);
        }
        _ => {
            let versions = [QuicVersion::V1, QuicVersion::V2, QuicVersion::Draft(29)];
            for (pn, frames) in chunks(rest, false).into_iter().enumerate() {
                let version = versions[pn % versions.len()];
                let packet = client_initial(version, &DCID, b"c", pn as u32, frames, MIN_INITIAL_DATAGRAM);
                let _ = table.on_datagram(0, packet, now).release.count();
                now += Duration::from_millis(u64::from(frames.first().copied().unwrap_or(0)) * 20);
                while table.poll_expired(now).is_some() {}
            }
        }
    }
});
