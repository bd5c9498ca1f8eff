//! `sniff::pcap::report` against tshark on captures of real clients made on this machine kind
//! (`tests/captures/make.sh`): gtlsclient (ngtcp2: QUIC v1, draft-29, IPv6), aioquic (QUIC v2, ClientHellos over
//! two datagrams), curl (TLS, HTTP, HTTP over IPv6), openssl s_client (a ClientHello over several records and
//! TCP segments) and a `tshark -i any` capture (Linux cooked frames in pcapng).

mod common;

use std::{net::SocketAddr, process::Command};

use common::data_path;
use relay::sniff::{
    Protocol,
    pcap::{FlowReport, Table, report, report_bytes},
    quic::{QuicVersion, build::client_initial},
    route::Transport,
};

const CAPTURES: [&str; 5] =
    ["quic-ngtcp2.pcap", "quic-aioquic.pcap", "tls-http.pcap", "tls-fragmented.pcap", "mixed-any.pcapng"];

/// One ClientHello or HTTP request as tshark dissected it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dissected {
    client: SocketAddr,
    server: SocketAddr,
    transport: Transport,
    quic_version: Option<u32>,
    name: String,
    alpn: Vec<String>,
    protocol: Protocol,
}

/// The tshark command of `tests/captures/make.sh`; keep the two in step.
fn tshark_fields(capture: &str) -> Command {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(data_path(capture)).args(["-Y", "tls.handshake.type == 1 || http.request", "-T", "fields"]);
    cmd.args(["-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]);
    for field in [
        "frame.number",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "udp.srcport",
        "tcp.srcport",
        "udp.dstport",
        "tcp.dstport",
        "quic.version",
        "tls.handshake.extensions_server_name",
        "tls.handshake.extensions_alpn_str",
        "http.host",
    ] {
        cmd.args(["-e", field]);
    }
    cmd
}

fn parse_tsv(text: &str) -> Vec<Dissected> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 13, "tshark line: {line:?}");
            let either = |a: &str, b: &str| if a.is_empty() { b.to_string() } else { a.to_string() };
            let (src, dst) = (either(f[1], f[2]), either(f[3], f[4]));
            let (transport, sport, dport) =
                if f[5].is_empty() { (Transport::Tcp, f[6], f[8]) } else { (Transport::Udp, f[5], f[7]) };
            let addr = |ip: &str, port: &str| SocketAddr::new(ip.parse().unwrap(), port.parse().unwrap());
            let quic_version = f[9]
                .split(',')
                .next()
                .filter(|v| !v.is_empty())
                .map(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).expect("hex version"));
            let (name, protocol) = match (f[10], f[12]) {
                (sni, _) if !sni.is_empty() => {
                    (sni.to_string(), if transport == Transport::Udp { Protocol::Quic } else { Protocol::Tls })
                }
                (_, host) => (host.to_string(), Protocol::Http),
            };
            let alpn = f[11].split(',').filter(|a| !a.is_empty()).map(String::from).collect();
            Dissected {
                client: addr(&src, sport),
                server: addr(&dst, dport),
                transport,
                quic_version,
                name,
                alpn,
                protocol,
            }
        })
        .collect()
}

fn as_dissected(flow: &FlowReport) -> Option<Dissected> {
    Some(Dissected {
        client: flow.client,
        server: flow.server,
        transport: flow.transport,
        quic_version: flow.quic_version.map(QuicVersion::wire),
        name: flow.name.clone()?,
        alpn: flow.alpn.clone(),
        protocol: flow.protocol?,
    })
}

fn assert_report_matches(capture: &str, expected: &[Dissected]) {
    let flows = report(&data_path(capture)).unwrap_or_else(|e| panic!("{e}"));
    let found: Vec<Dissected> = flows.iter().filter_map(as_dissected).collect();
    assert_eq!(found, expected, "{capture}:\n{}", Table(&flows));
}

#[test]
fn every_capture_agrees_with_the_recorded_tshark_dissection() {
    for capture in CAPTURES {
        let recorded = std::fs::read_to_string(data_path(&format!("{capture}.tshark.tsv"))).unwrap();
        let expected = parse_tsv(&recorded);
        assert!(!expected.is_empty(), "{capture}: the oracle found nothing");
        assert_report_matches(capture, &expected);
    }
}

#[test]
fn live_tshark_agrees_with_the_recording_and_the_report_when_installed() {
    if Command::new("tshark").arg("--version").output().is_err() {
        eprintln!("tshark not installed: live comparison skipped (the recorded dissection is still checked)");
        return;
    }
    for capture in CAPTURES {
        let out = tshark_fields(capture).output().expect("tshark runs");
        assert!(out.status.success(), "tshark failed on {capture}: {}", String::from_utf8_lossy(&out.stderr));
        let live = parse_tsv(&String::from_utf8(out.stdout).unwrap());
        let recorded = std::fs::read_to_string(data_path(&format!("{capture}.tshark.tsv"))).unwrap();
        assert_eq!(live, parse_tsv(&recorded), "{capture}: live tshark differs from the recording");
        assert_report_matches(capture, &live);
    }
}

#[test]
fn multi_datagram_and_multi_record_hellos_are_among_the_captures() {
    // The ClientHellos that span two QUIC datagrams (aioquic --big) and several TLS records and TCP segments
    // (openssl -max_send_frag 512 over a 300-byte MTU) are named like the rest.
    let quic = report(&data_path("quic-aioquic.pcap")).unwrap();
    let big = quic.iter().find(|f| f.name.as_deref() == Some("quic-big.example")).expect("big hello flow");
    assert_eq!(big.quic_version, Some(QuicVersion::V1));
    let v2 = quic.iter().find(|f| f.name.as_deref() == Some("quic-v2-big.example")).expect("v2 big hello flow");
    assert_eq!(v2.quic_version, Some(QuicVersion::V2));
    let tls = report(&data_path("tls-fragmented.pcap")).unwrap();
    assert_eq!(tls.iter().filter_map(|f| f.name.as_deref()).collect::<Vec<_>>(), ["records.example"]);
}

/// A one-frame classic pcap (Ethernet) around a UDP datagram from 10.0.0.1:5000 to 10.0.0.2:443.
fn pcap_with_udp(payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut frame = vec![0u8; 12];
    frame.extend_from_slice(&[0x08, 0x00, 0x45, 0, (ip_len >> 8) as u8, ip_len as u8, 0, 0, 0, 0, 64, 17, 0, 0]);
    frame.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0x13, 0x88, 0x01, 0xbb]);
    frame.extend_from_slice(&[(udp_len >> 8) as u8, udp_len as u8, 0, 0]);
    frame.extend_from_slice(payload);
    let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0];
    file.extend_from_slice(&[0; 8]);
    file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    file.extend_from_slice(&frame);
    file
}

#[test]
fn v2_initial_built_in_memory_is_reported_like_tshark_reads_it() {
    let vectors = common::vectors("rfc9001-a2-client-initial.txt");
    let packet = client_initial(QuicVersion::V2, &vectors["dcid"], &[], 2, &vectors["crypto_frame"], 1200);
    let flows = report_bytes(&pcap_with_udp(&packet)).unwrap();
    assert_eq!(flows.len(), 1);
    assert_eq!((flows[0].name.as_deref(), flows[0].quic_version), (Some("example.com"), Some(QuicVersion::V2)));
    assert_eq!(flows[0].alpn, ["alpn"]);
}

#[test]
fn table_prints_one_aligned_row_per_flow() {
    let flows = report(&data_path("tls-http.pcap")).unwrap();
    let text = Table(&flows).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), flows.len() + 1);
    assert!(lines[0].starts_with("FRAME"));
    let row = lines.iter().find(|l| l.contains("tls-curl.example")).expect("TLS row");
    assert!(row.contains("tls") && row.contains("h2,http/1.1"), "{row}");
    let name_column = lines[0].find("NAME").unwrap();
    assert_eq!(row.find("tls-curl.example"), Some(name_column), "{text}");
}

#[test]
fn unreadable_captures_are_errors_that_name_the_file() {
    assert!(report_bytes(b"not a capture at all").is_err());
    assert!(report_bytes(&[]).is_err());
    let missing = data_path("no-such.pcap");
    let err = report(&missing).unwrap_err().to_string();
    assert!(err.contains("no-such.pcap"), "{err}");
    let mut wrong_link = pcap_with_udp(b"x");
    wrong_link[20] = 147; // LINKTYPE_USER0
    assert!(report_bytes(&wrong_link).unwrap_err().to_string().contains("link type 147"));
}
