//! `dae sniff --pcap FILE`: run the sniffers over a capture and report, per flow, the protocol, SNI or Host,
//! ALPN and QUIC version. Operators use it to see why a domain rule did not match; tests use it as an oracle
//! against tshark's dissection of the same capture.
//!
//! Reads classic pcap (either byte order, micro- or nanosecond) and pcapng (with `pcap-file`), over Ethernet,
//! Linux cooked v1/v2 (`tshark -i any`), raw IP or BSD loopback links. Only client-to-server bytes are sniffed;
//! the client of a flow is the sender of its SYN (TCP) or of its first packet.

mod decode;
mod flows;

use std::{
    fmt,
    fs::File,
    io::{self, BufReader, Read},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use pcap_file::{
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
};

use self::{decode::Link, flows::Flows};
use super::{Protocol, quic::QuicVersion, route::Transport};

/// What the sniffers found in one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowReport {
    /// UDP or TCP.
    pub transport: Transport,
    /// The client: sender of the SYN, or of the flow's first packet.
    pub client: SocketAddr,
    /// The server.
    pub server: SocketAddr,
    /// Frame number (1-based, as tshark counts) of the flow's first packet.
    pub first_frame: u64,
    /// Packets in both directions.
    pub packets: u64,
    /// QUIC, TLS or HTTP once recognised, even without a name.
    pub protocol: Option<Protocol>,
    /// SNI (QUIC, TLS) or Host (HTTP), normalised.
    pub name: Option<String>,
    /// ALPN protocol names (QUIC, TLS).
    pub alpn: Vec<String>,
    /// The QUIC version of the Initial that carried the name.
    pub quic_version: Option<QuicVersion>,
    /// Why there is no name, when there is none (`no name`, `excluded port`, `not TLS or HTTP`, ...).
    pub note: Option<&'static str>,
}

impl FlowReport {
    fn new(transport: Transport, client: SocketAddr, server: SocketAddr, first_frame: u64) -> Self {
        Self {
            transport,
            client,
            server,
            first_frame,
            packets: 0,
            protocol: None,
            name: None,
            alpn: Vec::new(),
            quic_version: None,
            note: None,
        }
    }
}

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The capture file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The bytes are not a pcap or pcapng capture, or a record is damaged.
    #[error("{path}: {detail} (is it a pcap or pcapng file? `tshark -r FILE` reads both)")]
    Format {
        /// The capture file.
        path: PathBuf,
        /// What is wrong, from the reader.
        detail: String,
    },
    /// A classic pcap whose link type we cannot decode.
    #[error(
        "{path}: link type {linktype} is not supported (Ethernet, Linux cooked v1/v2, raw IP and BSD loopback are); \
         capture on an Ethernet interface or with `-i any`"
    )]
    LinkType {
        /// The capture file.
        path: PathBuf,
        /// Its LINKTYPE_* value.
        linktype: u32,
    },
}

/// Reads the capture at `path` and reports every UDP and TCP flow in order of first appearance.
pub fn report(path: &Path) -> Result<Vec<FlowReport>, Error> {
    let file = File::open(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    report_from(BufReader::new(file), path)
}

/// Like [`report`], for a capture already in memory (tests, fuzzing).
pub fn report_bytes(capture: &[u8]) -> Result<Vec<FlowReport>, Error> {
    report_from(capture, Path::new("<memory>"))
}

/// pcapng files start with a Section Header Block, type 0x0A0D0D0A (a palindrome: either byte order).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

fn report_from(mut reader: impl Read, path: &Path) -> Result<Vec<FlowReport>, Error> {
    let format = |e: pcap_file::PcapError| Error::Format { path: path.to_owned(), detail: e.to_string() };
    let mut magic = [0u8; 4];
    reader.read_exact(&mut magic).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    let reader = io::Cursor::new(magic).chain(reader);
    let mut flows = Flows::new();
    let mut frame = 0u64;
    let mut first_ts: Option<Duration> = None;
    let mut push = |link: Link, ts: Duration, data: &[u8]| {
        frame += 1;
        let start = *first_ts.get_or_insert(ts);
        if let Some(segment) = decode::decode(link, data) {
            flows.push(frame, ts.saturating_sub(start), segment);
        }
    };
    if magic == PCAPNG_MAGIC {
        let mut pcap = PcapNgReader::new(reader).map_err(format)?;
        // Link types of the current section's interfaces, by interface id.
        let mut links: Vec<Option<Link>> = Vec::new();
        while let Some(block) = pcap.next_block() {
            let (interface, ts, data) = match block.map_err(format)? {
                Block::SectionHeader(_) => {
                    links.clear();
                    continue;
                }
                Block::InterfaceDescription(i) => {
                    links.push(Link::from_linktype(u32::from(i.linktype)));
                    continue;
                }
                Block::EnhancedPacket(p) => (p.interface_id, p.timestamp, p.data),
                Block::SimplePacket(p) => (0, Duration::ZERO, p.data),
                Block::Packet(p) => (u32::from(p.interface_id), Duration::from_nanos(p.timestamp), p.data),
                _ => continue,
            };
            match links.get(interface as usize).copied().flatten() {
                Some(link) => push(link, ts, &data),
                // Frames of other link types (Bluetooth, USB, ...) in a multi-interface capture are counted, so
                // that frame numbers keep matching tshark's, and otherwise skipped.
                None => push(Link::RawIp, ts, &[]),
            }
        }
    } else {
        let mut pcap = PcapReader::new(reader).map_err(format)?;
        let linktype = u32::from(pcap.header().datalink);
        let link = Link::from_linktype(linktype).ok_or(Error::LinkType { path: path.to_owned(), linktype })?;
        while let Some(packet) = pcap.next_packet() {
            let packet = packet.map_err(format)?;
            push(link, packet.timestamp, &packet.data);
        }
    }
    Ok(flows.finish())
}

/// The reports as an aligned text table, one flow per line, for `dae sniff --pcap`.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a>(pub &'a [FlowReport]);

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<[String; 8]> = self
            .0
            .iter()
            .map(|r| {
                [
                    r.first_frame.to_string(),
                    match r.transport {
                        Transport::Tcp => "tcp".into(),
                        Transport::Udp => "udp".into(),
                    },
                    r.protocol.map_or_else(|| "-".into(), |p| p.to_string()),
                    format!("{} -> {}", r.client, r.server),
                    r.name.clone().unwrap_or_else(|| "-".into()),
                    if r.alpn.is_empty() { "-".into() } else { r.alpn.join(",") },
                    r.quic_version.map_or_else(|| "-".into(), |v| v.to_string()),
                    r.note.unwrap_or("").into(),
                ]
            })
            .collect();
        let header = ["FRAME", "L4", "PROTO", "FLOW", "NAME", "ALPN", "QUIC", "NOTE"].map(String::from);
        let mut widths = header.clone().map(|h| h.len());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
            writeln!(f, "{}", line.join("  ").trim_end())?;
        }
        Ok(())
    }
}
