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

/// Fragmented UDP datagrams of a proxied flow: tc sees fragments before the kernel reassembles them, and
/// only the first carries the ports. The first fragment is routed as its flow; its decision is remembered by
/// datagram ([`FragKey`] -> [`FragAction`] in `FRAG_TRAINS`) and applied to the later fragments, which arrive
/// after it in the usual case (a later fragment seen first passes untouched, counted `fragment`). A steered
/// train is only marked: the kernel reassembles it in local delivery, which forgets socket assignments, so the
/// flow (a `FlowKey`, in `REASM_STEER`) names its worker slot for the `sk_lookup` program, which hands the whole
/// datagram to that worker's socket. Gateway-originated trains (WAN egress) are redirected to the local steering
/// device fragment by fragment, with the slot in the mark but no assignment, and end the same way.
///
/// [`SteerConfig::flags`]: the DNS forwarder runs; steer LAN DNS (decision `outbound::DNS`) to the workers.
pub const STEER_F_DNS: u32 = 1 << 0;
/// [`SteerConfig::flags`]: the `sk_lookup` program is attached; steer fragment trains of proxied UDP flows
/// (without it they pass untouched, as before).
pub const STEER_F_REASM: u32 = 1 << 1;

/// Entries of `FRAG_TRAINS` and of `REASM_STEER`: fragmented datagrams followed at once (both LRU, so an
/// abandoned train falls out and a new one is never refused).
pub const FRAG_ENTRIES: u32 = 4_096;

/// `FRAG_TRAINS` key: the fragments of one IP datagram (RFC 791 / RFC 8200: source, destination, protocol and
/// identification). Addresses as in `FlowKey` (IPv4 mapped into IPv6).
///
/// Layout (40 bytes, align 4): `src_addr [u8; 16], dst_addr [u8; 16], id u32, l4_proto u8, _pad [u8; 3]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Source address, network order.
    pub src_addr: [u8; 16],
    /// Destination address, network order.
    pub dst_addr: [u8; 16],
    /// IP identification (IPv4's 16 bits widened, IPv6's 32).
    pub id: u32,
    /// Transport protocol.
    pub l4_proto: u8,
    /// Always zero.
    pub _pad: [u8; 3],
}
assert_layout!(FragKey, size = 40, align = 4);
assert_offset!(FragKey, id, 32);
assert_offset!(FragKey, l4_proto, 36);

/// `FRAG_TRAINS` value: what the first fragment's flow decision does to the later ones.
///
/// Layout (8 bytes, align 4): `mark u32 (set on each later fragment; 0: none), kind u32 (FRAG_*)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragAction {
    /// Mark to set (the tproxy mark of a steered train, the local-steer mark of a gateway-originated one, a
    /// routing mark of a marked one).
    pub mark: u32,
    /// `FRAG_PASS`, `FRAG_DROP`, `FRAG_LOCAL` or `FRAG_LOCAL_L3`.
    pub kind: u32,
}
assert_layout!(FragAction, size = 8, align = 4);
assert_offset!(FragAction, kind, 4);

/// [`FragAction::kind`]: pass (with the mark, if any).
pub const FRAG_PASS: u32 = 0;
/// [`FragAction::kind`]: drop (the flow is blocked).
pub const FRAG_DROP: u32 = 1;
/// [`FragAction::kind`]: a gateway-originated steered train on an Ethernet WAN: mark and redirect to the local
/// steering device's ingress.
pub const FRAG_LOCAL: u32 = 2;
/// [`FragAction::kind`]: the same on an L3 WAN (an Ethernet header is pushed first).
pub const FRAG_LOCAL_L3: u32 = 3;
