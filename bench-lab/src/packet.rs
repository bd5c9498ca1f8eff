//! Crafted frames for BPF_PROG_TEST_RUN tests and benchmarks: Ethernet, VLAN tags, IPv4 / IPv6 (with
//! extension headers), TCP / UDP / other, fragments, padded to an exact frame length.

use std::net::IpAddr;

/// Ethertype of 802.1Q.
pub const ETH_P_8021Q: u16 = 0x8100;
/// Ethertype of 802.1ad.
pub const ETH_P_8021AD: u16 = 0x88A8;

/// The transport layer of a crafted packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// UDP.
    Udp,
    /// TCP with these flags (0x02 SYN, 0x10 ACK, 0x01 FIN, 0x04 RST).
    Tcp(u8),
    /// Another protocol number with an 8-byte opaque header.
    Other(u8),
}

/// What to build.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Ethernet header in front (false: the frame starts at the IP header).
    pub ethernet: bool,
    /// VLAN tags, outermost first: (TPID, VLAN id).
    pub vlans: Vec<(u16, u16)>,
    /// Source address (the IP version follows it).
    pub src: IpAddr,
    /// Destination address (same family as `src`).
    pub dst: IpAddr,
    /// Transport.
    pub l4: L4,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IPv6 extension headers before the transport header (0 hop-by-hop, 43 routing, 60 destination options,
    /// 51 AH, 44 fragment).
    pub v6_ext: Vec<u8>,
    /// IPv4: set MF / offset as a fragment. IPv6: add a fragment header (unless `v6_ext` has one).
    pub fragment: Option<Fragment>,
    /// Pad (or allow) the whole frame to this many bytes; 0 = no padding.
    pub frame_len: usize,
    /// DSCP (0..=63) in the IPv4 TOS / IPv6 traffic class.
    pub dscp: u8,
    /// Ethernet source address.
    pub src_mac: [u8; 6],
}

/// Fragment position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Offset 0, more fragments follow.
    First,
    /// A later fragment (offset > 0).
    Later,
}

impl Spec {
    /// A UDP packet between two addresses with Ethernet framing.
    pub fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Self {
        Self {
            ethernet: true,
            vlans: Vec::new(),
            src: src.parse().expect("address"),
            dst: dst.parse().expect("address"),
            l4: L4::Udp,
            sport,
            dport,
            v6_ext: Vec::new(),
            fragment: None,
            frame_len: 0,
            dscp: 0,
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
        }
    }

    /// The same with TCP flags.
    pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Self {
        Self { l4: L4::Tcp(flags), ..Self::udp(src, sport, dst, dport) }
    }

    /// Builds the frame.
    pub fn build(&self) -> Vec<u8> {
        let mut l4 = match self.l4 {
            L4::Udp => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&self.sport.to_be_bytes());
                h[2..4].copy_from_slice(&self.dport.to_be_bytes());
                h
            }
            L4::Tcp(flags) => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&self.sport.to_be_bytes());
                h[2..4].copy_from_slice(&self.dport.to_be_bytes());
                h[12] = 5 << 4;
                h[13] = flags;
                h[14..16].copy_from_slice(&64240u16.to_be_bytes());
                h
            }
            L4::Other(_) => vec![0u8; 8],
        };
        let proto = match self.l4 {
            L4::Udp => 17,
            L4::Tcp(_) => 6,
            L4::Other(p) => p,
        };
        let mut frame = Vec::new();
        if self.ethernet {
            frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
            frame.extend_from_slice(&self.src_mac);
            for (tpid, vid) in &self.vlans {
                frame.extend_from_slice(&tpid.to_be_bytes());
                frame.extend_from_slice(&vid.to_be_bytes());
            }
            let ethertype: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86DD };
            frame.extend_from_slice(&ethertype.to_be_bytes());
        }
        let l3_start = frame.len();
        let ip_header_len = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = [0u8; 20];
                h[0] = 0x45;
                h[1] = self.dscp << 2;
                h[8] = 64;
                h[9] = proto;
                let frag: u16 = match self.fragment {
                    None => 0x4000, // DF
                    Some(Fragment::First) => 0x2000,
                    Some(Fragment::Later) => 185,
                };
                h[6..8].copy_from_slice(&frag.to_be_bytes());
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                frame.extend_from_slice(&h);
                20
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut exts = self.v6_ext.clone();
                if self.fragment.is_some() && !exts.contains(&44) {
                    exts.push(44);
                }
                let mut h = vec![0u8; 40];
                let tclass = self.dscp << 2;
                h[0] = 0x60 | tclass >> 4;
                h[1] = tclass << 4;
                h[6] = exts.first().copied().unwrap_or(proto);
                h[7] = 64;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                for (i, ext) in exts.iter().enumerate() {
                    let next = exts.get(i + 1).copied().unwrap_or(proto);
                    match ext {
                        44 => {
                            let off: u16 = match self.fragment {
                                Some(Fragment::Later) => 185 << 3,
                                _ => 1, // M flag, offset 0
                            };
                            h.extend_from_slice(&[next, 0]);
                            h.extend_from_slice(&off.to_be_bytes());
                            h.extend_from_slice(&[0, 0, 0, 1]);
                        }
                        51 => {
                            // AH: length in 4-byte units minus 2; 16 bytes.
                            h.extend_from_slice(&[next, 2]);
                            h.extend_from_slice(&[0u8; 14]);
                        }
                        _ => {
                            // Hop-by-hop / routing / destination options: 16 bytes (hdr ext len 1).
                            h.extend_from_slice(&[next, 1]);
                            h.extend_from_slice(&[0u8; 14]);
                        }
                    }
                }
                frame.extend_from_slice(&h);
                h.len()
            }
            _ => panic!("source and destination must be the same family"),
        };
        frame.append(&mut l4);
        if self.frame_len > frame.len() {
            frame.resize(self.frame_len, 0);
        }
        let ip_total = frame.len() - l3_start;
        if self.src.is_ipv4() {
            frame[l3_start + 2..l3_start + 4].copy_from_slice(&(ip_total as u16).to_be_bytes());
            let csum = checksum(&frame[l3_start..l3_start + 20]);
            frame[l3_start + 10..l3_start + 12].copy_from_slice(&csum.to_be_bytes());
        } else {
            frame[l3_start + 4..l3_start + 6].copy_from_slice(&((ip_total - 40) as u16).to_be_bytes());
        }
        let l4_start = l3_start + ip_header_len;
        if self.l4 == L4::Udp {
            let udp_len = (frame.len() - l4_start) as u16;
            frame[l4_start + 4..l4_start + 6].copy_from_slice(&udp_len.to_be_bytes());
        }
        frame
    }
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_udp_frame_is_padded_and_checksummed() {
        let f = Spec { frame_len: 64, ..Spec::udp("10.0.0.1", 1000, "10.0.0.2", 53) }.build();
        assert_eq!(f.len(), 64);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(checksum(&f[14..34]), 0, "a valid header sums to zero");
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 53);
    }

    #[test]
    fn ipv6_extension_chain_links_to_the_transport() {
        let spec = Spec { v6_ext: vec![0, 60], ..Spec::tcp("fd00::1", 1, "fd00::2", 2, 0x02) };
        let f = spec.build();
        assert_eq!(f[14 + 6], 0, "first next-header is hop-by-hop");
        assert_eq!(f[14 + 40], 60, "hop-by-hop points to destination options");
        assert_eq!(f[14 + 56], 6, "destination options point to TCP");
        assert_eq!(f[14 + 72 + 13], 0x02, "TCP flags where the chain ends");
    }
}
