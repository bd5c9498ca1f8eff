//! UDP segmentation offload both ways, on one socket at a time.
//!
//! - Send (GSO, `UDP_SEGMENT`): one buffer of same-size datagrams (the last may be shorter) leaves in one
//!   system call; the stack builds and routes one large datagram and segments it late.
//! - Receive (GRO, `UDP_GRO`): a socket that asks for it may be handed several datagrams of one flow, which the
//!   receiving device's GRO merged, as one buffer with a `UDP_GRO` control message giving the segment size;
//!   [`GroBuffer::segments`] splits it back. The layout is the one a GSO send takes, so a merged buffer can leave
//!   again in one GSO send with its boundaries intact.

use std::{io, net::SocketAddr, os::fd::RawFd};

use dns::service::sys;

/// `UDP_SEGMENT` (linux/udp.h): the segment size of a GSO send.
const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO` (linux/udp.h): the socket option asking for merged receives, and the control message type giving
/// their segment size.
const UDP_GRO: libc::c_int = 104;
/// Datagrams per GSO send (the kernel's limit, `UDP_MAX_SEGMENTS`, is 64).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Bytes per GSO send (one IP datagram's payload).
pub const MAX_GSO_BYTES: usize = 65_000;
/// Control buffer of a GRO receive: one `UDP_GRO` cmsg with an int (`CMSG_SPACE(4)` = 24 bytes), with room to
/// spare.
const GRO_CONTROL_WORDS: usize = 8;

/// Sends `buf` to `to` as datagrams of `segment` bytes (the last may be shorter) in one system call.
pub fn send_gso(fd: RawFd, to: SocketAddr, segment: u16, buf: &[u8]) -> io::Result<()> {
    let addr = socket2::SockAddr::from(to);
    let mut iov = libc::iovec { iov_base: buf.as_ptr().cast_mut().cast(), iov_len: buf.len() };
    let mut control = [0u64; 4];
    // SAFETY: all-zero is a valid msghdr; every pointer set below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_ptr().cast_mut().cast();
    msg.msg_namelen = addr.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
    // SAFETY: the control buffer (32 bytes) holds one cmsg with a u16 payload (CMSG_SPACE(2) = 24); CMSG_FIRSTHDR
    // points into it and CMSG_DATA past its header.
    let rc = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
        libc::sendmsg(fd, &msg, 0)
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Asks the kernel to hand `fd` merged same-flow datagrams (when the receiving device merged them).
pub fn enable_gro(fd: RawFd) -> io::Result<()> {
    sys::set_int_opt(fd, libc::SOL_UDP, UDP_GRO, 1)
}

/// What one receive on a GRO socket got: `len` bytes in the caller's buffer from `from`, made of datagrams of
/// `segment` bytes (the last may be shorter); `segment == len` for a single datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroBuffer {
    /// Bytes received.
    pub len: usize,
    /// Sender.
    pub from: SocketAddr,
    /// Size of each datagram but the last.
    pub segment: usize,
}

impl GroBuffer {
    /// The datagrams of `buf[..self.len]`, in order.
    pub fn segments<'b>(&self, buf: &'b [u8]) -> impl Iterator<Item = &'b [u8]> + use<'b> {
        buf[..self.len].chunks(self.segment.max(1))
    }

    /// How many datagrams the buffer holds.
    pub fn count(&self) -> usize {
        if self.len == 0 { 1 } else { self.len.div_ceil(self.segment.max(1)) }
    }
}

/// One receive into `buf` (nonblocking as the socket is), with the segment size of a merged buffer. A datagram
/// larger than `buf` is an error (`InvalidData`): a merged buffer cut short would lose datagrams silently.
pub fn recv_gro(fd: RawFd, buf: &mut [u8]) -> io::Result<GroBuffer> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut control = [0u64; GRO_CONTROL_WORDS];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    // SAFETY: every pointer in msg points at a live buffer of the length given beside it.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "datagram larger than the receive buffer"));
    }
    let len = n as usize;
    // SAFETY: the kernel wrote msg_namelen bytes of a socket address into `name`.
    let name_bytes = unsafe {
        std::slice::from_raw_parts((&name as *const libc::sockaddr_storage).cast::<u8>(), msg.msg_namelen as usize)
    };
    let from = sys::sockaddr_from_bytes(name_bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no sender address"))?;
    let mut segment = len;
    // SAFETY: the control buffer and msg_controllen are what the kernel filled; CMSG_FIRSTHDR/NXTHDR stay within
    // them and CMSG_DATA of a UDP_GRO cmsg holds an int (read unaligned).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                if size > 0 {
                    segment = size as usize;
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(GroBuffer { len, from, segment })
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn a_merged_buffer_splits_into_its_datagrams_the_last_shorter() {
        let from = "127.0.0.1:9".parse().unwrap();
        let got = GroBuffer { len: 2_500, from, segment: 1_000 };
        let buf: Vec<u8> = (0..2_500).map(|i| i as u8).collect();
        let parts: Vec<&[u8]> = got.segments(&buf).collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [1_000, 1_000, 500]);
        assert_eq!(parts.concat(), buf);
        assert_eq!(got.count(), 3);
        let single = GroBuffer { len: 0, from, segment: 0 };
        assert_eq!(single.count(), 1);
    }

    #[test]
    fn a_gro_socket_reads_single_datagrams_with_their_sender_and_size() {
        // Loopback does no GRO: each datagram comes alone, its segment size its length.
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_gro(rx.as_raw_fd()).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[7u8; 300], rx.local_addr().unwrap()).unwrap();
        let mut buf = vec![0u8; 65_535];
        let got = recv_gro(rx.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(got, GroBuffer { len: 300, from: tx.local_addr().unwrap(), segment: 300 });
        assert!(buf[..300].iter().all(|&b| b == 7));
    }

    #[test]
    fn a_datagram_larger_than_the_buffer_is_an_error_not_a_silent_cut() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[1u8; 100], rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 10];
        let e = recv_gro(rx.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
