//! Header parsing over direct packet access, shared by XDP and tc.
//!
//! One walk: Ethernet (L2 variants only), up to two VLAN tags, IPv4 or IPv6 with up to eight extension headers,
//! then the TCP/UDP ports. Every read is bounds-checked against the end of the linear data; offsets are bounded
//! by [`MAX_L4_OFFSET`] so the verifier can prove each access.

use core::mem::size_of;

use datapath_abi::{
    FlowKey,
    flow::{IPPROTO_TCP, IPPROTO_UDP, V4_MAPPED_PREFIX},
    meta::{MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS},
};

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const IPV4_FRAG_MASK: u16 = 0x3fff; // MF flag + fragment offset: any fragment, first or later
const IPV4_FRAG_OFFSET: u16 = 0x1fff; // fragment offset (8-byte units): 0 in a first fragment
const IPV6_FRAG_OFFSET: u16 = 0xfff8; // the fragment header's offset bits: 0 in a first fragment
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;
const TCP_FLAGS_OFFSET: usize = 13;
/// Headers may end at most this far into a packet; a deeper chain (only possible with many large IPv6 extension
/// headers) passes untouched. Also the bound the verifier needs for variable offsets.
pub const MAX_L4_OFFSET: usize = 512;

/// Where the headers are and what they say.
#[derive(Clone, Copy)]
pub struct Headers {
    /// IP header offset.
    pub l3: usize,
    /// Transport header offset.
    pub l4: usize,
    /// 4 or 6.
    pub version: u8,
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// VLAN tags walked.
    pub vlan_tags: u8,
    /// First or later IP fragment.
    pub fragment: bool,
    /// A fragment at offset 0 (it carries the transport header); read by a linear parse only, never from XDP
    /// metadata.
    pub first_fragment: bool,
    /// The fragment's IP identification (IPv4's 16 bits, IPv6's 32); 0 unless `fragment` and parsed linearly.
    pub fragment_id: u32,
}

/// Why a packet is not tagged.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not IPv4/IPv6.
    NotIp,
    /// A header extends past the linear data (tc may pull and retry).
    Truncated,
    /// Inconsistent header (IPv4 IHL < 5, header chain too long).
    Malformed,
}

/// Reads a `T` at `off`, if it lies inside `[start, end)`.
///
/// At least two bytes must lie inside: LLVM turns a one-byte check `ptr + 1 > end` into `ptr >= end`, from which
/// the verifier learns no range when the offset is variable or zero. Every one-byte field we read is followed by
/// more header, so the extra byte never turns a valid packet away.
///
/// Reads assume 2-byte alignment: frames start at least 2-aligned and every header we walk has an even length,
/// so each field sits at an even address. LLVM then loads 16 bits at a time instead of byte by byte (the target
/// cannot promise misaligned loads without also misaligning stack slots, which the verifier rejects).
#[inline(always)]
pub fn load<T: Copy>(start: usize, end: usize, off: usize) -> Result<T, Skip> {
    let need = if size_of::<T>() < 2 { 2 } else { size_of::<T>() };
    if off > MAX_L4_OFFSET + 64 || start + off + need > end {
        return Err(Skip::Truncated);
    }
    if size_of::<T>() == 1 {
        // SAFETY: bounds checked above; one byte has no alignment.
        return Ok(unsafe { core::ptr::read_unaligned((start + off) as *const T) });
    }
    // SAFETY: bounds checked above; the address is 2-aligned (see above), which is all Align2 asks for.
    Ok(unsafe { core::ptr::read((start + off) as *const Align2<T>) }.0)
}

/// A value read with 2-byte alignment.
#[repr(C, packed(2))]
#[derive(Clone, Copy)]
struct Align2<T>(T);

/// Walks link, VLAN and IP headers.
#[inline(always)]
pub fn headers<const L2: bool>(start: usize, end: usize) -> Result<Headers, Skip> {
    let mut l3 = 0usize;
    let mut vlan_tags = 0u8;
    let version = if L2 {
        let mut ethertype = u16::from_be(load::<u16>(start, end, 12)?);
        l3 = ETH_HLEN;
        for _ in 0..MAX_VLAN_TAGS {
            if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
                break;
            }
            ethertype = u16::from_be(load::<u16>(start, end, l3 + 2)?);
            l3 += 4;
            vlan_tags += 1;
        }
        match ethertype {
            ETH_P_IP => 4,
            ETH_P_IPV6 => 6,
            _ => return Err(Skip::NotIp),
        }
    } else {
        match load::<u8>(start, end, 0)? >> 4 {
            4 => 4,
            6 => 6,
            _ => return Err(Skip::NotIp),
        }
    };
    if version == 4 { ipv4(start, end, l3, vlan_tags) } else { ipv6(start, end, l3, vlan_tags) }
}

#[inline(always)]
fn ipv4(start: usize, end: usize, l3: usize, vlan_tags: u8) -> Result<Headers, Skip> {
    let ihl = (load::<u8>(start, end, l3)? & 0x0f) as usize * 4;
    if ihl < IPV4_MIN_HLEN {
        return Err(Skip::Malformed);
    }
    let [id, frag] = load::<[u16; 2]>(start, end, l3 + 4)?;
    let frag = u16::from_be(frag);
    let proto = load::<u8>(start, end, l3 + 9)?;
    let fragment = frag & IPV4_FRAG_MASK != 0;
    Ok(Headers {
        l3,
        l4: l3 + ihl,
        version: 4,
        proto,
        vlan_tags,
        fragment,
        first_fragment: fragment && frag & IPV4_FRAG_OFFSET == 0,
        fragment_id: if fragment { u32::from(u16::from_be(id)) } else { 0 },
    })
}

#[inline(always)]
fn ipv6(start: usize, end: usize, l3: usize, vlan_tags: u8) -> Result<Headers, Skip> {
    let mut next = load::<u8>(start, end, l3 + 6)?;
    let mut l4 = l3 + IPV6_HLEN;
    let (mut fragment, mut first_fragment, mut fragment_id) = (false, false, 0);
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !matches!(next, NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_AUTH | NEXTHDR_FRAGMENT) {
            break;
        }
        // Next header and length in one two-byte load: a one-byte load at a variable offset compiles to
        // `ptr >= end`, from which the verifier learns no range.
        let [following, hdr_len] = load::<[u8; 2]>(start, end, l4)?;
        l4 += match next {
            NEXTHDR_AUTH => (hdr_len as usize + 2) * 4,
            NEXTHDR_FRAGMENT => 8,
            _ => (hdr_len as usize + 1) * 8,
        };
        if l4 > MAX_L4_OFFSET {
            return Err(Skip::Malformed);
        }
        if next == NEXTHDR_FRAGMENT {
            // Next header, reserved, offset and flags, then the 32-bit identification.
            let [_, offset, id_high, id_low] = load::<[u16; 4]>(start, end, l4 - 8)?;
            fragment = true;
            first_fragment = u16::from_be(offset) & IPV6_FRAG_OFFSET == 0;
            fragment_id = u32::from(u16::from_be(id_high)) << 16 | u32::from(u16::from_be(id_low));
            next = following;
            break;
        }
        next = following;
    }
    Ok(Headers { l3, l4, version: 6, proto: next, vlan_tags, fragment, first_fragment, fragment_id })
}

/// Whether `proto` is tagged.
#[inline(always)]
pub fn is_tcp_or_udp(proto: u8) -> bool {
    proto == IPPROTO_TCP || proto == IPPROTO_UDP
}

/// Fills `key` from a TCP/UDP packet and returns its TCP flags byte (0 for UDP).
///
/// The key is assembled as five little-endian words in registers and stored whole: the hash then reads the words
/// back from the stack, and a word store forwards to a word load where four half-word stores would not.
#[inline(always)]
pub fn flow_key(start: usize, end: usize, h: &Headers, key: &mut FlowKey) -> Result<u8, Skip> {
    if h.l3 > MAX_L4_OFFSET || h.l4 > MAX_L4_OFFSET {
        return Err(Skip::Malformed);
    }
    let (src, dst) = if h.version == 4 {
        let a = load::<[u16; 4]>(start, end, h.l3 + 12)?;
        // ::ffff:a.b.c.d: bytes 8..12 are 00 00 ff ff, bytes 12..16 the address.
        let mapped = |lo: u16, hi: u16| V4_MAPPED_WORD | u64::from(lo) << 32 | u64::from(hi) << 48;
        ([0, mapped(a[0], a[1])], [0, mapped(a[2], a[3])])
    } else {
        let a = load::<[u16; 16]>(start, end, h.l3 + 8)?;
        let word = |i: usize| {
            u64::from(a[i]) | u64::from(a[i + 1]) << 16 | u64::from(a[i + 2]) << 32 | u64::from(a[i + 3]) << 48
        };
        ([word(0), word(4)], [word(8), word(12)])
    };
    let ports = load::<[u16; 2]>(start, end, h.l4)?;
    let tail = u64::from(ports[0]) | u64::from(ports[1]) << 16 | u64::from(h.proto) << 32;
    *key = FlowKey::from_words([src[0], src[1], dst[0], dst[1], tail]);
    if h.proto == IPPROTO_TCP { load::<u8>(start, end, h.l4 + TCP_FLAGS_OFFSET) } else { Ok(0) }
}

/// Bytes 8..16 of `::ffff:0.0.0.0` as a little-endian word.
const V4_MAPPED_WORD: u64 = u64::from_le_bytes([
    V4_MAPPED_PREFIX[8],
    V4_MAPPED_PREFIX[9],
    V4_MAPPED_PREFIX[10],
    V4_MAPPED_PREFIX[11],
    0,
    0,
    0,
    0,
]);
