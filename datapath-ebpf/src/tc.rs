//! tc programs: LAN ingress tags forwarded client flows, WAN egress tags flows the gateway originates.

use aya_ebpf::{bindings::__sk_buff, helpers::bpf_skb_pull_data};
use datapath_abi::{Counter, Direction, FlowKey};

use crate::{
    counters, fib,
    flow::{self, Place},
    gate, meta,
    parse::{self, Headers, MAX_L4_OFFSET, Skip},
};

/// `TC_ACT_UNSPEC`: pass and let later classifiers run (TCX: `TCX_NEXT`).
const TC_ACT_UNSPEC: i32 = -1;
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
    tag::<L2>(skb, place, now, gate.ticks_per_sec);
    TC_ACT_UNSPEC
}

/// WAN egress: only packets the gateway itself originated (no ingress interface); forwarded packets were tagged
/// on their LAN side.
#[inline(always)]
pub fn wan_egress<const L2: bool>(skb: *mut __sk_buff) -> i32 {
    // SAFETY: context fields readable by tc programs.
    let (ingress, ifindex) = unsafe { ((*skb).ingress_ifindex, (*skb).ifindex) };
    if ingress != 0 {
        return TC_ACT_UNSPEC;
    }
    let now = gate::now_ticks();
    let Some(gate) = gate::open_at(now) else { return TC_ACT_UNSPEC };
    let place = Place { direction: Direction::WanOut, ingress_ifindex: 0, egress_ifindex: ifindex };
    tag::<L2>(skb, place, now, gate.ticks_per_sec);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn tag<const L2: bool>(skb: *mut __sk_buff, place: Place, now: u64, refresh: u64) {
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
    match parsed {
        Ok((h, _)) if h.fragment => counters::bump(Counter::Fragment),
        Ok((h, _)) if !parse::is_tcp_or_udp(h.proto) => counters::bump(Counter::NotTcpUdp),
        Ok((h, tcp_flags)) => {
            // SAFETY: context field readable by tc programs.
            let len = unsafe { (*skb).len };
            let egress = || fib::egress_ifindex(skb, &key, h.version == 4, place.ingress_ifindex);
            flow::record(&key, tcp_flags, len, place, now, refresh, egress);
        }
        Err(Skip::NotIp) => counters::bump(Counter::NotIp),
        Err(_) => counters::bump(Counter::Malformed),
    }
}

/// Headers and, for unfragmented TCP/UDP, the key and TCP flags.
#[inline(always)]
fn parse_linear<const L2: bool>(skb: *mut __sk_buff, key: &mut FlowKey) -> Result<(Headers, u8), Skip> {
    let (start, end) = linear(skb);
    let h = parse::headers::<L2>(start, end)?;
    let flags = key_at(skb, &h, key)?;
    Ok((h, flags))
}

/// The rare path: headers straddle the linear area. Kept out of line so the common path stays short.
#[inline(never)]
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
