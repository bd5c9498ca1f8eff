//! XDP ingress: parse once, leave the summary for tc, pass.

use aya_ebpf::bindings::{
    xdp_action::{XDP_DROP, XDP_PASS},
    xdp_md,
};
use datapath_abi::{Counter, FlowKey};

use crate::{counters, gate, meta, parse, route};

/// WAN interfaces (and LAN ones without routing): parse, leave the summary, pass.
#[inline(always)]
pub fn ingress<const L2: bool>(ctx: *mut xdp_md) -> u32 {
    summarize::<L2>(ctx).1
}

/// LAN interfaces: as [`ingress`], and drop TCP/UDP packets the leading address-only `block` rules match, at
/// line rate, before an skb exists.
#[inline(always)]
pub fn lan<const L2: bool>(ctx: *mut xdp_md) -> u32 {
    let (headers, verdict) = summarize::<L2>(ctx);
    let Some(h) = headers else { return verdict };
    if h.fragment || !parse::is_tcp_or_udp(h.proto) {
        return verdict;
    }
    let Some(active) = route::xdp_rules_active() else { return verdict };
    // SAFETY: context fields readable by XDP programs (re-read: adjusting the metadata invalidated pointers).
    let (start, end) = unsafe { ((*ctx).data as usize, (*ctx).data_end as usize) };
    let mut key = FlowKey::default();
    if parse::flow_key(start, end, &h, &mut key).is_ok() && route::xdp_blocks(&key, active) {
        counters::bump(Counter::XdpBlocked);
        return XDP_DROP;
    }
    verdict
}

/// Parses and writes the summary; the headers (if the gate is open and the frame is IP) and `XDP_PASS`.
#[inline(always)]
fn summarize<const L2: bool>(ctx: *mut xdp_md) -> (Option<parse::Headers>, u32) {
    if !gate::is_opened() {
        return (None, XDP_PASS);
    }
    // SAFETY: context fields readable by XDP programs.
    let (start, end, ifindex) = unsafe { ((*ctx).data as usize, (*ctx).data_end as usize, (*ctx).ingress_ifindex) };
    match parse::headers::<L2>(start, end) {
        Ok(h) => {
            if !meta::write(ctx, &h, ifindex) {
                counters::bump(Counter::XdpMetaUnavailable);
            }
            (Some(h), XDP_PASS)
        }
        Err(_) => (None, XDP_PASS),
    }
}
