//! Where the kernel will forward a new LAN flow: one FIB lookup when the flow is first tagged, so its tag names
//! the egress interface too. A helper call, but only on a flow's first packet, never on the hit path.

use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup,
    },
    helpers::bpf_fib_lookup as fib_lookup,
};
use datapath_abi::FlowKey;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The interface the routing table sends `key` out of, having entered on `ingress`; 0 when there is no route.
#[inline(always)]
pub fn egress_ifindex(skb: *mut __sk_buff, key: &FlowKey, ipv4: bool, ingress: u32) -> u32 {
    // SAFETY: bpf_fib_lookup is plain integers and unions of integers; all-zero is a valid request.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.l4_protocol = key.l4_proto;
    params.sport = key.src_port;
    params.dport = key.dst_port;
    params.ifindex = ingress;
    let [w0, w1, w2, w3] = words(&key.dst_addr);
    let [s0, s1, s2, s3] = words(&key.src_addr);
    if ipv4 {
        params.family = AF_INET;
        params.__bindgen_anon_3.ipv4_src = s3;
        params.__bindgen_anon_4.ipv4_dst = w3;
    } else {
        params.family = AF_INET6;
        params.__bindgen_anon_3.ipv6_src = [s0, s1, s2, s3];
        params.__bindgen_anon_4.ipv6_dst = [w0, w1, w2, w3];
    }
    // SAFETY: the helper reads and writes `params` (its size passed) on our own skb.
    let rc = unsafe { fib_lookup(skb.cast(), &mut params, size_of::<bpf_fib_lookup>() as i32, 0) };
    // The egress interface is filled in before the neighbour and MTU checks, so it holds for these too.
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH | BPF_FIB_LKUP_RET_FRAG_NEEDED => params.ifindex,
        _ => 0,
    }
}

#[inline(always)]
fn words(addr: &[u8; 16]) -> [u32; 4] {
    core::array::from_fn(|i| u32::from_ne_bytes([addr[4 * i], addr[4 * i + 1], addr[4 * i + 2], addr[4 * i + 3]]))
}
