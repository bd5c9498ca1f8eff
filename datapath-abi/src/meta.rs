//! The parse summary XDP leaves in front of the packet (XDP metadata) for tc to read.
//!
//! XDP parses a frame once and writes an [`XdpMeta`] with `bpf_xdp_adjust_meta`; the kernel carries the metadata
//! into the skb (`skb->data_meta .. skb->data`), where the tc ingress program finds it and skips the walk over VLAN
//! tags and IPv6 extension headers. Offsets are relative to the frame XDP saw: when the kernel has since moved the
//! outer VLAN tag into `skb->vlan_tci`, tc subtracts that tag (`VLAN_HLEN`).

use crate::{assert_layout, assert_offset};

/// Marks metadata written by our XDP program ("DAE" + ABI version 1).
pub const XDP_META_MAGIC: u32 = 0xDAE0_0001;
/// Bytes of one 802.1Q/802.1ad tag.
pub const VLAN_HLEN: u16 = 4;
/// Most VLAN tags the parser walks (802.1ad outer + 802.1Q inner).
pub const MAX_VLAN_TAGS: u8 = 2;
/// Most IPv6 extension headers the parser walks before it gives up and passes the packet.
pub const MAX_IPV6_EXT_HEADERS: u8 = 8;

/// [`XdpMeta::flags`]: the packet is an IP fragment (first or later).
pub const META_F_FRAGMENT: u8 = 1 << 0;

/// The parse summary.
///
/// Layout (16 bytes, align 4; XDP metadata length must be a multiple of 4):
/// ```text
///  0..4   magic            u32  XDP_META_MAGIC
///  4..8   ingress_ifindex  u32  the interface XDP ran on
///  8..10  l3_offset        u16  start of the IP header in the XDP frame
/// 10..12  l4_offset        u16  start of the TCP/UDP header (after IPv6 extension headers)
/// 12      ip_version       u8   4 or 6
/// 13      l4_proto         u8   IP protocol number after extension headers
/// 14      vlan_tags        u8   VLAN tags between Ethernet and IP in the XDP frame
/// 15      flags            u8   META_F_*
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpMeta {
    /// `XDP_META_MAGIC`.
    pub magic: u32,
    /// Interface XDP ran on.
    pub ingress_ifindex: u32,
    /// IP header offset in the XDP frame.
    pub l3_offset: u16,
    /// Transport header offset in the XDP frame.
    pub l4_offset: u16,
    /// 4 or 6.
    pub ip_version: u8,
    /// Transport protocol.
    pub l4_proto: u8,
    /// VLAN tags in the XDP frame.
    pub vlan_tags: u8,
    /// `META_F_*`.
    pub flags: u8,
}
assert_layout!(XdpMeta, size = 16, align = 4);
assert_offset!(XdpMeta, magic, 0);
assert_offset!(XdpMeta, ingress_ifindex, 4);
assert_offset!(XdpMeta, l3_offset, 8);
assert_offset!(XdpMeta, l4_offset, 10);
assert_offset!(XdpMeta, ip_version, 12);
assert_offset!(XdpMeta, l4_proto, 13);
assert_offset!(XdpMeta, vlan_tags, 14);
assert_offset!(XdpMeta, flags, 15);
const _: () = assert!(core::mem::size_of::<XdpMeta>().is_multiple_of(4));
