//! Batched sends that merge runs of datagrams into UDP GSO sends (`UDP_SEGMENT`).
//!
//! Most of a worker's time per cached answer is the kernel's per-datagram path on send: building and routing
//! the skb, the loopback or device transmit, and the receive side up to the client's socket (docs/dns.md). A
//! run of answers to one client of one size leaves as one large datagram that the stack carries once and
//! segments late (on loopback: at the receiving socket). [`GsoSender::send`] finds those runs in a batch
//! without reordering any client's datagrams and sends every run as one `sendmmsg` message.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use super::{BATCH, CONTROL_BUF, Outgoing, std_to_sockaddr, write_pktinfo};

/// What [`GsoSender::send`] sends: a payload, its destination and its source.
pub trait Datagram {
    /// The payload.
    fn payload(&self) -> &[u8];
    /// The destination; `None` on a connected socket.
    fn to(&self) -> Option<SocketAddr>;
    /// The source address and interface to send from (IP_PKTINFO); `None`: the socket's own.
    fn from(&self) -> Option<(std::net::IpAddr, u32)>;
}

impl Datagram for Outgoing {
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn to(&self) -> Option<SocketAddr> {
        self.to
    }
    fn from(&self) -> Option<(std::net::IpAddr, u32)> {
        self.from
    }
}

/// A payload (borrowed, owned, or either) to a destination, from the socket's own address.
impl<P: AsRef<[u8]>> Datagram for (SocketAddr, P) {
    fn payload(&self) -> &[u8] {
        self.1.as_ref()
    }
    fn to(&self) -> Option<SocketAddr> {
        Some(self.0)
    }
    fn from(&self) -> Option<(std::net::IpAddr, u32)> {
        None
    }
}

/// A borrowed payload on a connected socket (to its peer, from the socket's own address).
impl Datagram for &[u8] {
    fn payload(&self) -> &[u8] {
        self
    }
    fn to(&self) -> Option<SocketAddr> {
        None
    }
    fn from(&self) -> Option<(std::net::IpAddr, u32)> {
        None
    }
}

/// `UDP_SEGMENT` (linux/udp.h): the segment size of a GSO send.
pub const UDP_SEGMENT: libc::c_int = 103;
/// Datagrams per GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64 before 6.9, 128 after).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Bytes per GSO send: one IP datagram's payload, with room for IPv6 and UDP headers under 65,535.
pub const MAX_GSO_BYTES: usize = 65_000;
/// Largest datagram sent as a GSO segment: the kernel refuses a segment that with its headers exceeds the
/// path MTU (EINVAL), and 1,232 bytes (the DNS flag day 2020 size) fits any Ethernet path with IPv6 headers.
/// Larger answers leave one by one, fragmented as before.
pub const MAX_GSO_SEGMENT: usize = 1_232;

/// What one [`GsoSender::send`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams that left (the rest hit a full socket buffer or an error and are dropped by the caller).
    pub datagrams: usize,
    /// Messages handed to the kernel (a GSO run is one).
    pub messages: usize,
}

/// Reusable buffers for batched sends with GSO runs. One per socket: it remembers whether the socket's path
/// takes GSO (a path that cannot, e.g. through IPsec or without checksum offload, answers EIO once; the sender
/// then sends datagram by datagram for good).
pub struct GsoSender {
    gso: bool,
    /// Largest datagram sent as a GSO segment ([`MAX_GSO_SEGMENT`] unless [`GsoSender::with_max_segment`]).
    max_segment: usize,
    /// GSO messages sent so far (each carried several datagrams).
    gso_messages: u64,
    /// Indices into the batch, grouped by destination (stable: each destination's datagrams keep their order).
    order: Vec<u32>,
    /// Per message: (first position in `order`, datagrams, segment size or 0 for a plain send).
    runs: Vec<(u32, u32, u16)>,
    iovecs: Vec<libc::iovec>,
    names: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
    controls: Vec<[u64; CONTROL_BUF / 8]>,
    headers: Vec<libc::mmsghdr>,
}

impl std::fmt::Debug for GsoSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GsoSender").field("gso", &self.gso).finish()
    }
}

impl Default for GsoSender {
    fn default() -> Self {
        Self::new(true)
    }
}

impl GsoSender {
    /// A sender; `gso: false` sends every datagram as its own message.
    pub fn new(gso: bool) -> Self {
        Self {
            gso,
            max_segment: MAX_GSO_SEGMENT,
            gso_messages: 0,
            order: Vec::new(),
            runs: Vec::new(),
            iovecs: Vec::new(),
            names: Vec::new(),
            controls: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// The same with runs of datagrams up to `max` bytes merged (a sender whose path MTU may be smaller sends a
    /// refused run datagram by datagram, one failed system call per such run).
    pub fn with_max_segment(mut self, max: usize) -> Self {
        self.max_segment = max;
        self
    }

    /// Whether runs still leave as GSO sends on this socket.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// GSO messages sent so far.
    pub fn gso_messages(&self) -> u64 {
        self.gso_messages
    }

    /// Sends `batch` on `fd` without blocking: consecutive datagrams (in the batch's order, per destination and
    /// source) of one size, the last possibly shorter, leave as one GSO message. Datagrams to different
    /// destinations may leave in a different order than the batch's; each destination's keep theirs.
    pub fn send<D: Datagram>(&mut self, fd: RawFd, v6_socket: bool, batch: &[D]) -> Sent {
        let key = |out: &D| (out.to(), out.from());
        self.order.clear();
        self.order.extend(0..batch.len() as u32);
        if self.gso && batch.len() > 1 {
            // Stable: a destination's datagrams keep their order. Batches are at most a few hundred.
            self.order.sort_by(|&a, &b| cmp_key(key(&batch[a as usize]), key(&batch[b as usize])));
        }
        self.runs.clear();
        let mut i = 0;
        while i < self.order.len() {
            let first = &batch[self.order[i] as usize];
            let segment = first.payload().len();
            let mut j = i + 1;
            let mut bytes = segment;
            if self.gso && segment > 0 && segment <= self.max_segment {
                while j < self.order.len() && j - i < MAX_GSO_SEGMENTS {
                    let next = &batch[self.order[j] as usize];
                    let previous = &batch[self.order[j - 1] as usize];
                    let fits = next.payload().len() <= segment && bytes + next.payload().len() <= MAX_GSO_BYTES;
                    if key(next) != key(first)
                        || previous.payload().len() != segment
                        || !fits
                        || next.payload().is_empty()
                    {
                        break;
                    }
                    bytes += next.payload().len();
                    j += 1;
                }
            }
            let segment = if j - i > 1 { segment as u16 } else { 0 };
            self.runs.push((i as u32, (j - i) as u32, segment));
            i = j;
        }
        let mut sent = Sent::default();
        let mut run = 0;
        while run < self.runs.len() {
            let end = (run + BATCH).min(self.runs.len());
            match self.send_runs(fd, v6_socket, batch, run, end) {
                // A short count: the next message failed; the next call says why.
                Ok((messages, datagrams)) => {
                    sent.messages += messages;
                    sent.datagrams += datagrams;
                    run += messages;
                }
                Err(RunError::GsoRefused { for_good: true }) => {
                    // Split the refused run (and every later one) into single datagrams and go on without GSO.
                    self.gso = false;
                    let rest: Vec<(u32, u32, u16)> = self.runs.drain(run..).collect();
                    for (first, count, _) in rest {
                        self.runs.extend((first..first + count).map(|p| (p, 1, 0)));
                    }
                }
                Err(RunError::GsoRefused { for_good: false }) => {
                    // This run's segments do not fit the path: send them one by one (fragmented as any datagram
                    // of that size would be); other runs keep GSO.
                    let (first, count, _) = self.runs[run];
                    self.runs.splice(run..=run, (first..first + count).map(|p| (p, 1, 0)));
                }
                Err(RunError::Retry) => {}
                Err(RunError::Skip) => run += 1,
                // The socket buffer is full: the rest are dropped by the caller, as a router drops.
                Err(RunError::Stop) => return sent,
            }
        }
        sent
    }

    /// One `sendmmsg` call for `runs[from..to]`: (messages sent, datagrams they carried).
    fn send_runs<D: Datagram>(
        &mut self,
        fd: RawFd,
        v6_socket: bool,
        batch: &[D],
        from: usize,
        to: usize,
    ) -> Result<(usize, usize), RunError> {
        let runs = &self.runs[from..to];
        let datagrams: usize = runs.iter().map(|r| r.1 as usize).sum();
        self.iovecs.clear();
        self.names.clear();
        self.controls.clear();
        self.headers.clear();
        for &(first, count, _) in runs {
            for &index in &self.order[first as usize..(first + count) as usize] {
                let payload = batch[index as usize].payload();
                self.iovecs.push(libc::iovec { iov_base: payload.as_ptr().cast_mut().cast(), iov_len: payload.len() });
            }
            let out = &batch[self.order[first as usize] as usize];
            // SAFETY: all-zero sockaddr_storage is valid; length 0 means "no address".
            self.names
                .push(out.to().map_or_else(|| (unsafe { std::mem::zeroed() }, 0), |to| std_to_sockaddr(to, v6_socket)));
            self.controls.push([0u64; CONTROL_BUF / 8]);
        }
        debug_assert_eq!(self.iovecs.len(), datagrams);
        let mut iov = 0;
        for (k, &(first, count, segment)) in runs.iter().enumerate() {
            // SAFETY: all-zero mmsghdr is valid.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            let msg = &mut header.msg_hdr;
            if self.names[k].1 > 0 {
                msg.msg_name = (&mut self.names[k].0 as *mut libc::sockaddr_storage).cast();
                msg.msg_namelen = self.names[k].1;
            }
            msg.msg_iov = &mut self.iovecs[iov];
            msg.msg_iovlen = count as usize;
            iov += count as usize;
            let out = &batch[self.order[first as usize] as usize];
            if out.from().is_some() || segment > 0 {
                msg.msg_control = self.controls[k].as_mut_ptr().cast();
                msg.msg_controllen = CONTROL_BUF;
                // SAFETY: the control buffer is CONTROL_BUF (128) bytes: one pktinfo message (at most 40) and one
                // UDP_SEGMENT message (24) fit; the helper walks it with the CMSG macros and sets msg_controllen
                // to the bytes used.
                unsafe { write_controls(msg, out.from(), segment, v6_socket) };
            }
            self.headers.push(header);
        }
        // SAFETY: every header points at names, iovecs and controls in `self` (not resized from here until the
        // call returns) and at payloads in `batch`, all of which outlive the call.
        let n = unsafe {
            libc::sendmmsg(fd, self.headers.as_mut_ptr(), self.headers.len() as libc::c_uint, libc::MSG_DONTWAIT)
        };
        if n >= 0 {
            let n = n as usize;
            self.gso_messages += runs[..n].iter().filter(|r| r.2 > 0).count() as u64;
            return Ok((n, runs[..n].iter().map(|r| r.1 as usize).sum()));
        }
        let error = io::Error::last_os_error();
        // The first message failed. A GSO message the path cannot take: retry without GSO. EINVAL says this
        // run's segment size exceeds the path MTU (or its length the segment limit); EIO and ENOPROTOOPT say
        // the path takes no GSO at all (IPsec, no checksum offload).
        if runs[0].2 > 0 {
            match error.raw_os_error() {
                Some(libc::EINVAL) => return Err(RunError::GsoRefused { for_good: false }),
                Some(libc::EIO | libc::ENOPROTOOPT) => return Err(RunError::GsoRefused { for_good: true }),
                _ => {}
            }
        }
        Err(match error.kind() {
            io::ErrorKind::Interrupted => RunError::Retry,
            io::ErrorKind::WouldBlock => RunError::Stop,
            _ => RunError::Skip,
        })
    }
}

enum RunError {
    /// The path refused a GSO message: this run's (`for_good` false), or any (true).
    GsoRefused { for_good: bool },
    /// Interrupted by a signal: call again.
    Retry,
    /// One message failed (an unreachable client, say): skip it, the rest may go.
    Skip,
    /// The socket buffer is full.
    Stop,
}

/// Orders destinations (then sources); the order itself does not matter, only that equal keys are adjacent.
fn cmp_key(
    a: (Option<SocketAddr>, Option<(std::net::IpAddr, u32)>),
    b: (Option<SocketAddr>, Option<(std::net::IpAddr, u32)>),
) -> std::cmp::Ordering {
    a.cmp(&b)
}

/// Writes the pktinfo (when `from` is set) and UDP_SEGMENT (when `segment > 0`) control messages.
///
/// # Safety
/// `msg.msg_control` must point at a writable, 8-byte aligned buffer of `msg.msg_controllen` bytes, at least
/// `CONTROL_BUF`.
unsafe fn write_controls(msg: &mut libc::msghdr, from: Option<(std::net::IpAddr, u32)>, segment: u16, v6: bool) {
    let mut used = 0;
    // SAFETY: the caller guarantees the buffer; write_pktinfo writes one message at its start and sets
    // msg_controllen to its space; the segment message goes right after it, inside the buffer.
    unsafe {
        if let Some((source, ifindex)) = from {
            write_pktinfo(msg, source, ifindex, v6);
            used = msg.msg_controllen;
        }
        if segment > 0 {
            let cmsg = msg.msg_control.cast::<u8>().add(used).cast::<libc::cmsghdr>();
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
            used += libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
        }
    }
    msg.msg_controllen = used;
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;

    fn out(payload: Vec<u8>, to: SocketAddr) -> Outgoing {
        Outgoing { payload, to: Some(to), from: None }
    }

    fn drain(socket: &UdpSocket) -> Vec<Vec<u8>> {
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = socket.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    }

    #[test]
    fn gso_runs_arrive_intact_in_order_each_to_its_client() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let clients: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let addrs: Vec<SocketAddr> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
        // Interleaved destinations; equal sizes mostly, one shorter in the middle of client 0's, one larger at
        // client 1's end, each payload numbered so order and content are checked.
        let sizes = [60, 60, 60, 60, 60, 60, 59, 60, 60, 60, 60, 61, 60, 60, 60];
        let mut batch = Vec::new();
        let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
        for (i, &size) in sizes.iter().enumerate() {
            let client = i % 3;
            let mut payload = vec![i as u8; size];
            payload[0] = client as u8;
            expected[client].push(payload.clone());
            batch.push(out(payload, addrs[client]));
        }
        let mut sender = GsoSender::default();
        let sent = sender.send(server.as_raw_fd(), false, &batch);
        assert_eq!(sent.datagrams, sizes.len());
        assert!(sender.gso(), "loopback takes GSO");
        assert!(sent.messages <= 6, "runs merged: {} messages for {} datagrams", sent.messages, sizes.len());
        for (client, socket) in clients.iter().enumerate() {
            assert_eq!(drain(socket), expected[client], "client {client}");
        }
    }

    #[test]
    fn without_gso_every_datagram_is_its_own_message() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = client.local_addr().unwrap();
        let batch: Vec<Outgoing> = (0..5u8).map(|i| out(vec![i; 40], to)).collect();
        let sent = GsoSender::new(false).send(server.as_raw_fd(), false, &batch);
        assert_eq!(sent, Sent { datagrams: 5, messages: 5 });
        assert_eq!(drain(&client), batch.iter().map(|o| o.payload.clone()).collect::<Vec<_>>());
    }

    #[test]
    fn large_answers_and_runs_past_the_segment_bound_still_arrive() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = client.local_addr().unwrap();
        // 70 equal datagrams (more than one run's segment bound) and two larger than a GSO segment may be.
        let mut batch: Vec<Outgoing> = (0..70u8).map(|i| out(vec![i; 100], to)).collect();
        batch.push(out(vec![0xaa; 1500], to));
        batch.push(out(vec![0xbb; 1500], to));
        let sent = GsoSender::default().send(server.as_raw_fd(), false, &batch);
        assert_eq!(sent, Sent { datagrams: 72, messages: 4 });
        assert_eq!(drain(&client), batch.iter().map(|o| o.payload.clone()).collect::<Vec<_>>());
    }

    /// A run the path refuses with EINVAL (its segments exceed the path MTU; injected here with `SO_NO_CHECK`,
    /// for which the kernel answers a GSO send the same way) leaves datagram by datagram, and GSO stays on for
    /// the next runs; EIO would have turned it off.
    #[test]
    fn a_run_refused_with_einval_leaves_one_by_one_and_gso_stays_on() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = client.local_addr().unwrap();
        super::super::set_int_opt(server.as_raw_fd(), libc::SOL_SOCKET, libc::SO_NO_CHECK, 1).unwrap();
        let batch: Vec<Outgoing> = (0..10u8).map(|i| out(vec![i; 300], to)).collect();
        let mut sender = GsoSender::default();
        let sent = sender.send(server.as_raw_fd(), false, &batch);
        assert_eq!(sent, Sent { datagrams: 10, messages: 10 });
        assert!(sender.gso(), "EINVAL refuses one run, not the path");
        assert_eq!(sender.gso_messages(), 0);
        assert_eq!(drain(&client), batch.iter().map(|o| o.payload.clone()).collect::<Vec<_>>());
        // The same socket with the option cleared takes GSO again, with no new sender.
        super::super::set_int_opt(server.as_raw_fd(), libc::SOL_SOCKET, libc::SO_NO_CHECK, 0).unwrap();
        let sent = sender.send(server.as_raw_fd(), false, &batch);
        assert_eq!(sent, Sent { datagrams: 10, messages: 1 });
        assert_eq!(drain(&client), batch.iter().map(|o| o.payload.clone()).collect::<Vec<_>>());
    }

    #[test]
    fn a_connected_socket_sends_runs_to_its_peer_and_pktinfo_sources_are_kept() {
        let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(upstream.local_addr().unwrap()).unwrap();
        let batch: Vec<Outgoing> = (0..4u8).map(|i| Outgoing { payload: vec![i; 33], to: None, from: None }).collect();
        let sent = GsoSender::default().send(socket.as_raw_fd(), false, &batch);
        assert_eq!(sent, Sent { datagrams: 4, messages: 1 });
        assert_eq!(drain(&upstream), batch.iter().map(|o| o.payload.clone()).collect::<Vec<_>>());

        // A wildcard listener answers from the address asked: pktinfo and UDP_SEGMENT in one control buffer.
        let wildcard = UdpSocket::bind("0.0.0.0:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = client.local_addr().unwrap();
        let from = Some(("127.0.0.1".parse().unwrap(), 0));
        let batch: Vec<Outgoing> = (0..3u8).map(|i| Outgoing { payload: vec![i; 20], to: Some(to), from }).collect();
        let sent = GsoSender::default().send(wildcard.as_raw_fd(), false, &batch);
        assert_eq!(sent, Sent { datagrams: 3, messages: 1 });
        client.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 64];
        for i in 0..3u8 {
            let (n, peer) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 20]);
            assert_eq!(peer.port(), wildcard.local_addr().unwrap().port());
        }
    }
}
