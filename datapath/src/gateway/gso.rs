//! UDP segmentation offload both ways, on one socket at a time, and the batched reads and sends around it.
//!
//! - Send (GSO, `UDP_SEGMENT`): one buffer of same-size datagrams (the last may be shorter) leaves in one
//!   system call; the stack builds and routes one large datagram and segments it late.
//! - Receive (GRO, `UDP_GRO`): a socket that asks for it may be handed several datagrams of one flow, which the
//!   receiving device's GRO merged, as one buffer with a `UDP_GRO` control message giving the segment size;
//!   [`GroBuffer::segments`] splits it back. The layout is the one a GSO send takes, so a merged buffer can leave
//!   again in one GSO send with its boundaries intact.
//! - Batches: [`GroBatch`] reads up to a batch of receives (datagrams or merged runs) in one `recvmmsg`;
//!   replies leave through [`sys::GsoSender`] (same-size runs as GSO messages, the rest one by one, in one
//!   `sendmmsg`), the sender shared with the DNS forwarder.

use std::{io, net::SocketAddr, os::fd::RawFd};

use dns::service::sys::{self, UDP_GRO, UDP_SEGMENT};

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

/// Buffers for one `recvmmsg` of up to `count` receives on a GRO socket, each a datagram or a merged run.
pub struct GroBatch {
    /// `count` buffers of `buf_len` bytes, back to back (resident only where datagrams reached).
    bufs: Vec<u8>,
    buf_len: usize,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<[u64; GRO_CONTROL_WORDS]>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// What the last call got, with the index of the buffer holding it.
    received: Vec<(GroBuffer, usize)>,
}

// SAFETY: the raw pointers in `iovecs` and `headers` point into the batch's own heap buffers (which move with
// it) and are rewritten before every call; nothing else holds them.
unsafe impl Send for GroBatch {}

impl std::fmt::Debug for GroBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroBatch").field("received", &self.received.len()).finish()
    }
}

impl GroBatch {
    /// Room for `count` receives of up to `buf_len` bytes each.
    pub fn new(count: usize, buf_len: usize) -> Self {
        Self {
            bufs: vec![0u8; count * buf_len],
            buf_len,
            // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero is valid.
            names: vec![unsafe { std::mem::zeroed() }; count],
            controls: vec![[0u64; GRO_CONTROL_WORDS]; count],
            // SAFETY: as above.
            iovecs: vec![unsafe { std::mem::zeroed() }; count],
            // SAFETY: as above.
            headers: vec![unsafe { std::mem::zeroed() }; count],
            received: Vec::with_capacity(count),
        }
    }

    /// Receives what is queued, up to the batch's size, without blocking (`WouldBlock` when nothing is). A
    /// receive larger than its buffer or without a sender address is left out and counted in the second value.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<(usize, usize)> {
        self.received.clear();
        let count = self.headers.len();
        for i in 0..count {
            let buf = &mut self.bufs[i * self.buf_len..(i + 1) * self.buf_len];
            self.iovecs[i] = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = self.controls[i].as_mut_ptr().cast();
            header.msg_controllen = size_of::<[u64; GRO_CONTROL_WORDS]>();
            header.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` that outlive the call, with their lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut bad = 0;
        for i in 0..n as usize {
            let header = &self.headers[i].msg_hdr;
            // SAFETY: the kernel wrote msg_namelen bytes of a socket address into names[i].
            let name = unsafe {
                std::slice::from_raw_parts(
                    (&self.names[i] as *const libc::sockaddr_storage).cast::<u8>(),
                    (header.msg_namelen as usize).min(size_of::<libc::sockaddr_storage>()),
                )
            };
            let (Some(from), false) = (sys::sockaddr_from_bytes(name), header.msg_flags & libc::MSG_TRUNC != 0) else {
                bad += 1;
                continue;
            };
            let len = self.headers[i].msg_len as usize;
            // SAFETY: the header's control fields describe what the kernel filled for this message.
            let segment = unsafe { gro_segment(header) }.unwrap_or(len);
            self.received.push((GroBuffer { len, from, segment }, i));
        }
        Ok((self.received.len(), bad))
    }

    /// What the last call received, each with its bytes, in arrival order.
    pub fn received(&self) -> impl Iterator<Item = (GroBuffer, &[u8])> {
        self.received.iter().map(|&(got, i)| (got, &self.bufs[i * self.buf_len..][..got.len]))
    }
}

/// The segment size a `UDP_GRO` control message of `msg` gives, if any.
///
/// # Safety
/// `msg.msg_control` / `msg_controllen` must describe the control bytes the kernel filled for `msg`.
unsafe fn gro_segment(msg: &libc::msghdr) -> Option<usize> {
    // SAFETY: CMSG_FIRSTHDR/NXTHDR stay within the control buffer the caller vouches for; the data of a UDP_GRO
    // cmsg is an int, read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                if size > 0 {
                    return Some(size as usize);
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
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

    fn pair() -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_gro(rx.as_raw_fd()).unwrap();
        rx.set_nonblocking(true).unwrap();
        (rx, UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    #[test]
    fn a_batch_reads_what_is_queued_in_order_with_senders_and_sizes_then_would_block() {
        let (rx, a) = pair();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        for i in 0..6u8 {
            let from = if i % 2 == 0 { &a } else { &b };
            from.send_to(&vec![i; 100 + usize::from(i)], to).unwrap();
        }
        let mut batch = GroBatch::new(4, 65_535);
        let mut got = Vec::new();
        for expect in [4, 2] {
            assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), (expect, 0));
            got.extend(batch.received().map(|(r, bytes)| (r.from, r.segment, bytes.to_vec())));
        }
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let want: Vec<_> = (0..6u8)
            .map(|i| {
                let from = if i % 2 == 0 { &a } else { &b };
                (from.local_addr().unwrap(), 100 + usize::from(i), vec![i; 100 + usize::from(i)])
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_gso_send_to_a_gro_socket_on_loopback_is_read_as_one_merged_run() {
        // Loopback hands a GSO send to a GRO socket unsegmented: one receive, its segment size in the cmsg.
        let (rx, tx) = pair();
        let payload: Vec<u8> = (0..2_500u32).map(|i| i as u8).collect();
        send_gso(tx.as_raw_fd(), rx.local_addr().unwrap(), 1_000, &payload).unwrap();
        let mut batch = GroBatch::new(8, 65_535);
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), (1, 0));
        let (got, bytes) = batch.received().next().unwrap();
        assert_eq!((got.len, got.segment, got.count()), (2_500, 1_000, 3));
        assert_eq!(got.segments(bytes).map(<[u8]>::len).collect::<Vec<_>>(), [1_000, 1_000, 500]);
        assert_eq!(bytes, payload);
    }

    #[test]
    fn a_receive_larger_than_its_buffer_is_counted_and_left_out_not_cut() {
        let (rx, tx) = pair();
        let to = rx.local_addr().unwrap();
        tx.send_to(&[1u8; 10], to).unwrap();
        tx.send_to(&[2u8; 100], to).unwrap();
        tx.send_to(&[3u8; 20], to).unwrap();
        let mut batch = GroBatch::new(8, 50);
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), (2, 1));
        let got: Vec<Vec<u8>> = batch.received().map(|(_, bytes)| bytes.to_vec()).collect();
        assert_eq!(got, [vec![1u8; 10], vec![3u8; 20]]);
    }

    /// The reply path's sender: borrowed payloads to one address, as `UdpRelay::send_run` hands them over.
    fn reply_sender() -> sys::GsoSender {
        sys::GsoSender::new(true).with_max_segment(usize::from(u16::MAX))
    }

    #[test]
    fn replies_leave_intact_and_in_order_with_same_size_runs_as_gso_messages() {
        let (rx, tx) = pair();
        tx.set_nonblocking(true).unwrap();
        let to = rx.local_addr().unwrap();
        // Three runs of one size each (the last datagram of a run may be shorter), then singles of rising size.
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        for (i, len) in [(0u8, 1_200), (1, 1_200), (2, 1_200), (3, 700), (4, 500), (5, 500), (6, 900)] {
            payloads.push(vec![i; len]);
        }
        payloads.extend((7..40u8).map(|i| vec![i; 1 + usize::from(i) * 30]));
        let datagrams: Vec<(SocketAddr, &[u8])> = payloads.iter().map(|p| (to, p.as_slice())).collect();
        let mut sender = reply_sender();
        assert_eq!(sender.send(tx.as_raw_fd(), false, &datagrams).datagrams, payloads.len());
        assert!(sender.gso_messages() >= 2, "{} GSO messages", sender.gso_messages());
        let mut batch = GroBatch::new(64, 65_535);
        let (mut got, mut merged) = (Vec::new(), 0);
        while let Ok((n, _)) = batch.recv(rx.as_raw_fd()) {
            assert!(n > 0);
            for (r, bytes) in batch.received() {
                // The receiving socket asked for GRO: a GSO message arrives as one merged buffer.
                merged += usize::from(r.count() > 1);
                got.extend(r.segments(bytes).map(<[u8]>::to_vec));
            }
        }
        assert_eq!(got, payloads);
        assert_eq!(merged as u64, sender.gso_messages());
    }

    #[test]
    fn a_reply_the_kernel_refuses_is_skipped_and_the_rest_sent() {
        let (rx, tx) = pair();
        let to = rx.local_addr().unwrap();
        let too_big = vec![0u8; 70_000];
        let datagrams: [(SocketAddr, &[u8]); 3] = [(to, b"one"), (to, &too_big), (to, b"three")];
        assert_eq!(reply_sender().send(tx.as_raw_fd(), false, &datagrams).datagrams, 2);
        let mut batch = GroBatch::new(8, 65_535);
        batch.recv(rx.as_raw_fd()).unwrap();
        let got: Vec<Vec<u8>> = batch.received().map(|(_, bytes)| bytes.to_vec()).collect();
        assert_eq!(got, [b"one".to_vec(), b"three".to_vec()]);
    }
}
