//! UDP receive rate on one core (root: `SO_RCVBUFFORCE`), every receiver draining the same pre-queued datagrams.
//!
//! For each payload size a fresh 127.0.0.1 socket (`IP_PKTINFO` and `IP_RECVORIGDSTADDR` on, as the gateway needs
//! them) is filled with [`CASES`]`.1` datagrams before the clock starts; only the drain is timed. Rounds
//! interleave the receivers; each figure is the median Mpps over [`ROUNDS`], with the thread pinned to one core.
//! - `udp_recv_uring_mpps_{size}`: io_uring multishot `RecvMsg` over a provided buffer ring, against a loop of one
//!   `recvmsg` per datagram. Target ratio >= 1.3.
//! - `udp_recv_uring_vs_recvmmsg8_{size}`: the same, against `recvmmsg` in batches of 8. Target ratio >= 1.05.
//! - `udp_recv_gateway_uring_mpps_{size}`, `udp_recv_gateway_uring_vs_recvmmsg8_{size}`: the same two ratios for
//!   the gateway's own receiver (`datapath::gateway::uring::UringReceiver`: 128 buffers of 64 KiB so that any
//!   datagram fits, up to three runs of the multishot request per call, buffers returned a batch later), called
//!   in a loop as a worker calls it after each wake-up.
//! - `udp_recv_recvmmsg8_mpps_{size}`, `udp_recv_recvmmsg32_mpps_{size}`: batches of 8 and 32 against `recvmsg`.
//! - `udp_recv_gateway_gro_mpps_{size}`, `udp_recv_gateway_gro_vs_recvmmsg8_{size}`: traffic of a GSO sender
//!   (runs of [`GSO_RUN`] same-size datagrams per send, as QUIC stacks send) queued the same way. The gateway's
//!   receiver on a socket that asks for merged receives (`UDP_GRO`, as its steering sockets do) gets each run as
//!   one receive and splits it; the `recvmsg` and `recvmmsg(8)` loops, on sockets that do not ask, get the
//!   datagrams the kernel split the runs into before queueing them (outside the timed drain).
//! - `udp_recv_gateway_veth_mpps_{size}`, `udp_recv_gateway_veth_vs_recvmmsg8_{size}`: a sender in another
//!   namespace sends one datagram per `send` over a veth into the receiver's namespace ([`VethLink`]), whose NAPI
//!   coalesces as a NIC's does under load ([`COALESCE_NS`]); GRO merges what one poll took for the gateway's
//!   receiver (`UDP_GRO`), while the baselines' sockets, which do not ask, get every datagram by itself.
//!   `udp_recv_gateway_veth_uncoalesced_*`: the same with no coalescing, so every datagram is polled alone and
//!   nothing merges. The datagrams per receive the gateway's receiver got go to stderr for every merged case.
//!
//! Every receiver must account for every datagram, each with its payload length, the sender's address as its
//! source name and a pktinfo control message naming the receiver's address, or the run fails: a broken receiver
//! cannot look fast.

use std::{
    io, mem,
    net::UdpSocket,
    os::fd::{AsRawFd, RawFd},
    ptr,
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use io_uring::{IoUring, cqueue, opcode, squeue, types};

use bench_lab::{
    netns::{Netns, PREFIX, unique_id},
    topology::{coalesce_like_a_nic, veth},
};

use crate::report::{Figure, median};

/// Rounds per receiver; the median is reported.
const ROUNDS: usize = 15;
/// (payload bytes, datagrams queued per drain). 200k x 64 B is ~0.2 GB of socket memory (skb truesize), 100k x
/// 1200 B ~0.25 GB: both fit in [`RCVBUF_BYTES`] (which the kernel doubles); drops fail the run.
pub(crate) const CASES: [(usize, usize); 2] = [(64, 200_000), (1200, 100_000)];
/// Forced receive buffer, so the whole pre-queued drain fits without drops.
const RCVBUF_BYTES: libc::c_int = 256 << 20;
/// Receive buffer per datagram: room for the largest payload in [`CASES`].
pub(crate) const PAYLOAD_MAX: usize = 2048;
/// `sockaddr_in`, the name every receiver asks for.
const NAME_LEN: usize = mem::size_of::<libc::sockaddr_in>();
/// `CMSG_SPACE(in_pktinfo) + CMSG_SPACE(sockaddr_in)`: pktinfo and original destination.
pub(crate) const CONTROL_LEN: usize = cmsg_space(mem::size_of::<libc::in_pktinfo>()) + cmsg_space(NAME_LEN);
/// Linux `cmsghdr`: `cmsg_len: usize` at 0, `cmsg_level: i32` at 8, `cmsg_type: i32` at 12, data at 16.
const CMSG_HDR: usize = mem::size_of::<libc::cmsghdr>();
const _: () = assert!(CMSG_HDR == 16 && mem::size_of::<usize>() == 8);
/// `in_pktinfo`: `ipi_ifindex` at 0, `ipi_spec_dst` at 4, `ipi_addr` (the datagram's destination) at 8.
const PKTINFO_ADDR: usize = 8;
/// Provided buffers in the ring. Each `io_uring_enter` reaps ~33 completions (the kernel's multishot retry
/// limit), and buffers return after each batch. 256 x 2144 B stays cache-warm: with 4096 buffers (8.8 MB) io_uring
/// measured 0.99-1.02x recvmmsg(8), against 1.06-1.39x with 256; 64 ran dry every 64 datagrams (ENOBUFS, re-arm).
const RING_BUFS: u16 = 256;
/// `io_uring_recvmsg_out` header, then name, control and payload in each provided buffer.
const URING_BUF_LEN: usize = 16 + NAME_LEN + CONTROL_LEN + PAYLOAD_MAX;
const BUF_GROUP: u16 = 0;
/// Datagrams per send of the GSO sender (`UDP_SEGMENT`).
const GSO_RUN: usize = 16;
/// A drain that makes no progress for this long has lost datagrams: fail instead of hanging.
const STALL: Duration = Duration::from_secs(1);
/// Interrupt coalescing of the receiving veth in the namespace cases (`gro_flush_timeout`, ns): within the
/// defaults of 10 GbE NICs' adaptive moderation (tens of microseconds).
pub(crate) const COALESCE_NS: u32 = 20_000;
pub(crate) const LOOPBACK: [u8; 4] = [127, 0, 0, 1];

const fn cmsg_space(len: usize) -> usize {
    CMSG_HDR + len.next_multiple_of(mem::size_of::<usize>())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Receiver {
    Recvmsg,
    Recvmmsg(usize),
    Uring,
    /// The gateway's own receiver (`datapath::gateway::uring::UringReceiver`, as a worker drives it).
    Gateway,
}

const RECEIVERS: [Receiver; 5] =
    [Receiver::Recvmsg, Receiver::Recvmmsg(8), Receiver::Recvmmsg(32), Receiver::Uring, Receiver::Gateway];

/// Runs the group on a thread pinned to the core it starts on.
pub fn bench() -> anyhow::Result<Vec<Figure>> {
    std::thread::spawn(|| {
        pin_to_current_core()?;
        let mut figures = Vec::new();
        for (size, count) in CASES {
            figures.extend(bench_size(size, count)?);
        }
        Ok(figures)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("udp benchmark thread panicked"))?
}

/// Median Mpps of each of `receivers` over [`ROUNDS`] interleaved rounds, each draining a fresh socket that
/// `queued(receiver)` filled with `count` datagrams that must match `expect`; and the mean number of datagrams
/// per receive the gateway's receiver got (1 unless the kernel merged them: `UDP_GRO`).
fn drain_rounds<const N: usize>(
    receivers: [Receiver; N],
    expect: Expect,
    count: usize,
    queued: impl Fn(Receiver) -> anyhow::Result<UdpSocket>,
) -> anyhow::Result<([f64; N], f64)> {
    let size = expect.size;
    let mut mpps: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
    let (mut merged_datagrams, mut merged_receives) = (0, 0);
    for _ in 0..ROUNDS {
        for (receiver, samples) in receivers.iter().zip(&mut mpps) {
            let rx = queued(*receiver)?;
            let drain = Drain::ready(*receiver, rx.as_raw_fd())?;
            let start = Instant::now();
            let drained = drain
                .run(rx.as_raw_fd(), count, expect)
                .with_context(|| format!("{receiver:?} draining {count} x {size} B"))?;
            let secs = start.elapsed().as_secs_f64();
            ensure!(
                drained.bad == 0,
                "{receiver:?}: {} of {count} datagrams without pktinfo, name or full payload",
                drained.bad
            );
            samples.push(count as f64 / secs / 1e6);
            if *receiver == Receiver::Gateway {
                merged_datagrams += count;
                merged_receives += drained.receives;
            }
        }
    }
    Ok((mpps.map(|mut s| median(&mut s)), merged_datagrams as f64 / merged_receives.max(1) as f64))
}

fn bench_size(size: usize, count: usize) -> anyhow::Result<Vec<Figure>> {
    let expect = Expect::loopback(size);
    let ([recvmsg, mmsg8, mmsg32, uring, gateway], _) =
        drain_rounds(RECEIVERS, expect, count, |_| queued_socket(size, count))?;
    // The baselines and the gateway's receiver with UDP_GRO on a GSO sender's traffic (only its socket merges).
    let merged = [Receiver::Recvmsg, Receiver::Recvmmsg(8), Receiver::Gateway];
    let ([gso_recvmsg, gso_mmsg8, gro_gateway], gso_per_receive) =
        drain_rounds(merged, expect, count, |receiver| queued_gso_socket(size, count, receiver == Receiver::Gateway))?;
    eprintln!("udp {size} B, GSO sender: the gateway's receiver got {gso_per_receive:.1} datagrams per receive");
    let figure = |name: &str, value: f64, baseline: f64| Figure {
        name: format!("udp_recv_{name}_{size}"),
        value,
        unit: "Mpps",
        baseline,
        ratio: value / baseline,
    };
    let mut figures = vec![
        figure("uring_mpps", uring, recvmsg),
        figure("uring_vs_recvmmsg8", uring, mmsg8),
        figure("gateway_uring_mpps", gateway, recvmsg),
        figure("gateway_uring_vs_recvmmsg8", gateway, mmsg8),
        figure("recvmmsg8_mpps", mmsg8, recvmsg),
        figure("recvmmsg32_mpps", mmsg32, recvmsg),
        figure("gateway_gro_mpps", gro_gateway, gso_recvmsg),
        figure("gateway_gro_vs_recvmmsg8", gro_gateway, gso_mmsg8),
    ];
    // A sender in another namespace sending one datagram per system call, over a veth whose NAPI polls as a
    // NIC's does under load (interrupt coalescing), and over one that polls every datagram by itself.
    for (coalesce_ns, label) in [(COALESCE_NS, "veth"), (0, "veth_uncoalesced")] {
        let link = VethLink::new(coalesce_ns)?;
        let expect = Expect { size, from: VethLink::TX_ADDR, to: VethLink::RX_ADDR };
        let ([recvmsg, mmsg8, gateway], per_receive) = drain_rounds(merged, expect, count, |receiver| {
            link.queued_socket(size, count, receiver == Receiver::Gateway)
        })?;
        eprintln!(
            "udp {size} B, one datagram per send over a veth (gro_flush_timeout {coalesce_ns} ns): the gateway's \
             receiver got {per_receive:.1} datagrams per receive"
        );
        figures.push(figure(&format!("gateway_{label}_mpps"), gateway, recvmsg));
        figures.push(figure(&format!("gateway_{label}_vs_recvmmsg8"), gateway, mmsg8));
    }
    Ok(figures)
}

/// What one drain found: datagrams that were not what was queued, and the receives that carried them.
struct Drained {
    bad: usize,
    receives: usize,
}

/// A receiver with its set-up (ring, buffers) done, so that only the drain is timed.
enum Drain {
    Recvmsg,
    Recvmmsg(usize),
    Uring(UringReceiver),
    Gateway(datapath::gateway::uring::UringReceiver),
}

impl Drain {
    fn ready(receiver: Receiver, fd: RawFd) -> anyhow::Result<Self> {
        Ok(match receiver {
            Receiver::Recvmsg => Self::Recvmsg,
            Receiver::Recvmmsg(batch) => Self::Recvmmsg(batch),
            Receiver::Uring => Self::Uring(UringReceiver::new()?),
            Receiver::Gateway => {
                Self::Gateway(datapath::gateway::uring::UringReceiver::new(fd).context("the gateway's receiver")?)
            }
        })
    }

    /// Drains `count` datagrams matching `expect` from `fd`.
    fn run(self, fd: RawFd, count: usize, expect: Expect) -> anyhow::Result<Drained> {
        let bad = match self {
            Self::Recvmsg => drain_recvmsg(fd, count, expect)?,
            Self::Recvmmsg(batch) => drain_recvmmsg(fd, count, expect, batch)?,
            Self::Uring(mut uring) => uring.drain(fd, count, expect)?,
            Self::Gateway(mut gateway) => return drain_gateway(&mut gateway, count, expect),
        };
        Ok(Drained { bad, receives: count })
    }
}

/// Drains `count` datagrams with the gateway's receiver, called in a loop as a worker calls it after each
/// wake-up.
fn drain_gateway(
    receiver: &mut datapath::gateway::uring::UringReceiver,
    count: usize,
    expect: Expect,
) -> anyhow::Result<Drained> {
    let (mut got, mut bad, mut receives) = (0, 0, 0);
    let mut idle_since = None;
    while got < count {
        let n = receiver.recv().context("the gateway's receiver")?;
        if n == 0 {
            let since = *idle_since.get_or_insert_with(Instant::now);
            ensure!(since.elapsed() < STALL, "the gateway's receiver stalled after {got}");
            continue;
        }
        idle_since = None;
        receives += n;
        for (i, received) in receiver.received[..n].iter().enumerate() {
            let from_sender = received.from.is_some_and(|from| from.ip() == std::net::Ipv4Addr::from(expect.from));
            let to_receiver = received.info.dst == Some(std::net::Ipv4Addr::from(expect.to).into());
            // A merged receive (UDP_GRO) holds a run of datagrams, split as the worker splits it.
            for datagram in received.datagrams(receiver.payload(i)) {
                bad += usize::from(!(datagram.len() == expect.size && from_sender && to_receiver));
                got += 1;
            }
        }
    }
    Ok(Drained { bad, receives })
}

/// A veth pair between two namespaces of its own, a sender's (`TX_ADDR`) and a receiver's (`RX_ADDR`), set up
/// by [`coalesce_like_a_nic`] with the given coalescing time.
struct VethLink {
    tx: Netns,
    rx: Netns,
    tx_if: String,
}

impl VethLink {
    const TX_ADDR: [u8; 4] = [10, 231, 0, 1];
    const RX_ADDR: [u8; 4] = [10, 231, 0, 2];

    fn new(coalesce_ns: u32) -> anyhow::Result<Self> {
        let id = unique_id();
        let (tx, rx) = (Netns::create(&id, "udptx")?, Netns::create(&id, "udprx")?);
        let (tx_if, rx_if) = (format!("{PREFIX}{id}t"), format!("{PREFIX}{id}r"));
        veth(&tx, &tx_if, &rx, &rx_if)?;
        let addr = |a: [u8; 4]| format!("{}/24", std::net::Ipv4Addr::from(a));
        tx.ip(&["addr", "add", &addr(Self::TX_ADDR), "dev", &tx_if])?;
        rx.ip(&["addr", "add", &addr(Self::RX_ADDR), "dev", &rx_if])?;
        coalesce_like_a_nic(&tx, &tx_if, &rx, &rx_if, coalesce_ns)?;
        Ok(Self { tx, rx, tx_if })
    }

    /// A receiver socket in the receiver's namespace (with `UDP_GRO` when `gro`) holding `count` datagrams of
    /// `size` bytes the sender sent one per `send`, none dropped on the way.
    fn queued_socket(&self, size: usize, count: usize, gro: bool) -> anyhow::Result<UdpSocket> {
        let rx = self.rx.run_in(move || -> anyhow::Result<UdpSocket> {
            let rx = receiving_socket(Self::RX_ADDR)?;
            if gro {
                datapath::gateway::gso::enable_gro(rx.as_raw_fd()).context("UDP_GRO")?;
            }
            Ok(rx)
        })??;
        let to = rx.local_addr()?;
        let dropped_before = self.tx_dropped()?;
        self.tx.run_in(move || -> anyhow::Result<()> {
            let tx = UdpSocket::bind((std::net::Ipv4Addr::from(Self::TX_ADDR), 0))?;
            tx.connect(to)?;
            let payload = vec![0xa5; size];
            for _ in 0..count {
                ensure!(tx.send(&payload)? == size, "short send");
            }
            Ok(())
        })??;
        // The last datagrams wait in the receiver's NAPI for up to its coalescing time.
        std::thread::sleep(Duration::from_millis(20));
        let dropped = self.tx_dropped()? - dropped_before;
        ensure!(dropped == 0, "the veth dropped {dropped} of {count} x {size} B datagrams (its ring was full)");
        no_drops(&rx, size, count)?;
        Ok(rx)
    }

    /// Datagrams the sender's veth dropped (the receiver's ring full).
    fn tx_dropped(&self) -> anyhow::Result<u64> {
        let out = self.tx.run("ip", &["-s", "-j", "link", "show", "dev", &self.tx_if])?;
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).context("ip -s -j link")?;
        links[0]["stats64"]["tx"]["dropped"].as_u64().context("no tx drop counter in ip -s -j link")
    }
}

pub(crate) fn pin_to_current_core() -> anyhow::Result<()> {
    // SAFETY: no arguments; returns the calling thread's CPU or -1.
    let cpu = unsafe { libc::sched_getcpu() };
    ensure!(cpu >= 0, "sched_getcpu: {}", io::Error::last_os_error());
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `cpu` came from the kernel, so it is below CPU_SETSIZE; pid 0 is the calling thread and `set`
    // outlives the call.
    let rc = unsafe {
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set)
    };
    ensure!(rc == 0, "sched_setaffinity(cpu {cpu}): {}", io::Error::last_os_error());
    Ok(())
}

pub(crate) fn set_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and the length passed is its size.
    let rc = unsafe { libc::setsockopt(fd, level, name, ptr::from_ref(&value).cast(), mem::size_of_val(&value) as _) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// A receiver socket for the drains on `addr`: forced buffer, pktinfo and original destination on.
fn receiving_socket(addr: [u8; 4]) -> anyhow::Result<UdpSocket> {
    let rx = UdpSocket::bind((std::net::Ipv4Addr::from(addr), 0))?;
    let fd = rx.as_raw_fd();
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF_BYTES).context("SO_RCVBUFFORCE (needs root)")?;
    set_int_opt(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1).context("IP_PKTINFO")?;
    set_int_opt(fd, libc::IPPROTO_IP, libc::IP_RECVORIGDSTADDR, 1).context("IP_RECVORIGDSTADDR")?;
    Ok(rx)
}

/// A receiver socket holding `count` datagrams of `size` bytes from a 127.0.0.1 sender, none dropped.
pub(crate) fn queued_socket(size: usize, count: usize) -> anyhow::Result<UdpSocket> {
    let rx = receiving_socket(LOOPBACK)?;
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    tx.connect(rx.local_addr()?)?;
    let payload = vec![0xa5; size];
    for _ in 0..count {
        ensure!(tx.send(&payload)? == size, "short send");
    }
    no_drops(&rx, size, count)?;
    Ok(rx)
}

/// The same holding `count` datagrams of `size` bytes sent in GSO runs of [`GSO_RUN`]; with `gro` the socket asks
/// for merged receives (each run stays one), without it the kernel splits the runs before queueing.
fn queued_gso_socket(size: usize, count: usize, gro: bool) -> anyhow::Result<UdpSocket> {
    let rx = receiving_socket(LOOPBACK)?;
    if gro {
        datapath::gateway::gso::enable_gro(rx.as_raw_fd()).context("UDP_GRO")?;
    }
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    let to = rx.local_addr()?;
    let run = vec![0xa5; size * GSO_RUN];
    for sent in (0..count).step_by(GSO_RUN) {
        let datagrams = GSO_RUN.min(count - sent);
        datapath::gateway::gso::send_gso(tx.as_raw_fd(), to, size as u16, &run[..datagrams * size])
            .context("a GSO send")?;
    }
    no_drops(&rx, size, count)?;
    Ok(rx)
}

/// Fails if the kernel dropped any of the datagrams queued on `rx`.
fn no_drops(rx: &UdpSocket, size: usize, count: usize) -> anyhow::Result<()> {
    let fd = rx.as_raw_fd();
    let mut meminfo = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
    let mut len = mem::size_of_val(&meminfo) as libc::socklen_t;
    // SAFETY: `meminfo` and `len` are live and `len` is the buffer's size.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_MEMINFO, meminfo.as_mut_ptr().cast(), &mut len) };
    ensure!(rc == 0, "SO_MEMINFO: {}", io::Error::last_os_error());
    let drops = meminfo[libc::SK_MEMINFO_DROPS as usize];
    ensure!(drops == 0, "{drops} of {count} x {size} B datagrams dropped while queueing: lower the count in CASES");
    Ok(())
}

/// The destination address in an `IP_PKTINFO` control message of `control`, if there is one.
pub(crate) fn pktinfo_addr(mut control: &[u8]) -> Option<[u8; 4]> {
    while control.len() >= CMSG_HDR {
        let len = usize::from_ne_bytes(control[..8].try_into().ok()?);
        let level = i32::from_ne_bytes(control[8..12].try_into().ok()?);
        let kind = i32::from_ne_bytes(control[12..16].try_into().ok()?);
        if len < CMSG_HDR || len > control.len() {
            return None;
        }
        if level == libc::IPPROTO_IP && kind == libc::IP_PKTINFO {
            return control.get(CMSG_HDR + PKTINFO_ADDR..CMSG_HDR + PKTINFO_ADDR + 4)?.try_into().ok();
        }
        control = control.get(len.next_multiple_of(mem::size_of::<usize>())..).unwrap_or(&[]);
    }
    None
}

/// What every queued datagram must look like when received: its payload length, its source address and the
/// destination its pktinfo names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect {
    pub(crate) size: usize,
    pub(crate) from: [u8; 4],
    pub(crate) to: [u8; 4],
}

impl Expect {
    /// `size`-byte datagrams from 127.0.0.1 to 127.0.0.1.
    pub(crate) const fn loopback(size: usize) -> Self {
        Self { size, from: LOOPBACK, to: LOOPBACK }
    }
}

/// Whether one received datagram is what was queued: full payload, the sender's `sockaddr_in` name, pktinfo.
pub(crate) fn datagram_ok(name: &[u8], control: &[u8], payload_len: usize, expect: Expect) -> bool {
    let family = name.get(..2).map(|f| u16::from_ne_bytes([f[0], f[1]]));
    payload_len == expect.size
        && family == Some(libc::AF_INET as u16)
        && name.get(4..8) == Some(&expect.from[..])
        && pktinfo_addr(control) == Some(expect.to)
}

/// Name and control space of one message, aligned for the kernel's `cmsghdr` writes.
#[repr(C, align(8))]
#[derive(Debug)]
struct Slot {
    name: [u8; NAME_LEN],
    control: [u8; CONTROL_LEN],
}

impl Slot {
    const EMPTY: Slot = Slot { name: [0; NAME_LEN], control: [0; CONTROL_LEN] };

    /// A `msghdr` receiving into this slot and `iov`, ready for one `recvmsg`.
    fn msghdr(&mut self, iov: &mut libc::iovec) -> libc::msghdr {
        // SAFETY: `msghdr` is a plain C struct for which all-zero is valid (null pointers, zero lengths).
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = self.name.as_mut_ptr().cast();
        msg.msg_namelen = NAME_LEN as _;
        msg.msg_iov = iov;
        msg.msg_iovlen = 1;
        msg.msg_control = self.control.as_mut_ptr().cast();
        msg.msg_controllen = CONTROL_LEN as _;
        msg
    }

    fn ok(&self, msg: &libc::msghdr, payload_len: usize, expect: Expect) -> bool {
        let name = &self.name[..(msg.msg_namelen as usize).min(NAME_LEN)];
        datagram_ok(name, &self.control[..msg.msg_controllen.min(CONTROL_LEN)], payload_len, expect)
    }
}

/// One `recvmsg` per datagram; returns how many datagrams failed [`datagram_ok`].
fn drain_recvmsg(fd: RawFd, count: usize, expect: Expect) -> anyhow::Result<usize> {
    let mut payload = vec![0u8; PAYLOAD_MAX];
    let mut slot = Slot::EMPTY;
    let mut bad = 0;
    for got in 0..count {
        let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
        let mut msg = slot.msghdr(&mut iov);
        // SAFETY: `msg` points at `slot`, `iov` and `payload`, all live and sized as the header says.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            bail!("recvmsg after {got}: {}", io::Error::last_os_error());
        }
        bad += usize::from(!slot.ok(&msg, n as usize, expect));
    }
    Ok(bad)
}

/// `recvmmsg` in batches of `batch`; returns how many datagrams failed [`datagram_ok`].
pub(crate) fn drain_recvmmsg(fd: RawFd, count: usize, expect: Expect, batch: usize) -> anyhow::Result<usize> {
    let mut payloads = vec![0u8; PAYLOAD_MAX * batch];
    let mut slots: Vec<Slot> = (0..batch).map(|_| Slot::EMPTY).collect();
    let mut iovs: Vec<libc::iovec> = payloads
        .chunks_exact_mut(PAYLOAD_MAX)
        .map(|p| libc::iovec { iov_base: p.as_mut_ptr().cast(), iov_len: PAYLOAD_MAX })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = slots
        .iter_mut()
        .zip(&mut iovs)
        .map(|(slot, iov)| libc::mmsghdr { msg_hdr: slot.msghdr(iov), msg_len: 0 })
        .collect();
    let (mut got, mut bad) = (0, 0);
    while got < count {
        for m in &mut msgs {
            m.msg_hdr.msg_namelen = NAME_LEN as _;
            m.msg_hdr.msg_controllen = CONTROL_LEN as _;
        }
        // SAFETY: each header points at its own slot and iovec (in `slots`, `iovs`, `payloads`, all live and not
        // moved since), and `msgs` holds `batch` headers.
        let n = unsafe { libc::recvmmsg(fd, msgs.as_mut_ptr(), batch as _, libc::MSG_DONTWAIT, ptr::null_mut()) };
        if n < 0 {
            bail!("recvmmsg after {got}: {}", io::Error::last_os_error());
        }
        for (m, slot) in msgs.iter().zip(&slots).take(n as usize) {
            bad += usize::from(!slot.ok(&m.msg_hdr, m.msg_len as usize, expect));
        }
        got += n as usize;
    }
    Ok(bad)
}

/// A provided-buffer ring: `RING_BUFS` entries in a page-aligned mapping, and the buffers they point at.
#[derive(Debug)]
struct BufRing {
    entries: *mut types::BufRingEntry,
    bufs: Vec<u64>,
    tail: u16,
}

impl BufRing {
    const MAP_LEN: usize = RING_BUFS as usize * mem::size_of::<types::BufRingEntry>();

    fn new() -> anyhow::Result<Self> {
        // SAFETY: a fresh anonymous private mapping; the result is checked before use.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                Self::MAP_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        ensure!(map != libc::MAP_FAILED, "mmap buffer ring: {}", io::Error::last_os_error());
        let mut ring = BufRing { entries: map.cast(), bufs: vec![0; RING_BUFS as usize * URING_BUF_LEN / 8], tail: 0 };
        for bid in 0..RING_BUFS {
            ring.push(bid);
        }
        ring.publish();
        Ok(ring)
    }

    fn buf(&self, bid: u16) -> &[u8] {
        let all: &[u8] = as_bytes(&self.bufs);
        &all[bid as usize * URING_BUF_LEN..][..URING_BUF_LEN]
    }

    /// Hands buffer `bid` back to the kernel once [`Self::publish`] runs.
    fn push(&mut self, bid: u16) {
        let addr = self.bufs.as_ptr() as u64 + (bid as usize * URING_BUF_LEN) as u64;
        // SAFETY: the index is masked into the mapping of RING_BUFS entries (a power of two); the kernel only
        // reads entries up to the published tail, and this one is past it.
        let entry = unsafe { &mut *self.entries.add((self.tail & (RING_BUFS - 1)) as usize) };
        entry.set_addr(addr);
        entry.set_len(URING_BUF_LEN as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail is the u16 at byte 14 of entry 0 of our live, page-aligned mapping; the kernel reads
        // it concurrently, hence the atomic release store after the entries are written.
        unsafe { AtomicU16::from_ptr(types::BufRingEntry::tail(self.entries).cast_mut()) }
            .store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping came from `mmap` with this length; the ring using it is dropped first.
        unsafe { libc::munmap(self.entries.cast(), Self::MAP_LEN) };
    }
}

fn as_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: u8 has no alignment or validity requirements and the length covers exactly the same memory.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), mem::size_of_val(words)) }
}

/// An io_uring with a registered [`BufRing`]; fields drop in order, the ring before its buffers.
pub(crate) struct UringReceiver {
    ring: IoUring,
    bufs: BufRing,
}

impl UringReceiver {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .setup_cqsize(RING_BUFS as u32)
            .build(64)
            .context("io_uring with SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN")?;
        let bufs = BufRing::new()?;
        // SAFETY: the entries mapping lives in `bufs`, which outlives `ring` (field order).
        unsafe { ring.submitter().register_buf_ring_with_flags(bufs.entries as u64, RING_BUFS, BUF_GROUP, 0) }
            .context("register_buf_ring")?;
        Ok(UringReceiver { ring, bufs })
    }

    /// Multishot `RecvMsg` until `count` datagrams came, re-armed whenever a completion lacks `F_MORE`.
    pub(crate) fn drain(&mut self, fd: RawFd, count: usize, expect: Expect) -> anyhow::Result<usize> {
        // Multishot RecvMsg takes only the name and control lengths from this header; the kernel writes the
        // name, control and payload into each provided buffer behind an `io_uring_recvmsg_out`.
        let mut slot = Slot::EMPTY;
        let mut template = slot.msghdr(&mut libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 });
        template.msg_iov = ptr::null_mut();
        template.msg_iovlen = 0;
        let arm: squeue::Entry = opcode::RecvMsgMulti::new(types::Fd(fd), &template, BUF_GROUP).build();
        let stall = types::Timespec::from(STALL);
        let (mut got, mut bad, mut armed) = (0, 0, false);
        while got < count {
            if !armed {
                // SAFETY: `template` outlives the request (the ring is dropped or idle before it goes).
                unsafe { self.ring.submission().push(&arm) }.context("submission queue full")?;
                armed = true;
            }
            match self.ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&stall)) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => bail!("io_uring drain stalled after {got}"),
                Err(e) => return Err(e).context("io_uring_enter"),
            }
            for cqe in self.ring.completion() {
                armed &= cqueue::more(cqe.flags());
                let res = cqe.result();
                if res == -libc::ENOBUFS {
                    continue; // ring ran dry: multishot ended without F_MORE and is re-armed above
                }
                ensure!(res >= 0, "multishot RecvMsg: {}", io::Error::from_raw_os_error(-res));
                let bid = cqueue::buffer_select(cqe.flags()).context("completion without a provided buffer")?;
                let buf = &self.bufs.buf(bid)[..res as usize];
                bad += usize::from(!match types::RecvMsgOut::parse(buf, &template) {
                    Ok(out) => {
                        !out.is_payload_truncated()
                            && datagram_ok(out.name_data(), out.control_data(), out.payload_data().len(), expect)
                    }
                    Err(()) => false,
                });
                self.bufs.push(bid);
                got += 1;
            }
            self.bufs.publish();
        }
        Ok(bad)
    }
}
