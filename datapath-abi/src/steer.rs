//! Steering proxied flows to the userspace workers.
//!
//! tc marks every packet of a flow whose decision is a proxy group with [`SteerConfig::tproxy_mark`] (policy
//! routing delivers marked packets locally) and, on a flow's first packet (TCP SYN, every UDP datagram), assigns
//! it with `bpf_sk_assign` to the transparent socket of one worker, chosen by flow hash so a flow always lands
//! on the same worker. The sockets sit in the `STEER_SOCKS` sockmap at [`steer_slot`].

use crate::{assert_layout, assert_offset};

/// Most workers (one per core).
pub const MAX_WORKERS: u32 = 64;
/// Sockets per worker: TCP/IPv4, TCP/IPv6, UDP/IPv4, UDP/IPv6.
pub const SOCKS_PER_WORKER: u32 = 4;
/// dae's tproxy mark (0x8000000): policy routing sends packets carrying it to the local table.
pub const DEFAULT_TPROXY_MARK: u32 = 0x0800_0000;
/// The mark on the daemon's own outbound sockets: never routed, never looped.
pub const DEFAULT_DAEMON_MARK: u32 = 0x0400_0000;
/// The routing table of the local-delivery route (dae uses 2023).
pub const TPROXY_TABLE: u32 = 2023;

/// The sockmap slot of `worker`'s socket for a family and transport.
pub const fn steer_slot(worker: u32, ipv6: bool, udp: bool) -> u32 {
    worker * SOCKS_PER_WORKER + (ipv6 as u32) + 2 * (udp as u32)
}

/// `STEER_CONFIG[0]`.
///
/// Layout (20 bytes, align 4): `workers u32 (0: no userspace, proxied flows pass untouched), tproxy_mark u32,
/// daemon_mark u32, flags u32 (STEER_F_*), local_ifindex u32 (0: gateway-originated flows are not steered)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SteerConfig {
    /// Workers with sockets in the sockmap.
    pub workers: u32,
    /// Mark that sends a packet to local delivery.
    pub tproxy_mark: u32,
    /// Mark of the daemon's own sockets.
    pub daemon_mark: u32,
    /// `STEER_F_*`.
    pub flags: u32,
    /// The local steering device: WAN egress redirects proxied gateway-originated packets to its ingress.
    pub local_ifindex: u32,
}
assert_layout!(SteerConfig, size = 20, align = 4);
assert_offset!(SteerConfig, daemon_mark, 8);
assert_offset!(SteerConfig, flags, 12);
assert_offset!(SteerConfig, local_ifindex, 16);

/// Gateway-originated proxied packets cannot be assigned to a socket at egress (`bpf_sk_assign` works at tc
/// ingress only). WAN egress marks them `tproxy_mark | LOCAL_STEER | first? | worker-slot` and redirects them to
/// the ingress of the local steering device, whose program assigns the first packet to the worker socket in the
/// slot and leaves `tproxy_mark` for policy routing. The low 16 bits of the mark carry the slot.
pub const LOCAL_STEER: u32 = 1 << 15;
/// With [`LOCAL_STEER`]: the flow's first packet (TCP SYN, any UDP datagram): assign it.
pub const LOCAL_STEER_FIRST: u32 = 1 << 14;
/// With [`LOCAL_STEER`]: the sockmap slot (`steer_slot`) of the worker socket.
pub const LOCAL_STEER_SLOT: u32 = 0x0FFF;

/// [`SteerConfig::flags`]: the DNS forwarder runs; steer LAN DNS (decision `outbound::DNS`) to the workers.
pub const STEER_F_DNS: u32 = 1 << 0;
