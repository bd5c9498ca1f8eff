//! The gateway: steering proxied flows to userspace workers and relaying them.
//!
//! One pinned thread per core ([`pump`]) serves that core's steering sockets: it accepts steered TCP connections
//! from its transparent listeners, sets them up ([`setup`]: sniff, route, dial through the node the group picks,
//! [`worker`]) and splices them; it relays the core's UDP in sessions ([`udp`], with GSO/GRO, [`gso`], and the
//! io_uring steering receive, [`uring`]); intercepted DNS goes to the forwarder ([`dns`]). Steered packets reach
//! the sockets by policy routing ([`policy`]); gateway-originated flows through a local device ([`local`]);
//! reassembled fragmented datagrams through `sk_lookup` ([`fragments`]).

pub mod dns;
pub mod fragments;
pub mod gso;
pub mod local;
pub mod policy;
pub mod pump;
mod setup;
pub mod udp;
pub mod uring;
pub mod worker;

use std::sync::Arc;

use aya::{
    Ebpf,
    maps::{Array, MapData, SockMap},
};
use datapath_abi::{
    names::{MAP_STEER_CONFIG, MAP_STEER_SOCKS},
    steer::{MAX_WORKERS, STEER_F_DNS, STEER_F_REASM, SteerConfig, steer_slot},
};
use tracing::{info, warn};

use crate::links::LinkCache;

/// Steering could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A map is missing or of another type.
    #[error("steering map {0} missing or of another type")]
    Map(&'static str),
    /// A map update failed.
    #[error("steering map {name}: {source}")]
    Op {
        /// Map.
        name: &'static str,
        /// Cause.
        source: aya::maps::MapError,
    },
    /// A worker socket could not be created.
    #[error("worker socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// The running workers and the steering maps.
pub struct Gateway {
    config: Array<MapData, SteerConfig>,
    steer: SteerConfig,
    _socks: SockMap<MapData>,
    /// Intercepted DNS, when the forwarder runs.
    pub dns: Option<Arc<dns::Intercept>>,
    /// Outbounds and relay counters.
    pub relay: Arc<worker::RelayContext>,
    /// UDP relay counters (every worker).
    pub udp: Arc<udp::UdpCounters>,
    /// The per-core loops (TCP set-up and relay, UDP).
    pub pumps: Arc<pump::Pumps>,
    _checker: relay::outbound::Checker,
    /// The mark steered packets carry.
    pub tproxy_mark: u32,
    /// The mark of the daemon's own sockets.
    pub daemon_mark: u32,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("workers", &self.steer.workers).finish_non_exhaustive()
    }
}

impl Gateway {
    /// Creates one worker per core (at most `MAX_WORKERS`), puts their transparent sockets into the sockmap and
    /// tells the kernel to steer; with `dns`, LAN DNS is steered to the workers too and handed to the forwarder.
    pub fn start(
        ebpf: &mut Ebpf,
        tproxy_mark: u32,
        daemon_mark: u32,
        relay: Arc<worker::RelayContext>,
        dns: Option<Arc<dns::Intercept>>,
        links: &LinkCache,
    ) -> Result<Self, GatewayError> {
        let checker = relay.outbounds.spawn_checker()?;
        let config = ebpf.take_map(MAP_STEER_CONFIG).ok_or(GatewayError::Map(MAP_STEER_CONFIG))?;
        let socks = ebpf.take_map(MAP_STEER_SOCKS).ok_or(GatewayError::Map(MAP_STEER_SOCKS))?;
        let mut config: Array<MapData, SteerConfig> =
            Array::try_from(config).map_err(|source| GatewayError::Op { name: MAP_STEER_CONFIG, source })?;
        let mut socks: SockMap<MapData> =
            SockMap::try_from(socks).map_err(|source| GatewayError::Op { name: MAP_STEER_SOCKS, source })?;
        let count = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_WORKERS as usize) as u32;
        let udp = Arc::new(udp::UdpCounters::default());
        let mut cores = Vec::new();
        for w in 0..count {
            let mut core = pump::CoreSockets::default();
            for ipv6 in [false, true] {
                let listener = worker::transparent_listener(ipv6)?;
                socks
                    .set(steer_slot(w, ipv6, false), &listener, 0)
                    .map_err(|source| GatewayError::Op { name: MAP_STEER_SOCKS, source })?;
                core.listeners.push(listener);
                let socket = udp::steering_socket(ipv6, relay.udp_gro == udp::UdpGro::On)?;
                socks
                    .set(steer_slot(w, ipv6, true), &socket, 0)
                    .map_err(|source| GatewayError::Op { name: MAP_STEER_SOCKS, source })?;
                let (cx, counters, dns, links) = (Arc::clone(&relay), Arc::clone(&udp), dns.clone(), links.reader());
                core.udp.push(udp::UdpSeed { socket, cx, counters, dns, links });
            }
            cores.push(core);
        }
        let pumps = Arc::new(pump::Pumps::with_setup(Arc::clone(&relay), links, cores, dns.clone())?);
        let flags = if dns.is_some() { STEER_F_DNS } else { 0 };
        let steer = SteerConfig { workers: count, tproxy_mark, daemon_mark, flags, local_ifindex: 0 };
        config.set(0, steer, 0).map_err(|source| GatewayError::Op { name: MAP_STEER_CONFIG, source })?;
        info!(
            workers = count,
            tproxy_mark,
            daemon_mark,
            dns = dns.is_some(),
            "steering proxied LAN flows to userspace"
        );
        for group in relay.outbounds.groups().iter().filter(|group| group.nodes.is_empty()) {
            warn!(group = %group.name, "group has no node: connections routed to it are refused");
        }
        Ok(Self { config, steer, _socks: socks, dns, relay, udp, pumps, _checker: checker, tproxy_mark, daemon_mark })
    }

    /// The userspace counters: TCP relay, UDP sessions, intercepted DNS and the forwarder (summed over workers).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let (tcp, udp) = (&self.relay.counters, &self.udp);
        let mut counters = vec![
            ("relay_tcp_relayed", tcp.relayed.load(Relaxed)),
            ("relay_no_alive_node", tcp.no_alive_node.load(Relaxed)),
            ("relay_dial_failed", tcp.dial_failed.load(Relaxed)),
            ("relay_untagged", tcp.untagged.load(Relaxed)),
            ("relay_sniffed", tcp.sniffed.load(Relaxed)),
            ("relay_rerouted", tcp.rerouted.load(Relaxed)),
            ("relay_tcp_active", self.pumps.counters.active.load(Relaxed)),
            ("relay_tcp_bytes", self.pumps.counters.bytes.load(Relaxed)),
            ("relay_tcp_idle_closed", self.pumps.counters.idle_closed.load(Relaxed)),
            ("relay_tcp_errors", self.pumps.counters.errors.load(Relaxed)),
            ("udp_sessions", udp.sessions.load(Relaxed)),
            ("udp_sessions_active", udp.active.load(Relaxed)),
            ("udp_sessions_expired", udp.expired.load(Relaxed)),
            ("udp_forwarded", udp.forwarded.load(Relaxed)),
            ("udp_replied", udp.replied.load(Relaxed)),
            ("udp_dropped", udp.dropped.load(Relaxed)),
            ("udp_gso_sends", udp.gso_sends.load(Relaxed)),
            ("udp_gro_receives", udp.gro_receives.load(Relaxed)),
            ("udp_steer_gro_receives", udp.steer_gro_receives.load(Relaxed)),
            ("udp_reply_reads", udp.reply_reads.load(Relaxed)),
            ("udp_associations_failed", udp.associations_failed.load(Relaxed)),
            ("udp_recv_ring_empty", udp.recv_ring_empty.load(Relaxed)),
            ("udp_quic_sniffed", udp.quic_sniffed.load(Relaxed)),
            ("udp_quic_rerouted", udp.quic_rerouted.load(Relaxed)),
        ];
        if let Some(dns) = &self.dns {
            let stats = dns.handle.load().worker_stats();
            let sum = |f: fn(&::dns::service::WorkerStats) -> u64| stats.iter().map(f).sum::<u64>();
            counters.extend([
                ("dns_intercepted", dns.submitted.load(Relaxed)),
                ("dns_intercept_refused", dns.refused.load(Relaxed)),
                ("dns_answers_undelivered", dns.replies.undelivered.load(Relaxed)),
                ("dns_queries", sum(|s| s.core.queries)),
                ("dns_cache_hits", sum(|s| s.core.cache_hits)),
                ("dns_servfail", sum(|s| s.core.servfail)),
                ("dns_refused_overload", sum(|s| s.core.refused_overload)),
                ("dns_upstream_sent", sum(|s| s.core.upstream_sent)),
            ]);
        }
        counters
    }

    /// Steers gateway-originated proxied flows through the local device `ifindex` (0: not at all).
    pub fn set_local_ifindex(&mut self, ifindex: u32) -> Result<(), GatewayError> {
        self.steer.local_ifindex = ifindex;
        self.publish()
    }

    /// Steers fragmented UDP datagrams of proxied flows (once the `sk_lookup` program that hands their
    /// reassembled form to the workers is attached: [`fragments::attach`]).
    pub fn steer_fragments(&mut self) -> Result<(), GatewayError> {
        self.steer.flags |= STEER_F_REASM;
        self.publish()
    }

    /// Writes the steering configuration the kernel programs read.
    fn publish(&mut self) -> Result<(), GatewayError> {
        self.config.set(0, self.steer, 0).map_err(|source| GatewayError::Op { name: MAP_STEER_CONFIG, source })
    }

    /// Stops steering (the kernel lets proxied flows pass untouched again); what is being relayed goes on until
    /// the gateway is dropped.
    pub fn stop(&mut self) {
        let _ = self.config.set(0, SteerConfig::default(), 0);
    }
}
