//! The kernel programs of dae-rs. Each entry point is a short sequence of named steps; the steps live one concern
//! per module: `gate` (admission), `parse` (headers), `meta` (XDP -> tc parse summary), `flow` (tagging),
//! `counters`, `maps`.
//!
//! Entry points are plain `extern "C"`-shaped functions in the `xdp.frags` / `classifier` sections rather than
//! aya's attribute macros, so the context argument stays a raw pointer on every kernel the loader targets.
#![no_std]
#![no_main]
// Slot claims need compare-and-swap, which the BPF target spec does not expose as `AtomicU32`.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod counters;
mod fib;
mod flow;
mod gate;
mod maps;
mod meta;
mod parse;
mod route;
mod sock;
mod steer;
mod tc;
mod xdp;

use aya_ebpf::bindings::{__sk_buff, xdp_md};

/// XDP on an Ethernet-framed interface.
#[unsafe(no_mangle)]
#[unsafe(link_section = "xdp.frags")]
pub fn xdp_ingress_l2(ctx: *mut xdp_md) -> u32 {
    xdp::ingress::<true>(ctx)
}

/// XDP on an interface without a link-layer header.
#[unsafe(no_mangle)]
#[unsafe(link_section = "xdp.frags")]
pub fn xdp_ingress_l3(ctx: *mut xdp_md) -> u32 {
    xdp::ingress::<false>(ctx)
}

/// XDP on a LAN interface (Ethernet): also drops what leading address-only `block` rules match.
#[unsafe(no_mangle)]
#[unsafe(link_section = "xdp.frags")]
pub fn xdp_lan_l2(ctx: *mut xdp_md) -> u32 {
    xdp::lan::<true>(ctx)
}

/// XDP on a LAN interface without a link-layer header.
#[unsafe(no_mangle)]
#[unsafe(link_section = "xdp.frags")]
pub fn xdp_lan_l3(ctx: *mut xdp_md) -> u32 {
    xdp::lan::<false>(ctx)
}

/// tc ingress of a LAN interface (Ethernet).
#[unsafe(no_mangle)]
#[unsafe(link_section = "classifier")]
pub fn tc_lan_ingress_l2(skb: *mut __sk_buff) -> i32 {
    tc::lan_ingress::<true>(skb)
}

/// tc ingress of a LAN interface (no link-layer header).
#[unsafe(no_mangle)]
#[unsafe(link_section = "classifier")]
pub fn tc_lan_ingress_l3(skb: *mut __sk_buff) -> i32 {
    tc::lan_ingress::<false>(skb)
}

/// tc egress of a WAN interface (Ethernet).
#[unsafe(no_mangle)]
#[unsafe(link_section = "classifier")]
pub fn tc_wan_egress_l2(skb: *mut __sk_buff) -> i32 {
    tc::wan_egress::<true>(skb)
}

/// tc egress of a WAN interface (no link-layer header).
#[unsafe(no_mangle)]
#[unsafe(link_section = "classifier")]
pub fn tc_wan_egress_l3(skb: *mut __sk_buff) -> i32 {
    tc::wan_egress::<false>(skb)
}

/// tc ingress of the local steering device: gateway-originated proxied packets, redirected here by WAN egress,
/// are assigned to their worker's socket.
#[unsafe(no_mangle)]
#[unsafe(link_section = "classifier")]
pub fn tc_local_ingress(skb: *mut __sk_buff) -> i32 {
    steer::local_ingress(skb)
}

/// Writes the tick count into `CLOCK_PROBE`. Loaded, never attached: the daemon test-runs it to learn the tick
/// rate and to sample ticks against its own clock.
#[unsafe(no_mangle)]
#[unsafe(link_section = "xdp")]
pub fn clock_probe(_ctx: *mut xdp_md) -> u32 {
    if let Some(slot) = maps::CLOCK_PROBE.get_ptr_mut(0) {
        // SAFETY: a live array element.
        unsafe { *slot = gate::now_ticks() };
    }
    aya_ebpf::bindings::xdp_action::XDP_PASS
}

/// Routes one test-run packet with the direction and interface in `ROUTE_PROBE` and writes the decision there.
/// Loaded, never attached: tests compare it with the userspace matcher, benchmarks time the routing miss path.
#[unsafe(no_mangle)]
#[unsafe(link_section = "classifier")]
pub fn route_probe(skb: *mut __sk_buff) -> i32 {
    tc::probe_route(skb)
}

/// `cgroup/sock_create` on the cgroup v2 root: remembers which process created each socket (its `comm`, by
/// socket cookie) so WAN-egress routing can match `pname(...)`. Always allows the socket.
#[unsafe(no_mangle)]
#[unsafe(link_section = "cgroup/sock_create")]
pub fn cgroup_sock_create(sock: *mut aya_ebpf::bindings::bpf_sock) -> i32 {
    sock::record_creator(sock);
    1
}

/// `sk_lookup` on the daemon's network namespace: reassembled datagrams of steered fragment trains go to their
/// worker's socket (`steer::reassembled`).
#[unsafe(no_mangle)]
#[unsafe(link_section = "sk_lookup")]
pub fn sk_lookup_reasm(ctx: *mut aya_ebpf::bindings::bpf_sk_lookup) -> u32 {
    steer::reassembled(ctx)
}

/// Benchmark baseline: an XDP program that only passes. Loaded, never attached; `perf` subtracts its
/// BPF_PROG_TEST_RUN cost (harness overhead) from the real programs'.
#[unsafe(no_mangle)]
#[unsafe(link_section = "xdp")]
pub fn bench_empty_xdp(_ctx: *mut xdp_md) -> u32 {
    aya_ebpf::bindings::xdp_action::XDP_PASS
}

/// Benchmark baseline: a tc program that only passes (see `bench_empty_xdp`).
#[unsafe(no_mangle)]
#[unsafe(link_section = "classifier")]
pub fn bench_empty_tc(_skb: *mut __sk_buff) -> i32 {
    -1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: BPF programs cannot unwind or loop forever; the verifier rejects any path that reaches here, so
    // code that compiles into a loadable object never panics.
    unsafe { core::hint::unreachable_unchecked() }
}

/// License of the object; GPL-only helpers (none used yet) would require "GPL".
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 4] = *b"GPL\0";
