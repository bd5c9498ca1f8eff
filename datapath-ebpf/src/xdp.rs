//! XDP ingress: parse once, leave the summary for tc, pass.

use aya_ebpf::bindings::{xdp_action::XDP_PASS, xdp_md};
use datapath_abi::Counter;

use crate::{counters, gate, meta, parse};

/// Every attached interface, ingress. Never drops (yet): block rules by address come with the routing engine.
#[inline(always)]
pub fn ingress<const L2: bool>(ctx: *mut xdp_md) -> u32 {
    if !gate::is_opened() {
        return XDP_PASS;
    }
    // SAFETY: context fields readable by XDP programs.
    let (start, end, ifindex) = unsafe { ((*ctx).data as usize, (*ctx).data_end as usize, (*ctx).ingress_ifindex) };
    if let Ok(h) = parse::headers::<L2>(start, end) {
        if !meta::write(ctx, &h, ifindex) {
            counters::bump(Counter::XdpMetaUnavailable);
        }
    }
    XDP_PASS
}
