//! tc programs: LAN ingress tags forwarded client flows, WAN egress tags flows the gateway originates.

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{bpf_get_socket_cookie, bpf_skb_pull_data},
};
use datapath_abi::{
    Counter, Direction, FlowKey,
    flow::{FLOW_F_TCP_SYN, IPPROTO_UDP},
    route::{COMM_LEN, outbound},
    steer::{FRAG_DROP, FRAG_LOCAL, FRAG_LOCAL_L3, FRAG_PASS},
};

use crate::{
    counters, fib,
    flow::{self, Place},
    gate,
    maps::{ROUTE_PROBE, SOCK_PNAME},
    meta,
    parse::{self, Headers, MAX_L4_OFFSET, Skip},
    route::{self, RouteInput},
    steer,
};

/// `TC_ACT_UNSPEC`: pass and let later classifiers run (TCX: `TCX_NEXT`).
const TC_ACT_UNSPEC: i32 = -1;
/// `TC_ACT_SHOT`: drop.
const TC_ACT_SHOT: i32 = 2;
/// Bytes to make linear when headers straddle the linear area: the deepest header chain we parse plus a TCP
/// header.
const PULL_LEN: u32 = (MAX_L4_OFFSET + 20) as u32;

/// LAN ingress: every TCP/UDP flow entering from a LAN client.
#[inline(always)]
pub fn lan_ingress<const L2: bool>(skb: *mut __sk_buff) -> i32 {
    let now = gate::now_ticks();
    let Some(gate) = gate::open_at(now) else { return TC_ACT_UNSPEC };
    // SAFETY: context field readable by tc programs.
    let ifindex = unsafe { (*skb).ifindex };
    let place = Place { direction: Direction::LanIn, ingress_ifindex: ifindex, egress_ifindex: 0 };
    tag::<L2>(skb, place, now, gate.ticks_per_sec)
}

/// WAN egress: only packets the gateway itself originated (no ingress interface); forwarded packets were tagged
/// on their LAN side.
#[inline(always)]
pub fn wan_egress<const L2: bool>(skb: *mut __sk_buff) -> i32 {
    // SAFETY: context fields readable by tc programs.
    let (ingress, ifindex) = unsafe { ((*skb).ingress_ifindex, (*skb).ifindex) };
    if ingress != 0 || steer::from_daemon(skb) {
        return TC_ACT_UNSPEC;
    }
    let now = gate::now_ticks();
    let Some(gate) = gate::open_at(now) else { return TC_ACT_UNSPEC };
    let place = Place { direction: Direction::WanOut, ingress_ifindex: 0, egress_ifindex: ifindex };
    tag::<L2>(skb, place, now, gate.ticks_per_sec)
}

/// Tags the packet's flow and applies its decision: the verdict to return.
#[inline(always)]
fn tag<const L2: bool>(skb: *mut __sk_buff, place: Place, now: u64, refresh: u64) -> i32 {
    // One key on the stack, filled in place: returning it by value through the parse paths makes LLVM split it
    // into dozens of spilled stack slots.
    let mut key = FlowKey::default();
    let parsed = match meta::read::<L2>(skb) {
        Some(h) => {
            counters::bump(Counter::XdpMetaUsed);
            key_at(skb, &h, &mut key).map(|flags| (h, flags))
        }
        None => parse_linear::<L2>(skb, &mut key),
    };
    let parsed = match parsed {
        Err(Skip::Truncated) => reparse_after_pull::<L2>(skb, &mut key),
        other => other,
    };
    let (h, tcp_flags) = match parsed {
        // A first fragment of a UDP datagram is routed as its flow; later ones follow it (`fragment`).
        Ok((h, _)) if h.fragment => match fragment::<L2>(skb, &mut key) {
            Ok(first) => (first, 0),
            Err(verdict) => return verdict,
        },
        Ok((h, _)) if !parse::is_tcp_or_udp(h.proto) => return counted(Counter::NotTcpUdp),
        Ok(parsed) => parsed,
        Err(Skip::NotIp) => return counted(Counter::NotIp),
        Err(_) => return counted(Counter::Malformed),
    };
    // SAFETY: context field readable by tc programs.
    let len = unsafe { (*skb).len };
    let routed = || {
        let ifindex = match place.direction {
            Direction::LanIn => place.ingress_ifindex,
            Direction::WanOut => place.egress_ifindex,
        };
        // Before reading packet data: the socket-cookie helper does not move it, but read in this order anyway.
        let comm = match place.direction {
            Direction::WanOut => socket_comm(skb),
            Direction::LanIn => None,
        };
        let (start, end) = linear(skb);
        let input =
            RouteInput { key: &key, headers: &h, start, end, ethernet: L2, direction: place.direction, ifindex, comm };
        route::route(&input)
    };
    let egress = || fib::egress_ifindex(skb, &key, h.version == 4, place.ingress_ifindex);
    let decision = flow::record(&key, tcp_flags, len, place, now, refresh, routed, egress);
    let udp = key.l4_proto != IPPROTO_TCP;
    let first = udp || tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let train = if h.fragment { Some(h.fragment_id) } else { None };
    apply(skb, decision, place.direction, h.version == 6, udp, first, L2, &key, train)
}

/// An IP fragment. `Ok(headers)` for the first fragment of a UDP datagram (with `key` filled: it carries the
/// ports), to be routed as its flow; `Err(verdict)` for everything else: a later fragment does what its first
/// fragment's decision did (`FRAG_TRAINS`), or passes untouched (counted) when that is unknown or when the
/// fragment is not a UDP one.
#[inline(always)]
fn fragment<const L2: bool>(skb: *mut __sk_buff, key: &mut FlowKey) -> Result<Headers, i32> {
    // The XDP summary carries no fragment offset or identification: parse again.
    let (start, end) = linear(skb);
    let h = match parse::headers::<L2>(start, end) {
        Ok(h) => h,
        Err(Skip::Truncated) if pull(skb) => {
            let (start, end) = linear(skb);
            match parse::headers::<L2>(start, end) {
                Ok(h) => h,
                Err(_) => return Err(counted(Counter::Fragment)),
            }
        }
        Err(_) => return Err(counted(Counter::Fragment)),
    };
    if h.proto != IPPROTO_UDP {
        return Err(counted(Counter::Fragment));
    }
    // The addresses; a first fragment's ports too (a later one's "ports" are payload bytes, never used).
    let (start, end) = linear(skb);
    if parse::flow_key(start, end, &h, key).is_err() {
        return Err(counted(Counter::Fragment));
    }
    if h.first_fragment {
        // Until the decision says otherwise (`apply`), the later fragments pass: an older train of the same
        // addresses and IP identification (the 16-bit IPv4 one wraps) must not lend them its action.
        steer::remember_train(key, h.fragment_id, 0, FRAG_PASS);
        return Ok(h);
    }
    match steer::train_action(key, h.fragment_id) {
        Some(action) if action.kind == FRAG_DROP => {
            counters::bump(Counter::FragmentFollowed);
            Err(TC_ACT_SHOT)
        }
        Some(action) if action.kind == FRAG_LOCAL || action.kind == FRAG_LOCAL_L3 => {
            match steer::redirect_train(skb, action.mark, h.version == 6, action.kind == FRAG_LOCAL) {
                Some(verdict) => {
                    counters::bump(Counter::FragmentFollowed);
                    Err(verdict)
                }
                None => Err(counted(Counter::Fragment)),
            }
        }
        Some(action) => {
            if action.mark != 0 {
                // SAFETY: `mark` is writable by tc programs.
                unsafe { (*skb).mark = action.mark };
            }
            counters::bump(Counter::FragmentFollowed);
            Err(TC_ACT_UNSPEC)
        }
        None => Err(counted(Counter::Fragment)),
    }
}

const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// What a decision does to a packet here: `block` drops, a mark is set, everything else passes on (proxied
/// flows are steered by the gateway layer). `train`: the packet is the first fragment of the datagram with this
/// IP identification, and its later fragments must do the same.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn apply(
    skb: *mut __sk_buff,
    decision: flow::Decision,
    direction: Direction,
    ipv6: bool,
    udp: bool,
    first: bool,
    l2: bool,
    key: &FlowKey,
    train: Option<u32>,
) -> i32 {
    if decision.outbound == outbound::BLOCK {
        if let Some(id) = train {
            steer::remember_train(key, id, 0, FRAG_DROP);
        }
        counters::bump(Counter::Blocked);
        return TC_ACT_SHOT;
    }
    let proxied = (outbound::GROUP_BASE..=outbound::GROUP_MAX).contains(&decision.outbound);
    // Gateway-originated proxied flows and DNS go to the workers through the local steering device (packets of
    // an L3 WAN get an Ethernet header for it).
    let dns = decision.outbound == outbound::DNS && steer::dns_enabled();
    if (proxied || dns) && direction == Direction::WanOut {
        if let Some(id) = train {
            return steer::local_train(skb, decision.hash, ipv6, l2, key, id).unwrap_or(TC_ACT_UNSPEC);
        }
        let began_with_syn = udp || decision.flags & FLOW_F_TCP_SYN != 0;
        if began_with_syn && let Some(verdict) = steer::redirect_local(skb, decision.hash, ipv6, udp, first, l2) {
            return verdict;
        }
        return TC_ACT_UNSPEC;
    }
    if (proxied || decision.outbound == outbound::DNS) && direction == Direction::LanIn {
        if let Some(id) = train {
            steer::steer_train(skb, decision.hash, ipv6, key, id, proxied);
            return TC_ACT_UNSPEC;
        }
        let began_with_syn = decision.flags & FLOW_F_TCP_SYN != 0;
        steer::steer(skb, decision.hash, ipv6, udp, first, began_with_syn, proxied);
        return TC_ACT_UNSPEC;
    }
    if decision.mark != 0 {
        if let Some(id) = train {
            steer::remember_train(key, id, decision.mark, FRAG_PASS);
        }
        // SAFETY: `mark` is writable by tc programs.
        unsafe { (*skb).mark = decision.mark };
    }
    TC_ACT_UNSPEC
}

#[inline(always)]
fn counted(counter: Counter) -> i32 {
    counters::bump(counter);
    TC_ACT_UNSPEC
}

/// `route_probe`: routes a test-run packet as the tc programs would, with the direction and interface taken
/// from `ROUTE_PROBE`, and writes the decision there.
#[inline(always)]
pub fn probe_route(skb: *mut __sk_buff) -> i32 {
    let Some(probe) = ROUTE_PROBE.get_ptr_mut(0) else { return TC_ACT_UNSPEC };
    // SAFETY: a live array element written only by userspace between test runs.
    let probe = unsafe { &mut *probe };
    let direction = if probe.direction == Direction::WanOut as u8 { Direction::WanOut } else { Direction::LanIn };
    let mut key = FlowKey::default();
    let Ok((h, _)) = parse_linear::<true>(skb, &mut key) else {
        probe.action.outbound = outbound::NONE;
        return TC_ACT_UNSPEC;
    };
    let (start, end) = linear(skb);
    let comm = if probe.comm[0] != 0 { Some(probe.comm) } else { None };
    let input =
        RouteInput { key: &key, headers: &h, start, end, ethernet: true, direction, ifindex: probe.ifindex, comm };
    probe.action = route::route(&input);
    TC_ACT_UNSPEC
}

/// The `comm` of the process that created this packet's socket, if the sock_create hook recorded it.
#[inline(always)]
fn socket_comm(skb: *mut __sk_buff) -> Option<[u8; COMM_LEN]> {
    // SAFETY: helper on our own skb; returns 0 when the packet has no socket.
    let cookie = unsafe { bpf_get_socket_cookie(skb.cast()) };
    if cookie == 0 {
        return None;
    }
    // SAFETY: an LRU map value copied out at once.
    unsafe { SOCK_PNAME.get(&cookie) }.copied()
}

/// Headers and, for unfragmented TCP/UDP, the key and TCP flags.
#[inline(always)]
fn parse_linear<const L2: bool>(skb: *mut __sk_buff, key: &mut FlowKey) -> Result<(Headers, u8), Skip> {
    let (start, end) = linear(skb);
    let h = parse::headers::<L2>(start, end)?;
    let flags = key_at(skb, &h, key)?;
    Ok((h, flags))
}

/// The rare path: headers straddle the linear area. Inlined: an out-of-line function returning this Rust enum
/// puts its niche-encoded tag into the object's BTF as a union member at a non-zero offset, which the kernel's
/// BTF check rejects (and then the whole object loads without BTF).
#[inline(always)]
fn reparse_after_pull<const L2: bool>(skb: *mut __sk_buff, key: &mut FlowKey) -> Result<(Headers, u8), Skip> {
    if !pull(skb) {
        return Err(Skip::Truncated);
    }
    parse_linear::<L2>(skb, key)
}

#[inline(always)]
fn key_at(skb: *mut __sk_buff, h: &Headers, key: &mut FlowKey) -> Result<u8, Skip> {
    if h.fragment || !parse::is_tcp_or_udp(h.proto) {
        return Ok(0);
    }
    let (start, end) = linear(skb);
    parse::flow_key(start, end, h, key)
}

#[inline(always)]
fn linear(skb: *mut __sk_buff) -> (usize, usize) {
    // SAFETY: context fields readable by tc programs.
    unsafe { ((*skb).data as usize, (*skb).data_end as usize) }
}

/// Makes the headers linear when the packet is longer than its linear part. True if a retry can help.
#[inline(always)]
fn pull(skb: *mut __sk_buff) -> bool {
    let (start, end) = linear(skb);
    // SAFETY: context field readable by tc programs.
    let len = unsafe { (*skb).len };
    if (end - start) as u32 >= len {
        return false;
    }
    let want = if len < PULL_LEN { len } else { PULL_LEN };
    // SAFETY: helper on our own skb; packet pointers are re-read after it.
    unsafe { bpf_skb_pull_data(skb.cast(), want) == 0 }
}
