//! Captured frames down to UDP datagrams and TCP segments: Ethernet (with up to two VLAN tags), Linux cooked
//! captures v1 and v2 (`tshark -i any`), raw IP and BSD loopback; IPv4 and IPv6 (skipping the common extension
//! headers). IP fragments are skipped: no reassembly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::sniff::wire::Reader;

/// Link-layer header types (tcpdump.org LINKTYPE_* values) that frames can be decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_LINUX_SLL (113): 16-byte cooked header, protocol at bytes 14-15.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): 20-byte cooked header, protocol at bytes 0-1.
    LinuxSll2,
    /// LINKTYPE_RAW (101), LINKTYPE_IPV4 (228), LINKTYPE_IPV6 (229): the IP header first.
    RawIp,
    /// LINKTYPE_NULL (0, host byte order) and LINKTYPE_LOOP (108, network order): a 4-byte address family.
    Loopback,
}

impl Link {
    /// The decoder for a LINKTYPE_* value, if supported.
    pub(crate) fn from_linktype(linktype: u32) -> Option<Self> {
        match linktype {
            1 => Some(Self::Ethernet),
            113 => Some(Self::LinuxSll),
            276 => Some(Self::LinuxSll2),
            101 | 228 | 229 => Some(Self::RawIp),
            0 | 108 => Some(Self::Loopback),
            _ => None,
        }
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
/// At most two stacked VLAN tags (802.1ad outer plus 802.1Q inner).
const MAX_VLAN_TAGS: usize = 2;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
/// IPv6 extension headers walked over: hop-by-hop, routing, destination options.
const IPV6_SKIPPABLE: [u8; 3] = [0, 43, 60];
/// Extension headers walked before giving up on a packet.
const MAX_IPV6_EXTENSIONS: usize = 8;

/// The transport part of a decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport<'a> {
    Udp { payload: &'a [u8] },
    Tcp { seq: u32, syn: bool, ack: bool, payload: &'a [u8] },
}

/// A decoded UDP datagram or TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: Transport<'a>,
}

/// Decodes one captured frame; `None` for anything that is not an unfragmented UDP or TCP packet over IP.
pub(crate) fn decode(link: Link, frame: &[u8]) -> Option<Segment<'_>> {
    let mut r = Reader::new(frame);
    let ip = match link {
        Link::Ethernet => {
            r.skip(12)?;
            let mut ethertype = r.u16()?;
            for _ in 0..MAX_VLAN_TAGS {
                if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
                    break;
                }
                r.skip(2)?;
                ethertype = r.u16()?;
            }
            matches!(ethertype, ETHERTYPE_IPV4 | ETHERTYPE_IPV6).then_some(r.rest())?
        }
        Link::LinuxSll => {
            r.skip(14)?;
            matches!(r.u16()?, ETHERTYPE_IPV4 | ETHERTYPE_IPV6).then_some(r.rest())?
        }
        Link::LinuxSll2 => {
            let protocol = r.u16()?;
            r.skip(18)?;
            matches!(protocol, ETHERTYPE_IPV4 | ETHERTYPE_IPV6).then_some(r.rest())?
        }
        Link::RawIp => frame,
        Link::Loopback => {
            r.skip(4)?;
            r.rest()
        }
    };
    match ip.first()? >> 4 {
        4 => ipv4(ip),
        6 => ipv6(ip),
        _ => None,
    }
}

fn ipv4(packet: &[u8]) -> Option<Segment<'_>> {
    let mut r = Reader::new(packet);
    let header_len = usize::from(r.u8()? & 0x0f) * 4;
    r.skip(1)?;
    let total_len = usize::from(r.u16()?);
    r.skip(2)?;
    let fragment = r.u16()?;
    // More-fragments flag or a non-zero offset: a fragment.
    if fragment & 0x3fff != 0 {
        return None;
    }
    r.skip(1)?;
    let protocol = r.u8()?;
    r.skip(2)?;
    let src = Ipv4Addr::from(r.array::<4>()?);
    let dst = Ipv4Addr::from(r.array::<4>()?);
    // Ethernet pads short frames: the IP total length says where the packet ends.
    let body = packet.get(header_len..total_len.min(packet.len())).filter(|_| header_len >= 20)?;
    transport(IpAddr::V4(src), IpAddr::V4(dst), protocol, body)
}

fn ipv6(packet: &[u8]) -> Option<Segment<'_>> {
    let mut r = Reader::new(packet);
    r.skip(4)?;
    let payload_len = usize::from(r.u16()?);
    let mut next = r.u8()?;
    r.skip(1)?;
    let src = Ipv6Addr::from(r.array::<16>()?);
    let dst = Ipv6Addr::from(r.array::<16>()?);
    let payload = r.rest();
    let mut r = Reader::new(payload.get(..payload_len.min(payload.len()))?);
    for _ in 0..MAX_IPV6_EXTENSIONS {
        if !IPV6_SKIPPABLE.contains(&next) {
            break;
        }
        next = r.u8()?;
        let len = (usize::from(r.u8()?) + 1) * 8;
        r.skip(len - 2)?;
    }
    transport(IpAddr::V6(src), IpAddr::V6(dst), next, r.rest())
}

fn transport(src: IpAddr, dst: IpAddr, protocol: u8, body: &[u8]) -> Option<Segment<'_>> {
    let mut r = Reader::new(body);
    let (sport, dport) = (r.u16()?, r.u16()?);
    let transport = match protocol {
        PROTO_UDP => {
            let len = usize::from(r.u16()?);
            r.skip(2)?;
            let payload = body.get(8..len.min(body.len())).filter(|_| len >= 8)?;
            Transport::Udp { payload }
        }
        PROTO_TCP => {
            let seq = r.u32()?;
            r.skip(4)?;
            let offset = usize::from(r.u8()? >> 4) * 4;
            let flags = r.u8()?;
            Transport::Tcp { seq, syn: flags & 0x02 != 0, ack: flags & 0x10 != 0, payload: body.get(offset..)? }
        }
        _ => return None,
    };
    Some(Segment { src: SocketAddr::new(src, sport), dst: SocketAddr::new(dst, dport), transport })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_v4(payload: &[u8]) -> Vec<u8> {
        let total = 20 + 8 + payload.len();
        let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, PROTO_UDP, 0, 0];
        p.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend_from_slice(&[0x30, 0x39, 0x01, 0xbb]);
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn ethernet_vlan_ipv4_udp_is_decoded_without_trailing_padding() {
        let mut frame = vec![0; 12];
        frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
        frame.extend_from_slice(&udp_v4(b"hi"));
        frame.extend_from_slice(&[0; 10]); // Ethernet minimum-size padding
        let seg = decode(Link::Ethernet, &frame).unwrap();
        assert_eq!(seg.src, "10.0.0.1:12345".parse().unwrap());
        assert_eq!(seg.dst, "10.0.0.2:443".parse().unwrap());
        assert_eq!(seg.transport, Transport::Udp { payload: b"hi" });
    }

    #[test]
    fn linux_cooked_v1_and_v2_headers_are_skipped() {
        let mut sll = vec![0; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&udp_v4(b"x"));
        assert!(decode(Link::LinuxSll, &sll).is_some());
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0; 18]);
        sll2.extend_from_slice(&udp_v4(b"x"));
        assert!(decode(Link::LinuxSll2, &sll2).is_some());
    }

    #[test]
    fn fragments_and_truncated_headers_are_skipped() {
        let mut frag = udp_v4(b"x");
        frag[6] = 0x20; // more fragments
        assert_eq!(decode(Link::RawIp, &frag), None);
        let whole = udp_v4(b"x");
        for cut in 0..28 {
            assert_eq!(decode(Link::RawIp, &whole[..cut]), None, "cut at {cut}");
        }
    }
}
