//! Setting up a steered TCP connection on the relay loop of its core ([`super::pump`]): its flow tag is looked
//! up, its first bytes are sniffed when a name may change its route, the route is decided, and the outbound is
//! dialled — a non-blocking connect and proxy handshake ([`relay::outbound::Dialing`]) — each step advanced by
//! a readiness event or a deadline. A connection being set up is an entry in the loop's table, not a thread:
//! a slow proxy or a silent client costs memory, and a burst of connections costs no thread creation.
//!
//! One case still blocks, and runs on a thread of its own: a proxy named by host name, whose address the system
//! resolver (`getaddrinfo`, which has no non-blocking form) must find first.

use std::{
    io,
    net::{SocketAddr, TcpStream},
    sync::atomic::Ordering,
    time::Instant,
};

use config::rules::L4;
use datapath_abi::{FlowKey, FlowTag, flow::flow_hash};
use relay::{
    outbound::{Dialing, Node, NodeId, Target},
    sniff::{
        route::{DialTarget, Transport, decide, should_sniff},
        tcp::{TcpDecision, TcpSniffer},
    },
};
use tracing::{debug, warn};

use super::worker::{Choice, DIAL_TIMEOUT, RelayContext, kernel_choice, refuse, reroute, same_choice};
use crate::links::LinkReader;

/// Bytes of a client's first flight looked at for a name (a ClientHello with large key shares fits).
const SNIFF_BYTES: usize = 16 * 1024;

/// A connection being set up.
pub(super) struct Setup {
    client: TcpStream,
    peer: SocketAddr,
    /// The original destination.
    target: SocketAddr,
    key: FlowKey,
    tag: Option<FlowTag>,
    stage: Stage,
    /// When the current stage gives up: the sniffer's timeout, or the dial's.
    deadline: Instant,
}

enum Stage {
    /// Routing by the flow tag alone (no sniffing), then dialling.
    Route,
    /// Peeking at the client's first bytes (nothing is consumed: the relay forwards them).
    Sniff { sniffer: TcpSniffer, buf: Box<[u8]>, seen: usize },
    /// Dialling the outbound.
    Dial(Dialing),
    /// Dialled: the loop relays the connection now.
    Done,
}

/// What a step of the set-up came to.
pub(super) enum Advance {
    /// Waiting for a readiness event or the deadline.
    Wait,
    /// The connection was refused or its dial failed; the client has been answered with a reset.
    Ended,
    /// Dialled: relay the client ([`Setup::into_client`]) and this upstream.
    Relay(TcpStream),
    /// The dial must block (see the module documentation): run it on a thread, then relay.
    Blocking(BlockingDial),
}

/// A dial that must run on a thread: [`BlockingDial::run`] dials and returns the upstream to relay.
pub(super) struct BlockingDial {
    peer: SocketAddr,
    node: NodeId,
    target: SocketAddr,
    name: Option<(String, u16)>,
}

impl BlockingDial {
    /// Dials (blocking, within [`DIAL_TIMEOUT`]); on failure `client` is reset and the failure counted.
    pub(super) fn run(self, cx: &RelayContext, client: &TcpStream) -> Option<TcpStream> {
        let target = match &self.name {
            Some((name, port)) => Target::Domain { name, port: *port, addr: self.target },
            None => Target::Addr(self.target),
        };
        match cx.outbounds.dial_target(self.node, target, DIAL_TIMEOUT) {
            Ok(upstream) => {
                cx.counters.relayed.fetch_add(1, Ordering::Relaxed);
                Some(upstream)
            }
            Err(e) => {
                cx.counters.dial_failed.fetch_add(1, Ordering::Relaxed);
                debug!(peer = %self.peer, target = %self.target, error = %e, "dial failed");
                refuse(client);
                None
            }
        }
    }
}

/// Where the route sent the connection.
enum Plan {
    Refuse,
    Dial { node: Option<NodeId>, name: Option<(String, u16)> },
}

impl Setup {
    /// Takes a steered connection: looks up its flow tag and starts sniffing or dialling.
    pub(super) fn begin(
        cx: &RelayContext,
        client: TcpStream,
        peer: SocketAddr,
        links: &mut LinkReader,
        now: Instant,
    ) -> io::Result<(Self, Advance)> {
        client.set_nonblocking(true)?;
        // A transparent accept keeps the client's original destination as the local address.
        let target = client.local_addr()?;
        let key = FlowKey::new(peer.ip(), peer.port(), target.ip(), target.port(), libc::IPPROTO_TCP as u8);
        let tag = cx.flows.lookup(&key, cx.seed);
        if tag.is_none() {
            cx.counters.untagged.fetch_add(1, Ordering::Relaxed);
        }
        let sniffing = cx.sniffing.load();
        let sniff = tag.is_some()
            && matches!(kernel_choice(cx, tag.as_ref()), Some(Choice::Group(_)))
            && should_sniff(sniffing.dial_mode, Transport::Tcp, target.port(), false, sniffing.timeout);
        let stage = if sniff {
            let sniffer = TcpSniffer::new(target.port(), sniffing.timeout, now);
            Stage::Sniff { sniffer, buf: vec![0; SNIFF_BYTES].into_boxed_slice(), seen: 0 }
        } else {
            Stage::Route
        };
        let mut setup = Self { client, peer, target, key, tag, stage, deadline: now };
        let advance = setup.advance(cx, links, now);
        Ok((setup, advance))
    }

    /// The client's socket, once the set-up is over.
    pub(super) fn into_client(self) -> TcpStream {
        self.client
    }

    /// The client's socket.
    pub(super) fn client(&self) -> &TcpStream {
        &self.client
    }

    /// The socket being dialled, once the dial started.
    pub(super) fn upstream(&self) -> Option<&TcpStream> {
        match &self.stage {
            Stage::Dial(dialing) => Some(dialing.stream()),
            Stage::Route | Stage::Sniff { .. } | Stage::Done => None,
        }
    }

    /// When the current stage gives up.
    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Advances on a readiness event of either socket, or at the deadline.
    pub(super) fn advance(&mut self, cx: &RelayContext, links: &mut LinkReader, now: Instant) -> Advance {
        match &mut self.stage {
            Stage::Route => self.dial(cx, links, None, now),
            Stage::Done => Advance::Wait,
            Stage::Sniff { sniffer, buf, seen } => {
                match self.client.peek(buf) {
                    Ok(n) => *seen = n,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                    // The client is gone: nothing to relay.
                    Err(_) => return Advance::Ended,
                }
                let name = match sniffer.poll(&buf[..*seen], now) {
                    TcpDecision::NeedMore { deadline } if *seen < buf.len() => {
                        self.deadline = deadline;
                        return Advance::Wait;
                    }
                    TcpDecision::Name { name, .. } => Some(name),
                    _ => None,
                };
                self.dial(cx, links, name, now)
            }
            Stage::Dial(dialing) => match dialing.poll() {
                Ok(true) => {
                    let Stage::Dial(dialing) = std::mem::replace(&mut self.stage, Stage::Done) else {
                        unreachable!("matched above")
                    };
                    cx.counters.relayed.fetch_add(1, Ordering::Relaxed);
                    Advance::Relay(dialing.into_stream())
                }
                Ok(false) if now < self.deadline => Advance::Wait,
                Ok(false) => {
                    self.fail(cx, &io::Error::new(io::ErrorKind::TimedOut, "the dial took longer than its timeout"))
                }
                Err(e) => self.fail(cx, &e),
            },
        }
    }

    /// Routes (with the sniffed `name`, if any) and starts the dial.
    fn dial(&mut self, cx: &RelayContext, links: &mut LinkReader, name: Option<String>, now: Instant) -> Advance {
        let (node, name) = match self.plan(cx, links, name) {
            Plan::Refuse => {
                refuse(&self.client);
                return Advance::Ended;
            }
            Plan::Dial { node, name } => (node, name),
        };
        let target = match &name {
            Some((name, port)) => Target::Domain { name, port: *port, addr: self.target },
            None => Target::Addr(self.target),
        };
        let started = match node {
            Some(id) => Dialing::start(cx.outbounds.node(id), target, cx.outbounds.mark()),
            None => Dialing::start(&Node::Direct, target, cx.daemon_mark),
        };
        match started {
            Ok(Some(dialing)) => {
                self.stage = Stage::Dial(dialing);
                self.deadline = now + DIAL_TIMEOUT;
                self.advance(cx, links, now)
            }
            Ok(None) => match node {
                Some(node) => Advance::Blocking(BlockingDial { peer: self.peer, node, target: self.target, name }),
                // A direct dial has an address: it never needs the resolver.
                None => self.fail(cx, &io::Error::other("a direct dial asked for name resolution")),
            },
            Err(e) => self.fail(cx, &e),
        }
    }

    /// The route: the kernel's decision, or the one a sniffed name gives (`dial_mode`), and the node to dial.
    fn plan(&self, cx: &RelayContext, links: &mut LinkReader, sniffed: Option<String>) -> Plan {
        let (peer, target) = (self.peer, self.target);
        let mut choice = kernel_choice(cx, self.tag.as_ref()).unwrap_or(Choice::Direct);
        let mut name = None;
        if let (Some(sniffed), Some(tag)) = (sniffed.as_deref(), &self.tag) {
            cx.counters.sniffed.fetch_add(1, Ordering::Relaxed);
            let sniffing = cx.sniffing.load();
            let verified = cx.name_verified(target.ip(), sniffed);
            let decision = decide(sniffing.dial_mode, Transport::Tcp, target, Some(sniffed), verified);
            if let Some(by) = decision.reroute
                && let Some(again) = reroute(cx, &sniffing.rules, tag, peer, target, by, L4::Tcp, links)
            {
                if !same_choice(&again, &choice) {
                    cx.counters.rerouted.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, %target, name = by, "re-routed by the sniffed name");
                }
                choice = again;
            }
            if let DialTarget::Domain { name: dial_name, port } = decision.dial {
                name = Some((dial_name.to_owned(), port));
            }
        }
        match choice {
            Choice::Group(group) => match group.pick(cx.outbounds.health(), u64::from(flow_hash(&self.key, cx.seed))) {
                Ok(node) => {
                    debug!(%peer, %target, group = %group.name, node = cx.outbounds.node_name(node), "relaying");
                    Plan::Dial { node: Some(node), name }
                }
                Err(e) => {
                    cx.counters.no_alive_node.fetch_add(1, Ordering::Relaxed);
                    warn!(%peer, %target, group = %group.name, "{e}: connection refused");
                    Plan::Refuse
                }
            },
            // Direct (no tag: evicted, or steered before a reload; or a name routed it direct): the gateway's own
            // connection to the original address.
            Choice::Direct => Plan::Dial { node: None, name: None },
            Choice::Block => Plan::Refuse,
        }
    }

    fn fail(&mut self, cx: &RelayContext, error: &io::Error) -> Advance {
        cx.counters.dial_failed.fetch_add(1, Ordering::Relaxed);
        debug!(peer = %self.peer, target = %self.target, %error, "dial failed");
        refuse(&self.client);
        Advance::Ended
    }
}
