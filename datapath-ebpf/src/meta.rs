//! The XDP -> tc parse summary (`datapath_abi::XdpMeta`).

use core::mem::size_of;

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    helpers::bpf_xdp_adjust_meta,
};
use datapath_abi::{
    XdpMeta,
    meta::{META_F_FRAGMENT, VLAN_HLEN, XDP_META_MAGIC},
};

use crate::parse::{Headers, MAX_L4_OFFSET};

const META_LEN: usize = size_of::<XdpMeta>();

/// Writes the summary of `h` in front of the frame. Returns false when the driver has no metadata room, or the
/// loader turned the summary off (the kernel refused `bpf_xdp_adjust_meta`).
#[inline(always)]
pub fn write(ctx: *mut xdp_md, h: &Headers, ifindex: u32) -> bool {
    if !crate::maps::xdp_meta() {
        return false;
    }
    // SAFETY: ctx is the program's context; a negative delta grows the metadata area.
    if unsafe { bpf_xdp_adjust_meta(ctx.cast(), -(META_LEN as i32)) } != 0 {
        return false;
    }
    // SAFETY: reading context fields the verifier allows for XDP.
    let (meta, data) = unsafe { ((*ctx).data_meta as usize, (*ctx).data as usize) };
    if meta + META_LEN > data {
        return false;
    }
    let summary = XdpMeta {
        magic: XDP_META_MAGIC,
        ingress_ifindex: ifindex,
        l3_offset: h.l3 as u16,
        l4_offset: h.l4 as u16,
        ip_version: h.version,
        l4_proto: h.proto,
        vlan_tags: h.vlan_tags,
        flags: if h.fragment { META_F_FRAGMENT } else { 0 },
    };
    // SAFETY: [meta, meta + META_LEN) was checked to lie inside the metadata area.
    unsafe { core::ptr::write_unaligned(meta as *mut XdpMeta, summary) };
    true
}

/// The summary our XDP program left for this skb, adjusted for a VLAN tag the kernel has since stripped.
#[inline(always)]
pub fn read<const L2: bool>(skb: *mut __sk_buff) -> Option<Headers> {
    // SAFETY: context fields readable by tc programs.
    let (meta, data, ifindex, vlan_present) =
        unsafe { ((*skb).data_meta as usize, (*skb).data as usize, (*skb).ifindex, (*skb).vlan_present) };
    if meta + META_LEN > data {
        return None;
    }
    // SAFETY: [meta, meta + META_LEN) lies inside the metadata area (checked above).
    let m = unsafe { core::ptr::read_unaligned(meta as *const XdpMeta) };
    if m.magic != XDP_META_MAGIC || m.ingress_ifindex != ifindex {
        return None;
    }
    let stripped = if L2 && vlan_present != 0 { VLAN_HLEN as usize } else { 0 };
    let (l3, l4) = (m.l3_offset as usize, m.l4_offset as usize);
    if l3 < stripped || l4 < l3 || l4 > MAX_L4_OFFSET {
        return None;
    }
    Some(Headers {
        l3: l3 - stripped,
        l4: l4 - stripped,
        version: m.ip_version,
        proto: m.l4_proto,
        vlan_tags: m.vlan_tags,
        fragment: m.flags & META_F_FRAGMENT != 0,
        first_fragment: false,
        fragment_id: 0,
    })
}
