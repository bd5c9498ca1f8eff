//! Groups decoded packets into flows and runs the sniffers on each flow's client-to-server bytes: QUIC through
//! the same [`QuicSessions`] the gateway uses, TCP through [`TcpSniffer`] over the reassembled stream.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::{
    FlowReport,
    decode::{Segment, Transport as Wire},
};
use crate::sniff::{
    Protocol,
    quic::{Outcome, QuicSessions},
    route::Transport,
    tcp::{GiveUpReason, TcpDecision, TcpSniffer},
};

/// Offline there is no client to keep waiting: a TCP flow's name counts however late it arrives in the capture.
const OFFLINE_SNIFF_TIMEOUT: Duration = Duration::from_secs(3600);
/// Client bytes buffered per TCP flow, past any ClientHello or request head we accept.
const MAX_TCP_STREAM: usize = 64 * 1024;
/// Out-of-order TCP segments buffered per flow.
const MAX_OUT_OF_ORDER: usize = 64;

/// The TCP client-to-server byte stream, reassembled by sequence number.
#[derive(Debug)]
struct TcpStream {
    /// Sequence number of stream byte 0, from the SYN or the first data segment.
    start: Option<u32>,
    data: Vec<u8>,
    out_of_order: BTreeMap<usize, Vec<u8>>,
    sniffer: TcpSniffer,
}

impl TcpStream {
    fn push(&mut self, seq: u32, syn: bool, payload: &[u8]) {
        // The SYN takes one sequence number; data on a SYN (TCP Fast Open) follows it.
        let seq = if syn { *self.start.get_or_insert(seq.wrapping_add(1)) } else { seq };
        if payload.is_empty() {
            return;
        }
        let start = *self.start.get_or_insert(seq);
        let at = seq.wrapping_sub(start) as usize;
        if at >= MAX_TCP_STREAM {
            return;
        }
        if at > self.data.len() {
            if self.out_of_order.len() < MAX_OUT_OF_ORDER {
                self.out_of_order.insert(at, payload.to_vec());
            }
            return;
        }
        self.append(at, payload);
        while let Some(entry) = self.out_of_order.first_entry() {
            if *entry.key() > self.data.len() {
                break;
            }
            let (at, bytes) = entry.remove_entry();
            self.append(at, &bytes);
        }
    }

    /// Appends the part of `payload` (at stream offset `at` <= current length) not yet in the stream.
    fn append(&mut self, at: usize, payload: &[u8]) {
        let new = payload.get(self.data.len() - at..).unwrap_or_default();
        let room = MAX_TCP_STREAM.saturating_sub(self.data.len());
        self.data.extend_from_slice(&new[..new.len().min(room)]);
    }
}

#[derive(Debug)]
enum State {
    Udp,
    Tcp(Box<TcpStream>),
}

#[derive(Debug)]
struct Flow {
    report: FlowReport,
    state: State,
    decided: bool,
}

/// All flows of a capture, in order of their first packet.
#[derive(Debug)]
pub(crate) struct Flows {
    flows: Vec<Flow>,
    index: HashMap<(SocketAddr, SocketAddr, Transport), usize>,
    quic: QuicSessions<usize, Vec<u8>>,
    epoch: Instant,
}

impl Flows {
    pub(crate) fn new() -> Self {
        Self { flows: Vec::new(), index: HashMap::new(), quic: QuicSessions::default(), epoch: Instant::now() }
    }

    /// Adds frame number `frame` (1-based) captured at `ts` (from the capture's start of time).
    pub(crate) fn push(&mut self, frame: u64, ts: Duration, seg: Segment<'_>) {
        // A damaged timestamp far in the future must not overflow the clock.
        let now = self.epoch.checked_add(ts).unwrap_or(self.epoch);
        let transport = match seg.transport {
            Wire::Udp { .. } => Transport::Udp,
            Wire::Tcp { .. } => Transport::Tcp,
        };
        let (id, from_client) = match self.index.get(&(seg.src, seg.dst, transport)) {
            Some(&id) => (id, true),
            None => match self.index.get(&(seg.dst, seg.src, transport)) {
                Some(&id) => (id, false),
                None => (self.open(frame, &seg, transport, now), true),
            },
        };
        let flow = &mut self.flows[id];
        flow.report.packets += 1;
        if !from_client || flow.decided {
            return;
        }
        match (&mut flow.state, seg.transport) {
            (State::Udp, Wire::Udp { payload }) => {
                let verdict = self.quic.on_datagram(id, payload.to_vec(), now);
                decide_quic(flow, verdict.outcome);
            }
            (State::Tcp(stream), Wire::Tcp { seq, syn, payload, .. }) => {
                stream.push(seq, syn, payload);
                let decision = stream.sniffer.poll(&stream.data, now);
                decide_tcp(flow, decision);
            }
            _ => {}
        }
    }

    fn open(&mut self, frame: u64, seg: &Segment<'_>, transport: Transport, now: Instant) -> usize {
        // A SYN+ACK seen first means the capture missed the SYN: the receiver is the client.
        let (client, server) = match seg.transport {
            Wire::Tcp { syn: true, ack: true, .. } => (seg.dst, seg.src),
            _ => (seg.src, seg.dst),
        };
        let state = match transport {
            Transport::Udp => State::Udp,
            Transport::Tcp => State::Tcp(Box::new(TcpStream {
                start: None,
                data: Vec::new(),
                out_of_order: BTreeMap::new(),
                sniffer: TcpSniffer::new(server.port(), OFFLINE_SNIFF_TIMEOUT, now),
            })),
        };
        let id = self.flows.len();
        self.flows.push(Flow { report: FlowReport::new(transport, client, server, frame), state, decided: false });
        self.index.insert((client, server, transport), id);
        id
    }

    /// The reports, settling flows still undecided at the end of the capture.
    pub(crate) fn finish(mut self) -> Vec<FlowReport> {
        for flow in &mut self.flows {
            if flow.decided {
                continue;
            }
            match &flow.state {
                State::Udp if flow.report.protocol.is_some() => flow.report.note = Some("capture ended mid-handshake"),
                State::Udp => {}
                State::Tcp(stream) => {
                    flow.report.protocol = stream.sniffer.protocol();
                    flow.report.note = Some(if stream.data.is_empty() { "no client data" } else { "incomplete" });
                }
            }
        }
        self.flows.into_iter().map(|f| f.report).collect()
    }
}

fn decide_quic(flow: &mut Flow, outcome: Outcome) {
    let report = &mut flow.report;
    match outcome {
        Outcome::NeedMore => {
            report.protocol = Some(Protocol::Quic);
            return;
        }
        Outcome::Name { sni, alpn, version } => {
            report.protocol = Some(Protocol::Quic);
            report.name = Some(sni);
            report.alpn = alpn;
            report.quic_version = Some(version);
        }
        Outcome::NoName => {
            report.protocol = Some(Protocol::Quic);
            report.note = Some("no name");
        }
        Outcome::NotQuic => report.note = Some("not a QUIC Initial"),
    }
    flow.decided = true;
}

fn decide_tcp(flow: &mut Flow, decision: TcpDecision) {
    let report = &mut flow.report;
    if let State::Tcp(stream) = &flow.state {
        report.protocol = stream.sniffer.protocol();
    }
    match decision {
        TcpDecision::NeedMore { .. } => return,
        TcpDecision::Name { protocol, name, alpn } => {
            report.protocol = Some(protocol);
            report.name = Some(name);
            report.alpn = alpn;
        }
        TcpDecision::GiveUp(reason) => {
            report.note = Some(match reason {
                GiveUpReason::Disabled => "sniffing disabled",
                GiveUpReason::ExcludedPort => "excluded port",
                GiveUpReason::Timeout => "timeout",
                GiveUpReason::NotTlsOrHttp => "not TLS or HTTP",
                GiveUpReason::Malformed => "malformed",
                GiveUpReason::NoName => "no name",
            })
        }
    }
    flow.decided = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> TcpStream {
        let sniffer = TcpSniffer::new(443, OFFLINE_SNIFF_TIMEOUT, Instant::now());
        TcpStream { start: None, data: Vec::new(), out_of_order: BTreeMap::new(), sniffer }
    }

    #[test]
    fn out_of_order_and_retransmitted_segments_rebuild_the_client_stream() {
        let mut s = stream();
        s.push(999, true, b"");
        s.push(1005, false, b" world");
        s.push(1000, false, b"hel");
        s.push(1000, false, b"hello");
        s.push(1003, false, b"lo");
        assert_eq!(s.data, b"hello world");
    }

    #[test]
    fn data_on_a_syn_and_sequence_wrap_are_kept() {
        let mut s = stream();
        s.push(u32::MAX - 1, true, b"ab");
        s.push(1, false, b"cd");
        assert_eq!(s.data, b"abcd");
    }

    #[test]
    fn far_future_segments_are_not_buffered_past_the_bound() {
        let mut s = stream();
        s.push(0, true, b"");
        s.push(1 + MAX_TCP_STREAM as u32, false, b"x");
        for i in 0..(2 * MAX_OUT_OF_ORDER as u32) {
            s.push(100 + i * 10, false, b"y");
        }
        assert!(s.out_of_order.len() <= MAX_OUT_OF_ORDER);
        assert!(s.data.is_empty());
    }
}
