//! Workers: transparent sockets in the steering sockmap, accepting proxied TCP connections and relaying them
//! through the node their flow's group picks (SOCKS5, HTTP CONNECT, or direct from the gateway), with the
//! original destination (the accepted socket's local address) as the target.
//!
//! Each core's loop ([`super::pump`]) accepts from its own listeners, sniffs, routes and dials each connection
//! without blocking ([`super::setup`]) and then moves the bytes with splice(2) until both directions end.

use std::{
    io,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use arc_swap::ArcSwap;
use config::rules::{Compiled, L4, Packet, PacketDirection, Target as RuleTarget, Verdict};
use datapath_abi::{Direction, FlowTag, route::outbound};
use relay::{outbound::Outbounds, sniff::route::DialMode};
use socket2::{Domain, Socket, Type};
use tracing::{debug, warn};

use dns::service::sys;

use super::dns::{DNS_PORT, Intercept, serve_tcp};
use crate::{flow_table::FlowTable, links::LinkReader, routing::Router};

/// How a sniffed name routes: the userspace matcher over the running rules, `dial_mode`, `sniffing_timeout`.
/// Replaced on reload.
#[derive(Debug)]
pub struct Sniffing {
    /// The running routing rules, for re-routing by the sniffed name.
    pub rules: Compiled,
    /// `dial_mode`.
    pub dial_mode: DialMode,
    /// `sniffing_timeout`.
    pub timeout: Duration,
}

/// How long an outbound dial may take (dae: 8 s).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(8);
/// Pending connections a worker's listener queues.
const LISTEN_BACKLOG: i32 = 1024;

/// A transparent TCP listener on an ephemeral port (`bpf_sk_assign` does not care which) for one family.
pub fn transparent_listener(ipv6: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(if ipv6 { Domain::IPV6 } else { Domain::IPV4 }, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if ipv6 {
        socket.set_only_v6(true)?;
        sys::set_int_opt(socket.as_raw_fd(), libc::SOL_IPV6, libc::IPV6_TRANSPARENT, 1)?;
    } else {
        sys::set_int_opt(socket.as_raw_fd(), libc::SOL_IP, libc::IP_TRANSPARENT, 1)?;
    }
    let any: SocketAddr = if ipv6 { "[::]:0".parse().expect("literal") } else { "0.0.0.0:0".parse().expect("literal") };
    socket.bind(&any.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// What relaying needs: the nodes and groups, the flow table (which group a flow was routed to) and counters.
#[derive(Debug)]
pub struct RelayContext {
    /// Nodes, groups and their health.
    pub outbounds: Arc<Outbounds>,
    /// The flow table, shared with the kernel.
    pub flows: Arc<FlowTable>,
    /// The seed the kernel hashes flow keys with.
    pub seed: u64,
    /// The mark of the daemon's own sockets (direct dials).
    pub daemon_mark: u32,
    /// Counters.
    pub counters: RelayCounters,
    /// Sniffing and re-routing by name.
    pub sniffing: ArcSwap<Sniffing>,
    /// The kernel routing state: which names DNS answers gave an address (`dial_mode: domain` verification).
    pub router: Arc<std::sync::Mutex<Router>>,
    /// How the UDP workers read their steering sockets.
    pub udp_recv: super::udp::UdpRecv,
    /// Whether session sockets ask for merged (GRO) receives.
    pub udp_gro: super::udp::UdpGro,
    /// How relayed connections' bytes move.
    pub tcp_relay: super::pump::TcpRelay,
}

impl RelayContext {
    /// The group the kernel routed a flow to, if its decision is a group.
    pub fn group_of(&self, tag: &FlowTag) -> Option<&relay::outbound::Group> {
        (outbound::GROUP_BASE..=outbound::GROUP_MAX)
            .contains(&tag.outbound)
            .then(|| self.outbounds.groups().get(usize::from(tag.outbound - outbound::GROUP_BASE)))?
    }

    /// Whether DNS answers gave `ip` the name `name` (`dial_mode: domain` verification).
    pub fn name_verified(&self, ip: std::net::IpAddr, name: &str) -> bool {
        let router = self.router.lock().unwrap_or_else(|e| e.into_inner());
        router.names_of(&datapath_abi::flow::mapped(ip)).is_some_and(|names| names.iter().any(|known| known == name))
    }
}

/// What the relay counts (`dae stats`).
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Connections relayed (dial succeeded).
    pub relayed: AtomicU64,
    /// Connections refused because their group had no alive node.
    pub no_alive_node: AtomicU64,
    /// Dials (direct or through a node) that failed.
    pub dial_failed: AtomicU64,
    /// Steered connections without a flow tag (relayed direct).
    pub untagged: AtomicU64,
    /// Connections whose first bytes gave a name (TLS SNI, HTTP Host).
    pub sniffed: AtomicU64,
    /// Connections the sniffed name routed elsewhere than the kernel did.
    pub rerouted: AtomicU64,
}

/// Takes a steered connection from a core's transparent listener: one to port 53 goes to the DNS forwarder when it
/// runs (on a thread per connection: DNS over TCP from LAN clients is rare and short); any other is handed back
/// to be set up and relayed on the accepting core ([`super::pump`]).
pub(super) fn accepted(
    client: TcpStream,
    peer: SocketAddr,
    dns: Option<&Arc<Intercept>>,
    links: &LinkReader,
) -> Option<(TcpStream, SocketAddr)> {
    let Some(intercept) = dns.filter(|_| client.local_addr().is_ok_and(|a| a.port() == DNS_PORT)) else {
        return Some((client, peer));
    };
    let (intercept, mut links) = (Arc::clone(intercept), links.clone());
    let spawned = std::thread::Builder::new().name("dae-dns-tcp".into()).spawn(move || {
        if let Err(e) = serve_tcp(client, peer, &intercept, &mut links) {
            debug!(%peer, error = %e, "DNS over TCP ended");
        }
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start a thread for DNS over TCP");
    }
    None
}

pub(super) fn same_choice(a: &Choice<'_>, b: &Choice<'_>) -> bool {
    match (a, b) {
        (Choice::Group(a), Choice::Group(b)) => a.name == b.name,
        (Choice::Direct, Choice::Direct) | (Choice::Block, Choice::Block) => true,
        _ => false,
    }
}

/// Refuses a client: an RST rather than a FIN, so it does not wait for data that will never come.
pub(super) fn refuse(client: &TcpStream) {
    if let Ok(dup) = client.try_clone() {
        let _ = Socket::from(dup).set_linger(Some(Duration::ZERO));
    }
}

/// Where a connection (or a UDP flow) goes.
pub(super) enum Choice<'a> {
    Group(&'a relay::outbound::Group),
    Direct,
    Block,
}

/// The kernel's choice for the flow.
pub(super) fn kernel_choice<'a>(cx: &'a RelayContext, tag: Option<&FlowTag>) -> Option<Choice<'a>> {
    cx.group_of(tag?).map(Choice::Group)
}

/// Routes again with a sniffed `name` through the userspace matcher (the packet as the kernel saw it, minus what
/// userspace does not know: MAC, DSCP, process name).
#[allow(clippy::too_many_arguments)]
pub(super) fn reroute<'a>(
    cx: &'a RelayContext,
    rules: &Compiled,
    tag: &FlowTag,
    peer: SocketAddr,
    target: SocketAddr,
    name: &str,
    l4: L4,
    links: &mut LinkReader,
) -> Option<Choice<'a>> {
    let (direction, ifindex) = if tag.direction == Direction::WanOut as u8 {
        (PacketDirection::WanOut, tag.egress_ifindex)
    } else {
        (PacketDirection::LanIn, tag.ingress_ifindex)
    };
    let interface = links.name(ifindex).map(str::to_owned);
    let domains = [name];
    let packet = Packet {
        direction,
        interface: interface.as_deref(),
        src: peer.ip(),
        dst: target.ip(),
        sport: peer.port(),
        dport: target.port(),
        l4,
        dscp: 0,
        mac: None,
        pname: None,
        domains: &domains,
    };
    match rules.route(&packet) {
        Verdict::Outbound(decided) => Some(match decided.target {
            RuleTarget::Direct => Choice::Direct,
            RuleTarget::Block => Choice::Block,
            RuleTarget::Group(group) => Choice::Group(cx.outbounds.group(&group)?),
        }),
        Verdict::Dns => None,
    }
}
