//! Batched UDP receives on io_uring: one multishot `RecvMsg` over a provided buffer ring, driven from an epoll
//! loop. Each datagram comes with what `recvmmsg` gives the steering socket ([`sys::RecvBatch`]): its payload,
//! source, original destination (IP_RECVORIGDSTADDR / IPV6_RECVORIGDSTADDR) and ingress interface (pktinfo).
//!
//! - The ring is `SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN` and must be built on the thread that drives it.
//!   Completions of a `DEFER_TASKRUN` ring are posted only when that thread enters the ring with `GETEVENTS`, so
//!   the ring wakes the epoll loop through a registered eventfd: on kernel 6.18 the ring's own fd in an epoll
//!   set never reported readiness to a thread already sleeping in `epoll_wait` (work queued after the sleep
//!   began; the sleep timed out), while the eventfd woke it each time. Without `DEFER_TASKRUN` (`COOP_TASKRUN`
//!   with or without `TASKRUN_FLAG`, or neither) the task-work notification interrupted `epoll_wait` with EINTR
//!   instead of a readable event: an epoll loop would have to look at the ring after every wake-up.
//! - [`UringReceiver::recv`] hands the previous batch's buffers back, enters the ring (submitting a re-arm when
//!   one is due and running the deferred work), and collects every completion. A run of the multishot request
//!   takes up to 33 datagrams before the kernel requeues it as deferred work (its multishot retry limit). When
//!   the first run ends that way (`TASKRUN_FLAG` shows the requeued work), a second entry asks for
//!   [`EXTRA_RUNS`] events: the first run's unread completions already satisfy that, so it cannot block, and
//!   the kernel runs that many more pieces of deferred work first. A busy socket thus yields batches of up to
//!   ~99 datagrams for one wake-up, one eventfd read and two ring entries, instead of three of each.
//! - A ring that runs dry ends the multishot request (ENOBUFS, no `F_MORE`): it is counted
//!   ([`UringReceiver::take_ring_empty`]) and re-armed on the next call, once the buffers are back; so is any
//!   other completion without `F_MORE`. The receiver then writes its own eventfd, so the re-arm does not depend
//!   on the kernel's signal for the final completion (6.18 sends one; the tests pass without the write, but the
//!   datagrams left in the socket would wait otherwise).

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd, RawFd},
    ptr,
    sync::atomic::{AtomicU16, Ordering},
};

use dns::service::sys::{self, PktInfo, Received};
use io_uring::{EnterFlags, IoUring, cqueue, opcode, squeue, types};

/// Provided buffers per receiver (a power of two, as the ring requires): four times the 32 datagrams one run of
/// the multishot request takes, so the ring runs dry only when a whole batch is still held by its caller.
pub const RING_BUFS: u16 = 128;
/// The provided buffer group of the ring.
const BUF_GROUP: u16 = 0;
/// `io_uring_recvmsg_out`: the header the kernel writes at the start of each buffer.
const OUT_HEADER: usize = 16;
/// Room for the source name: a `sockaddr_in6` (an IPv4 socket's `sockaddr_in` is shorter).
const NAME_LEN: usize = size_of::<libc::sockaddr_in6>();
/// Room for control messages: pktinfo and the original destination.
const CONTROL_LEN: usize = sys::CONTROL_LEN;
/// Where the payload starts in a buffer.
const PAYLOAD_AT: usize = OUT_HEADER + NAME_LEN + CONTROL_LEN;
/// Largest payload: any UDP datagram.
const MAX_PAYLOAD: usize = 65_535;
/// Bytes per buffer, a whole number of cache lines. The stride is then 192 bytes past a multiple of 4 KiB, so
/// the payloads of successive buffers do not all fall into the same cache sets.
const BUF_LEN: usize = (PAYLOAD_AT + MAX_PAYLOAD).next_multiple_of(64);
/// Most datagrams one run of the multishot request takes: the kernel's retry limit (32) and the one that
/// reached it.
const RUN_MAX: usize = 33;
/// Further runs of the multishot request one call takes when the first ends at the retry limit, as far as the
/// free buffers hold them whole (a run that finds the ring dry ends the request): 3 runs hold at most 99
/// datagrams, within the ring's [`RING_BUFS`].
const EXTRA_RUNS: u32 = 2;
/// Submission queue entries: only the multishot request is ever submitted.
const SQ_ENTRIES: u32 = 8;
/// Completion queue entries: more than the buffers, so the completions of a full ring always fit.
const CQ_ENTRIES: u32 = 2 * RING_BUFS as u32;
/// The user data of the multishot request.
const RECV_TAG: u64 = 1;
/// Calls in a row whose multishot request failed with nothing received before the receiver gives up (an error
/// of kind `Unsupported`: the caller falls back to `recvmmsg`) instead of re-arming a request that keeps failing.
const MAX_REFUSALS: u8 = 3;

/// An anonymous private mapping (pages become resident when first written).
#[derive(Debug)]
struct Mapping {
    base: ptr::NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous private mapping; the result is checked before use.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = ptr::NonNull::new(base.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping came from `mmap` with this length and nothing points into it any more (the ring
        // that used it is dropped first: see the field order of `UringReceiver`).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A provided buffer ring: [`RING_BUFS`] entries in a page-aligned mapping, and the buffers they point at.
#[derive(Debug)]
struct BufRing {
    entries: Mapping,
    bufs: Mapping,
    /// The tail as written so far (published by [`BufRing::publish`]).
    tail: u16,
}

impl BufRing {
    fn new(count: u16) -> io::Result<Self> {
        let entries = Mapping::new(usize::from(count) * size_of::<types::BufRingEntry>())?;
        let bufs = Mapping::new(usize::from(count) * BUF_LEN)?;
        let mut ring = Self { entries, bufs, tail: 0 };
        for bid in 0..count {
            ring.push(bid, count);
        }
        ring.publish();
        Ok(ring)
    }

    fn entries(&self) -> *mut types::BufRingEntry {
        self.entries.base.as_ptr().cast()
    }

    /// The first `len` bytes of buffer `bid` (clamped to the buffer).
    fn buf(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * BUF_LEN;
        debug_assert!(start + BUF_LEN <= self.bufs.len);
        // SAFETY: `bid` names one of the buffers in the mapping (the kernel only hands out ids we pushed), the
        // length is clamped to the buffer, and the kernel does not write a buffer between completing it and our
        // pushing it back.
        unsafe { std::slice::from_raw_parts(self.bufs.base.as_ptr().add(start), len.min(BUF_LEN)) }
    }

    /// Hands buffer `bid` back to the kernel once [`Self::publish`] runs; `count` is the ring's size.
    fn push(&mut self, bid: u16, count: u16) {
        let addr = self.bufs.base.as_ptr() as u64 + (usize::from(bid) * BUF_LEN) as u64;
        // SAFETY: the index is masked into the ring's `count` entries (a power of two); the kernel reads entries
        // only up to the published tail, and this one is past it.
        let entry = unsafe { &mut *self.entries().add(usize::from(self.tail & (count - 1))) };
        entry.set_addr(addr);
        entry.set_len(BUF_LEN as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail is the u16 at byte 14 of entry 0 of our live, page-aligned mapping; the kernel reads it
        // concurrently, hence the atomic release store after the entries are written.
        unsafe { AtomicU16::from_ptr(types::BufRingEntry::tail(self.entries()).cast_mut()) }
            .store(self.tail, Ordering::Release);
    }
}

/// Datagrams from one socket through a multishot `RecvMsg`, in batches. Fields drop in order: the ring before
/// the buffers it writes into.
pub struct UringReceiver {
    ring: IoUring,
    bufs: BufRing,
    /// Readable when the ring has work for us; registered with the ring, and what the epoll loop watches.
    wake: OwnedFd,
    /// The socket received from.
    fd: RawFd,
    /// Buffers in the ring.
    count: u16,
    /// What the multishot request takes its name and control lengths from.
    template: Box<libc::msghdr>,
    /// Whether the multishot request is live (a completion without `F_MORE` ends it).
    armed: bool,
    /// Whether a datagram ever arrived (an error before that means the kernel cannot do this).
    worked: bool,
    /// Calls in a row whose request failed with nothing received.
    refusals: u8,
    /// The buffer and payload length of each datagram of the last batch.
    held: Vec<(u16, usize)>,
    /// What the last batch received, in order (as [`sys::RecvBatch::received`]).
    pub received: Vec<Received>,
    /// Times the ring ran dry since [`Self::take_ring_empty`] last looked.
    ring_empty: u64,
}

impl std::fmt::Debug for UringReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringReceiver")
            .field("fd", &self.fd)
            .field("buffers", &self.count)
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}

impl UringReceiver {
    /// A receiver of `fd` with [`RING_BUFS`] buffers. Fails where the kernel lacks what it needs: io_uring
    /// (disabled by `kernel.io_uring_disabled`, refused in a container), `DEFER_TASKRUN` (6.1; it implies
    /// multishot `RecvMsg`, 6.0) or provided buffer rings (5.19). Build it on the thread that calls
    /// [`Self::recv`].
    pub fn new(fd: RawFd) -> io::Result<Self> {
        Self::with_buffers(fd, RING_BUFS)
    }

    /// As [`Self::new`] with `count` buffers (a power of two).
    pub fn with_buffers(fd: RawFd, count: u16) -> io::Result<Self> {
        if !count.is_power_of_two() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "buffer count must be a power of two"));
        }
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(CQ_ENTRIES.max(2 * u32::from(count)))
            .build(SQ_ENTRIES)?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::RecvMsgMulti::CODE) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "io_uring without RecvMsg"));
        }
        let bufs = BufRing::new(count)?;
        // SAFETY: the entries mapping lives in `bufs`, which outlives `ring` (field order of `Self`).
        unsafe { ring.submitter().register_buf_ring_with_flags(bufs.entries() as u64, count, BUF_GROUP, 0) }?;
        let wake = sys::eventfd()?;
        ring.submitter().register_eventfd(wake.as_raw_fd())?;
        // SAFETY: all-zero is a valid msghdr; the multishot request reads only the two lengths.
        let mut template: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        template.msg_namelen = NAME_LEN as libc::socklen_t;
        template.msg_controllen = CONTROL_LEN;
        // The request is armed by the first `recv`: wake the loop for it, the socket may hold datagrams already.
        sys::eventfd_write(wake.as_raw_fd());
        Ok(Self {
            ring,
            bufs,
            wake,
            fd,
            count,
            template,
            armed: false,
            worked: false,
            refusals: 0,
            held: Vec::with_capacity(usize::from(count)),
            received: Vec::with_capacity(usize::from(count)),
            ring_empty: 0,
        })
    }

    /// What an epoll loop watches for readability (`EPOLLIN`) to know when to call [`Self::recv`].
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Receives what arrived since the last call without blocking; `Ok(0)` when nothing did. The previous
    /// batch's payloads go back to the kernel first. An error of kind `Unsupported` means the kernel refused the
    /// multishot request before any datagram came, or [`MAX_REFUSALS`] times in a row: use `recvmmsg` instead.
    pub fn recv(&mut self) -> io::Result<usize> {
        sys::eventfd_read(self.wake.as_raw_fd());
        for &(bid, _) in &self.held {
            self.bufs.push(bid, self.count);
        }
        self.held.clear();
        self.bufs.publish();
        self.received.clear();
        if !self.armed {
            let arm: squeue::Entry =
                opcode::RecvMsgMulti::new(types::Fd(self.fd), &*self.template, BUF_GROUP).build().user_data(RECV_TAG);
            // SAFETY: the request reads `template` (boxed, owned by `self`) and writes only into the registered
            // buffers, both of which outlive the ring.
            unsafe { self.ring.submission().push(&arm) }.map_err(|_| io::Error::other("submission queue full"))?;
            self.armed = true;
        }
        let to_submit = self.ring.submission().len() as u32;
        self.enter(to_submit, 0)?;
        // Deferred work is pending (typically the request, requeued at the kernel's retry limit: more is
        // queued) and at least `runs` completions are posted and unread: asking for that many events then cannot
        // block, and the kernel runs that many more pieces of work first. (The entry that arms the request runs
        // two: one at submission, one requeued.)
        let posted = self.ring.completion().len();
        let runs = (usize::from(self.count).saturating_sub(posted) / RUN_MAX).min(EXTRA_RUNS as usize) as u32;
        if self.ring.submission().taskrun() && runs > 0 && posted >= runs as usize {
            self.enter(0, runs)?;
        }
        let mut refused = None;
        let completions = self.ring.completion();
        for cqe in completions {
            if cqe.user_data() != RECV_TAG {
                continue;
            }
            if !cqueue::more(cqe.flags()) {
                self.armed = false;
            }
            let res = cqe.result();
            if res == -libc::ENOBUFS {
                self.ring_empty += 1;
                continue;
            }
            if res < 0 {
                refused = Some(io::Error::from_raw_os_error(-res));
                continue;
            }
            let Some(bid) = cqueue::buffer_select(cqe.flags()) else { continue };
            self.worked = true;
            let out = types::RecvMsgOut::parse(self.bufs.buf(bid, res as usize), &self.template);
            let (received, len) = match out {
                Ok(out) => {
                    let len = if out.is_payload_truncated() { 0 } else { out.payload_data().len() };
                    let info: PktInfo = sys::pktinfo_from_control(out.control_data());
                    (Received { len, from: sys::sockaddr_from_bytes(out.name_data()), info }, len)
                }
                Err(()) => (Received { len: 0, from: None, info: PktInfo::default() }, 0),
            };
            self.received.push(received);
            self.held.push((bid, len));
        }
        if !self.armed {
            // Nothing else need wake the loop: the socket may hold datagrams the ended request never took.
            sys::eventfd_write(self.wake.as_raw_fd());
        }
        match refused {
            Some(error) if !self.received.is_empty() => {
                self.refusals = 0;
                tracing::debug!(%error, "multishot RecvMsg ended; re-armed");
            }
            Some(error) => {
                self.refusals += 1;
                let unsupported = !self.worked && matches!(error.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP));
                if unsupported || self.refusals >= MAX_REFUSALS {
                    return Err(io::Error::new(io::ErrorKind::Unsupported, error));
                }
                return Err(error);
            }
            None => self.refusals = 0,
        }
        Ok(self.received.len())
    }

    /// Enters the ring to submit `to_submit` entries and run up to `min_complete` pieces of deferred work (at
    /// least one) without waiting, as long as `min_complete` completions are already posted.
    fn enter(&mut self, to_submit: u32, min_complete: u32) -> io::Result<()> {
        loop {
            // SAFETY: no argument pointer is passed.
            match unsafe {
                self.ring.submitter().enter::<libc::sigset_t>(
                    to_submit,
                    min_complete,
                    EnterFlags::GETEVENTS.bits(),
                    None,
                )
            } {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The payload of datagram `i` of the last batch.
    pub fn payload(&self, i: usize) -> &[u8] {
        let (bid, len) = self.held[i];
        &self.bufs.buf(bid, PAYLOAD_AT + len)[PAYLOAD_AT..]
    }

    /// Times the ring ran dry (each ended the multishot request, re-armed on the next call) since the last look.
    pub fn take_ring_empty(&mut self) -> u64 {
        std::mem::take(&mut self.ring_empty)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
        time::{Duration, Instant},
    };

    use socket2::{Domain, Socket, Type};

    use super::*;

    /// Time a test waits for datagrams that were already sent before it gives up.
    const PATIENCE: Duration = Duration::from_secs(5);
    /// Datagrams queued before a drain: far more than the ring holds.
    const BURST: u32 = 2000;

    /// A loopback receiver asking for the original destination and pktinfo as the steering socket does, with a
    /// receive buffer that holds [`BURST`] datagrams (`None` without CAP_NET_ADMIN).
    fn receiver(ip: IpAddr) -> Option<UdpSocket> {
        let v6 = ip.is_ipv6();
        let socket = Socket::new(if v6 { Domain::IPV6 } else { Domain::IPV4 }, Type::DGRAM, None).unwrap();
        let fd = socket.as_raw_fd();
        if v6 {
            socket.set_only_v6(true).unwrap();
            sys::set_int_opt(fd, libc::SOL_IPV6, libc::IPV6_RECVORIGDSTADDR, 1).unwrap();
        } else {
            sys::set_int_opt(fd, libc::SOL_IP, libc::IP_RECVORIGDSTADDR, 1).unwrap();
        }
        sys::enable_pktinfo(fd, v6).unwrap();
        if sys::set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 16 << 20).is_err() {
            eprintln!("skipped: SO_RCVBUFFORCE needs CAP_NET_ADMIN");
            return None;
        }
        socket.bind(&SocketAddr::new(ip, 0).into()).unwrap();
        Some(socket.into())
    }

    fn loopback_ifindex() -> u32 {
        // SAFETY: a NUL-terminated name; returns 0 when there is no such interface.
        unsafe { libc::if_nametoindex(c"lo".as_ptr()) }
    }

    /// What a drain got: each datagram's (metadata, payload), how many batches it took, and the largest batch
    /// after the first (the call that arms the request runs it twice, at submission and requeued).
    struct Drained {
        got: Vec<(Received, Vec<u8>)>,
        batches: usize,
        largest_later: usize,
    }

    /// Receives until `want` datagrams came, as the worker does: wait on the wake fd, then take a batch.
    fn drain(receiver: &mut UringReceiver, want: usize) -> Drained {
        let epoll = sys::Epoll::new().unwrap();
        epoll.add(receiver.wake_fd(), 0, sys::IN).unwrap();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let mut drained = Drained { got: Vec::new(), batches: 0, largest_later: 0 };
        let deadline = Instant::now() + PATIENCE;
        while drained.got.len() < want && Instant::now() < deadline {
            if epoll.wait(&mut events, 100).unwrap() == 0 {
                continue;
            }
            let n = receiver.recv().unwrap();
            drained.batches += usize::from(n > 0);
            if drained.batches > 1 {
                drained.largest_later = drained.largest_later.max(n);
            }
            drained.got.extend((0..n).map(|i| (receiver.received[i], receiver.payload(i).to_vec())));
        }
        drained
    }

    fn source_destination_and_pktinfo(ip: IpAddr) {
        let Some(rx) = receiver(ip) else { return };
        let to = rx.local_addr().unwrap();
        let tx = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
        let mut receiver = UringReceiver::new(rx.as_raw_fd()).unwrap();
        assert_eq!(receiver.recv().unwrap(), 0, "nothing sent yet");
        // Sent while the worker sleeps in epoll_wait: the eventfd must wake it.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            tx.send_to(b"first", to).unwrap();
            tx.send_to(&[7u8; 3000], to).unwrap();
            tx.local_addr().unwrap()
        });
        let got = drain(&mut receiver, 2).got;
        let from = sender.join().unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].1, b"first");
        assert_eq!(got[1].1, vec![7u8; 3000]);
        for (received, payload) in &got {
            assert_eq!(received.len, payload.len());
            assert_eq!(received.from, Some(from), "source");
            assert_eq!(received.info.dst, Some(ip), "pktinfo destination");
            assert_eq!(received.info.dst_port, to.port(), "original destination port");
            assert_eq!(received.info.ifindex, loopback_ifindex(), "pktinfo ingress interface");
        }
    }

    #[test]
    fn ipv4_datagrams_carry_source_original_destination_and_pktinfo() {
        source_destination_and_pktinfo(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn ipv6_datagrams_carry_source_original_destination_and_pktinfo() {
        source_destination_and_pktinfo(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    /// Queues [`BURST`] numbered datagrams, then drains them with a ring of `buffers`; every one must arrive, in
    /// order. Returns how often the ring ran dry and the largest batch.
    fn burst_arrives_complete(buffers: u16) -> Option<(u64, usize)> {
        let rx = receiver(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        for seq in 0..BURST {
            tx.send(&seq.to_be_bytes()).unwrap();
        }
        let mut receiver = UringReceiver::with_buffers(rx.as_raw_fd(), buffers).unwrap();
        let drained = drain(&mut receiver, BURST as usize);
        let seqs: Vec<u32> = drained.got.iter().map(|(_, p)| u32::from_be_bytes(p[..4].try_into().unwrap())).collect();
        assert_eq!(seqs, (0..BURST).collect::<Vec<_>>(), "every datagram, in order");
        assert!(drained.batches > 1, "a burst larger than the ring takes several batches");
        Some((receiver.take_ring_empty(), drained.largest_later))
    }

    #[test]
    fn a_burst_larger_than_the_ring_arrives_complete_in_batches_of_several_runs() {
        let Some((ring_empty, largest)) = burst_arrives_complete(RING_BUFS) else { return };
        assert_eq!(ring_empty, 0, "{RING_BUFS} buffers hold 1 + {EXTRA_RUNS} runs");
        // One run of the multishot request takes at most 33 datagrams (the kernel's retry limit, 32, plus the
        // one that reached it): a larger batch took the extra runs.
        assert!(largest > 33, "the largest batch was {largest}: one run per call");
    }

    #[test]
    fn a_ring_that_runs_dry_is_re_armed_and_loses_nothing() {
        // Eight buffers: each run of the multishot request (up to 32 datagrams) empties the ring.
        let Some((ring_empty, _)) = burst_arrives_complete(8) else { return };
        assert!(ring_empty > 0, "the ring never ran dry: the ENOBUFS path went untested");
    }
}
