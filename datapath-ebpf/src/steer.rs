//! Handing proxied flows to a worker (see `datapath_abi::steer`): LAN-in packets are marked for local delivery,
//! and a flow's first packet is assigned the worker's transparent socket; gateway-originated ones go through the
//! local steering device; fragment trains follow their first fragment and meet `sk_lookup` after reassembly.

use aya_ebpf::{
    bindings::{__sk_buff, bpf_sk_lookup, bpf_sock},
    helpers::{bpf_map_lookup_elem, bpf_sk_assign, bpf_sk_release},
};
use datapath_abi::{
    Counter, FlowKey,
    flow::{IPPROTO_UDP, V4_MAPPED_PREFIX},
    steer::{
        FRAG_LOCAL, FRAG_LOCAL_L3, FRAG_PASS, FragAction, FragKey, LOCAL_STEER, LOCAL_STEER_FIRST, LOCAL_STEER_SLOT,
        STEER_F_DNS, STEER_F_REASM, SteerConfig, steer_slot,
    },
};

use crate::{
    counters,
    maps::{FRAG_TRAINS, REASM_STEER, STEER_CONFIG, STEER_SOCKS},
};

/// Steers the packet if workers are registered (and, for DNS, `proxied` false, the forwarder runs); otherwise
/// the flow passes untouched (fail-open).
///
/// `first` is a TCP SYN or any UDP datagram: it is assigned to a worker's socket, and marked for local delivery
/// only if that worked. Later TCP segments find the accepted socket by the ordinary lookup and are marked only
/// when the flow `began_with_syn` (a flow first seen mid-stream has no socket to go to and passes untouched).
#[inline(always)]
pub fn steer(skb: *mut __sk_buff, hash: u32, ipv6: bool, udp: bool, first: bool, began_with_syn: bool, proxied: bool) {
    let Some(cfg) = STEER_CONFIG.get(0) else { return };
    // DNS goes to the workers only while the forwarder runs; otherwise it passes like a direct flow.
    if cfg.workers == 0 || (!proxied && cfg.flags & STEER_F_DNS == 0) {
        return;
    }
    if !first {
        if began_with_syn {
            // SAFETY: `mark` is writable by tc programs.
            unsafe { (*skb).mark = cfg.tproxy_mark };
        }
        return;
    }
    let slot = steer_slot(hash % cfg.workers, ipv6, udp);
    let sk = worker_socket(slot);
    if sk.is_null() {
        counters::bump(Counter::SteerNoSocket);
        return;
    }
    // SAFETY: sk is a live referenced socket; assign then release our reference.
    let rc = unsafe { bpf_sk_assign(skb.cast(), sk.cast(), 0) };
    // SAFETY: as above.
    unsafe { bpf_sk_release(sk.cast()) };
    if rc != 0 {
        counters::bump(Counter::SteerNoSocket);
        return;
    }
    // SAFETY: `mark` is writable by tc programs.
    unsafe { (*skb).mark = cfg.tproxy_mark };
    counters::bump(Counter::Steered);
}

/// The worker socket in `STEER_SOCKS[slot]`, referenced (the caller releases it with `bpf_sk_release`), or
/// null.
#[inline(always)]
fn worker_socket(slot: u32) -> *mut bpf_sock {
    // SAFETY: a sockmap lookup from tc or sk_lookup returns a referenced socket or null.
    unsafe { bpf_map_lookup_elem(core::ptr::addr_of!(STEER_SOCKS).cast_mut().cast(), core::ptr::addr_of!(slot).cast()) }
        .cast::<bpf_sock>()
}

/// Whether the packet comes from one of the daemon's own sockets (never tagged, routed or looped).
#[inline(always)]
pub fn from_daemon(skb: *mut __sk_buff) -> bool {
    let Some(cfg) = STEER_CONFIG.get(0) else { return false };
    // SAFETY: context field readable by tc programs.
    let mark = unsafe { (*skb).mark };
    cfg.daemon_mark != 0 && mark & cfg.daemon_mark == cfg.daemon_mark
}

/// Whether the DNS forwarder runs (DNS is steered to it).
#[inline(always)]
pub fn dns_enabled() -> bool {
    STEER_CONFIG.get(0).is_some_and(|cfg| cfg.workers != 0 && cfg.flags & STEER_F_DNS != 0)
}

/// `TC_ACT_UNSPEC`.
const TC_ACT_UNSPEC: i32 = -1;

/// WAN egress, a gateway-originated proxied packet: marks it for the local steering device (the worker slot,
/// whether to assign) and redirects it to that device's ingress. The device is Ethernet: a packet of an L3 WAN
/// (`l2` false: PPP, WireGuard, tun) first gets an Ethernet header pushed in front (addresses zero — the device's
/// ingress program makes the frame PACKET_HOST — and the EtherType of its IP version). `None` when nothing
/// steers (no workers, no device) or the header cannot be pushed: the packet passes untouched (fail-open).
#[inline(always)]
pub fn redirect_local(skb: *mut __sk_buff, hash: u32, ipv6: bool, udp: bool, first: bool, l2: bool) -> Option<i32> {
    let cfg = STEER_CONFIG.get(0)?;
    if cfg.workers == 0 {
        return None;
    }
    redirect_marked(skb, cfg, local_mark(cfg, hash, ipv6, udp, first), ipv6, l2)
}

/// The mark that sends a gateway-originated packet of the flow `hash` to its worker through the local device:
/// `tproxy_mark | LOCAL_STEER | first? | slot`. `cfg.workers` must not be 0.
#[inline(always)]
fn local_mark(cfg: &SteerConfig, hash: u32, ipv6: bool, udp: bool, first: bool) -> u32 {
    let slot = steer_slot(hash % cfg.workers, ipv6, udp) & LOCAL_STEER_SLOT;
    cfg.tproxy_mark | LOCAL_STEER | if first { LOCAL_STEER_FIRST } else { 0 } | slot
}

/// Sets `mark` and redirects to the local device's ingress (an Ethernet header pushed first when `l2` is
/// false). `None` without a device or when the header cannot be pushed.
#[inline(always)]
fn redirect_marked(skb: *mut __sk_buff, cfg: &SteerConfig, mark: u32, ipv6: bool, l2: bool) -> Option<i32> {
    if cfg.local_ifindex == 0 || (!l2 && !push_ethernet(skb, ipv6)) {
        return None;
    }
    // SAFETY: `mark` is writable by tc programs.
    unsafe { (*skb).mark = mark };
    // SAFETY: a plain helper call; BPF_F_INGRESS (1) delivers to the device's receive path.
    Some(unsafe { aya_ebpf::helpers::bpf_redirect(cfg.local_ifindex, 1) } as i32)
}

/// The first fragment of a gateway-originated proxied UDP datagram: names the flow's worker slot for `sk_lookup`
/// and records the local-steer mark (slot, no assignment: reassembly would forget it) for the later fragments,
/// then redirects it like them ([`redirect_train`]). `None` when trains are not steered (no workers, no device,
/// no `sk_lookup`) or the packet cannot be redirected: the train passes untouched.
#[inline(always)]
pub fn local_train(skb: *mut __sk_buff, hash: u32, ipv6: bool, l2: bool, key: &FlowKey, id: u32) -> Option<i32> {
    let cfg = STEER_CONFIG.get(0)?;
    if cfg.workers == 0 || cfg.local_ifindex == 0 || cfg.flags & STEER_F_REASM == 0 {
        return None;
    }
    let mark = local_mark(cfg, hash, ipv6, true, false);
    let kind = if l2 { FRAG_LOCAL } else { FRAG_LOCAL_L3 };
    let slot = mark & LOCAL_STEER_SLOT;
    if REASM_STEER.insert(key, &slot, 0).is_err() || !remember_train(key, id, mark, kind) {
        return None;
    }
    redirect_marked(skb, cfg, mark, ipv6, l2)
}

/// A later fragment of a gateway-originated steered train: `mark` (from its first fragment) and redirected to
/// the local steering device like its first (`l2` false: an Ethernet header is pushed first). `None`: passes.
#[inline(always)]
pub fn redirect_train(skb: *mut __sk_buff, mark: u32, ipv6: bool, l2: bool) -> Option<i32> {
    redirect_marked(skb, STEER_CONFIG.get(0)?, mark, ipv6, l2)
}

/// Ethernet header length.
const ETH_HLEN: u32 = 14;
/// EtherTypes, in network byte order once stored big-endian.
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// Pushes a zero-address Ethernet header with the EtherType of the packet's IP version in front of an L3 packet.
/// `false` (and the packet unchanged) when the kernel cannot grow its head.
#[inline(always)]
fn push_ethernet(skb: *mut __sk_buff, ipv6: bool) -> bool {
    // SAFETY: a plain helper call on our packet; it invalidates packet pointers, and none are used after it.
    if unsafe { aya_ebpf::helpers::bpf_skb_change_head(skb, ETH_HLEN, 0) } != 0 {
        return false;
    }
    let mut header = [0u8; ETH_HLEN as usize];
    let ethertype = if ipv6 { ETH_P_IPV6 } else { ETH_P_IP }.to_be_bytes();
    header[12] = ethertype[0];
    header[13] = ethertype[1];
    // SAFETY: writes the 14 bytes just made room for, from a stack buffer of that size.
    let rc = unsafe { aya_ebpf::helpers::bpf_skb_store_bytes(skb, 0, header.as_ptr().cast(), ETH_HLEN, 0) };
    rc == 0
}

/// Ingress of the local steering device: assigns a redirected first packet to the worker socket its mark names,
/// and leaves only `tproxy_mark` so policy routing delivers it locally. Anything else passes untouched.
#[inline(always)]
pub fn local_ingress(skb: *mut __sk_buff) -> i32 {
    let Some(cfg) = STEER_CONFIG.get(0) else { return TC_ACT_UNSPEC };
    // SAFETY: context field readable by tc programs.
    let mark = unsafe { (*skb).mark };
    if cfg.tproxy_mark == 0 || mark & LOCAL_STEER == 0 || mark & cfg.tproxy_mark == 0 {
        return TC_ACT_UNSPEC;
    }
    // SAFETY: `mark` is writable by tc programs.
    unsafe { (*skb).mark = cfg.tproxy_mark };
    // The frame still carries the WAN next hop's MAC, so the receive path took it for another host's
    // (PACKET_OTHERHOST), which IP drops: it is for us.
    // SAFETY: a plain helper call on our packet; PACKET_HOST is 0.
    unsafe { aya_ebpf::helpers::bpf_skb_change_type(skb, 0) };
    if mark & LOCAL_STEER_FIRST == 0 {
        return TC_ACT_UNSPEC;
    }
    let slot = mark & LOCAL_STEER_SLOT;
    let sk = worker_socket(slot);
    if sk.is_null() {
        counters::bump(Counter::SteerNoSocket);
        return TC_ACT_UNSPEC;
    }
    // SAFETY: sk is a live referenced socket; assign then release our reference.
    let rc = unsafe { bpf_sk_assign(skb.cast(), sk.cast(), 0) };
    // SAFETY: as above.
    unsafe { bpf_sk_release(sk.cast()) };
    if rc != 0 {
        counters::bump(Counter::SteerNoSocket);
    } else {
        counters::bump(Counter::Steered);
    }
    TC_ACT_UNSPEC
}

/// The `FRAG_TRAINS` key of the datagram `key` (its addresses) with IP identification `id`.
#[inline(always)]
fn train_key(key: &FlowKey, id: u32) -> FragKey {
    FragKey { src_addr: key.src_addr, dst_addr: key.dst_addr, id, l4_proto: key.l4_proto, _pad: [0; 3] }
}

/// What the later fragments of datagram (`key`'s addresses, `id`) do, if its first fragment was seen.
#[inline(always)]
pub fn train_action(key: &FlowKey, id: u32) -> Option<FragAction> {
    // SAFETY: an LRU map value copied out at once.
    unsafe { FRAG_TRAINS.get(&train_key(key, id)) }.copied()
}

/// Remembers what the later fragments of datagram (`key`'s addresses, `id`) do: `kind` (`FRAG_*`) with `mark`.
#[inline(always)]
pub fn remember_train(key: &FlowKey, id: u32, mark: u32, kind: u32) -> bool {
    FRAG_TRAINS.insert(&train_key(key, id), &FragAction { mark, kind }, 0).is_ok()
}

/// The first fragment of a proxied LAN UDP datagram: reassembly in local delivery forgets socket assignments,
/// so instead of assigning it, names the flow's worker slot for `sk_lookup` ([`reassembled`]) and marks this
/// fragment and (through `FRAG_TRAINS`) the later ones for local delivery. Fail-open like [`steer`]: with no
/// workers, no socket in the slot, or no `sk_lookup` program (`STEER_F_REASM`) the train passes untouched.
#[inline(always)]
pub fn steer_train(skb: *mut __sk_buff, hash: u32, ipv6: bool, key: &FlowKey, id: u32, proxied: bool) {
    let Some(cfg) = STEER_CONFIG.get(0) else { return };
    if cfg.workers == 0 || cfg.flags & STEER_F_REASM == 0 || (!proxied && cfg.flags & STEER_F_DNS == 0) {
        return;
    }
    let slot = steer_slot(hash % cfg.workers, ipv6, true);
    let sk = worker_socket(slot);
    if sk.is_null() {
        counters::bump(Counter::SteerNoSocket);
        return;
    }
    // SAFETY: as above.
    unsafe { bpf_sk_release(sk.cast()) };
    if REASM_STEER.insert(key, &slot, 0).is_err() || !remember_train(key, id, cfg.tproxy_mark, FRAG_PASS) {
        counters::bump(Counter::SteerNoSocket);
        return;
    }
    // SAFETY: `mark` is writable by tc programs.
    unsafe { (*skb).mark = cfg.tproxy_mark };
    counters::bump(Counter::Steered);
}

/// `SK_PASS`.
const SK_PASS: u32 = 1;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// `sk_lookup`: a UDP datagram being delivered locally whose flow has steered fragment trains (`REASM_STEER`)
/// is handed to that worker's socket; every other lookup goes on as usual.
#[inline(always)]
pub fn reassembled(ctx: *mut bpf_sk_lookup) -> u32 {
    // SAFETY: context fields readable by sk_lookup programs, each read at its own width.
    let (family, protocol) = unsafe { ((*ctx).family, (*ctx).protocol) };
    if protocol != u32::from(IPPROTO_UDP) || (family != AF_INET && family != AF_INET6) {
        return SK_PASS;
    }
    // Each context field is read volatile at its own constant offset: the verifier refuses a context pointer
    // the compiler advanced (as it does when it merges the two families' loads).
    macro_rules! field {
        ($($path:tt)*) => {
            // SAFETY: a context field readable by sk_lookup programs, read at its own width.
            unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*ctx).$($path)*)) }
        };
    }
    let mut key = FlowKey::default();
    if family == AF_INET {
        key.src_addr[..12].copy_from_slice(&V4_MAPPED_PREFIX);
        key.dst_addr[..12].copy_from_slice(&V4_MAPPED_PREFIX);
        key.src_addr[12..].copy_from_slice(&field!(remote_ip4).to_ne_bytes());
        key.dst_addr[12..].copy_from_slice(&field!(local_ip4).to_ne_bytes());
    } else {
        let (remote, local) = (
            [field!(remote_ip6[0]), field!(remote_ip6[1]), field!(remote_ip6[2]), field!(remote_ip6[3])],
            [field!(local_ip6[0]), field!(local_ip6[1]), field!(local_ip6[2]), field!(local_ip6[3])],
        );
        for i in 0..4 {
            key.src_addr[i * 4..i * 4 + 4].copy_from_slice(&remote[i].to_ne_bytes());
            key.dst_addr[i * 4..i * 4 + 4].copy_from_slice(&local[i].to_ne_bytes());
        }
    }
    key.src_port = field!(remote_port);
    key.dst_port = (field!(local_port) as u16).to_be();
    key.l4_proto = IPPROTO_UDP;
    // SAFETY: an LRU map value copied out at once.
    let Some(slot) = (unsafe { REASM_STEER.get(&key) }).copied() else { return SK_PASS };
    let sk = worker_socket(slot);
    if sk.is_null() {
        return SK_PASS;
    }
    // SAFETY: sk is a live referenced socket; assign then release our reference.
    let rc = unsafe { aya_ebpf::helpers::bpf_sk_assign(ctx.cast(), sk.cast(), 0) };
    // SAFETY: as above.
    unsafe { bpf_sk_release(sk.cast()) };
    if rc == 0 {
        counters::bump(Counter::ReassembledSteered);
    }
    SK_PASS
}
