//! The system calls the edges need that `std` and `socket2` do not offer: epoll, `recvmmsg`/`sendmmsg` with
//! IP_PKTINFO / IPV6_PKTINFO control messages, forced receive buffers, `if_indextoname`. Every `unsafe` block of
//! the crate is here, each with its reason.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

mod gso;
pub use gso::{Datagram, GsoSender, MAX_GSO_BYTES, MAX_GSO_SEGMENT, MAX_GSO_SEGMENTS, Sent, UDP_SEGMENT};

/// Datagrams moved per `recvmmsg` / `sendmmsg` call. honk measured vlen 8 -> 16 as +1.8% and 32 as nothing
/// more (peers.md); 32 keeps bursts from dnsperf in one call.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: the largest EDNS payload clients use in practice plus headroom; bigger
/// datagrams arrive truncated (MSG_TRUNC) and are dropped.
pub const DATAGRAM_BUF: usize = 4096;
/// Control buffer per datagram, enough for one IPV6_PKTINFO (or IP_PKTINFO) message.
const CONTROL_BUF: usize = 128;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// An epoll instance.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

/// Readable.
pub const IN: u32 = libc::EPOLLIN as u32;
/// Writable.
pub const OUT: u32 = libc::EPOLLOUT as u32;
/// Error or hang-up.
pub const ERR: u32 = (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32;

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Epoll {
    /// A new instance (close-on-exec).
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: `event` is a valid epoll_event for the duration of the call; the kernel copies it.
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) }).map(|_| ())
    }

    /// Watches `fd` for `events`, reporting `token`.
    pub fn add(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events | libc::EPOLLRDHUP as u32)
    }

    /// Changes the events watched on `fd`.
    pub fn modify(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, events | libc::EPOLLRDHUP as u32)
    }

    /// Stops watching `fd` (closing it does too).
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout_ms` (-1: forever) and fills `events`; returns how many.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: the kernel writes at most `events.len()` entries into the slice.
        let n = unsafe {
            libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), events.len() as libc::c_int, timeout_ms)
        };
        match check(n) {
            Ok(n) => Ok(n as usize),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(error) => Err(error),
        }
    }
}

/// Sets an integer socket option.
pub fn set_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value is a c_int living for the call, with its size passed.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Sets the receive buffer to `bytes`, past `net.core.rmem_max` when the process may (CAP_NET_ADMIN):
/// peers that keep the 208 KB default drop dnsperf's bursts (issue 5).
pub fn size_receive_buffer(fd: RawFd, bytes: usize) {
    let bytes = bytes.min(i32::MAX as usize) as libc::c_int;
    if set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes).is_err() {
        let _ = set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes);
    }
}

/// Asks for the destination address and ingress interface of every datagram (IP_PKTINFO, IPV6_RECVPKTINFO).
pub fn enable_pktinfo(fd: RawFd, v6: bool) -> io::Result<()> {
    if v6 {
        set_int_opt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        // A dual-stack socket also receives IPv4 datagrams, whose pktinfo comes as IP_PKTINFO.
        let _ = set_int_opt(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
        Ok(())
    } else {
        set_int_opt(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
    }
}

/// The destination and interface of a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PktInfo {
    /// The address the datagram was sent to.
    pub dst: Option<IpAddr>,
    /// The interface it arrived on (0: unknown).
    pub ifindex: u32,
    /// The destination port, when the socket asked for the original destination (IP_RECVORIGDSTADDR); 0
    /// otherwise.
    pub dst_port: u16,
    /// On a socket that asked for merged receives (`UDP_GRO`): the size of each datagram of a merged run (the
    /// last may be shorter); 0 for a single datagram.
    pub gro_segment: u16,
}

/// One received datagram of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes in the buffer.
    pub len: usize,
    /// The sender.
    pub from: Option<SocketAddr>,
    /// Destination and interface (when IP_PKTINFO is on).
    pub info: PktInfo,
}

impl Received {
    /// The datagrams in `payload` (this receive's `len` bytes): the one datagram, or, for a merged receive
    /// ([`PktInfo::gro_segment`]), the run split at the segment size, the last possibly shorter.
    pub fn datagrams<'b>(&self, payload: &'b [u8]) -> std::slice::Chunks<'b, u8> {
        let payload = &payload[..self.len.min(payload.len())];
        match usize::from(self.info.gro_segment) {
            0 => payload.chunks(payload.len().max(1)),
            segment => payload.chunks(segment),
        }
    }
}

/// Buffers for one `recvmmsg` call of up to [`BATCH`] datagrams.
pub struct RecvBatch {
    /// [`BATCH`] buffers of `buf_len` bytes, back to back.
    bufs: Vec<u8>,
    buf_len: usize,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<[u64; CONTROL_BUF / 8]>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// What the last call received.
    pub received: Vec<Received>,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("received", &self.received.len()).finish()
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// Buffers for [`BATCH`] datagrams of up to [`DATAGRAM_BUF`] bytes.
    pub fn new() -> Self {
        Self::with_datagram_size(DATAGRAM_BUF)
    }

    /// Buffers for [`BATCH`] datagrams of up to `size` bytes; a larger one arrives truncated and is given
    /// length 0. (The buffers are zeroed lazily by the kernel: only pages datagrams reach become resident.)
    pub fn with_datagram_size(size: usize) -> Self {
        Self {
            bufs: vec![0u8; BATCH * size],
            buf_len: size,
            // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero is valid.
            names: vec![unsafe { zeroed() }; BATCH],
            controls: vec![[0u64; CONTROL_BUF / 8]; BATCH],
            // SAFETY: as above.
            iovecs: vec![unsafe { zeroed() }; BATCH],
            // SAFETY: as above.
            headers: vec![unsafe { zeroed() }; BATCH],
            received: Vec::with_capacity(BATCH),
        }
    }

    /// The payload of datagram `i` of the last call.
    pub fn payload(&self, i: usize) -> &[u8] {
        &self.bufs[i * self.buf_len..][..self.received[i].len]
    }

    /// Receives up to [`BATCH`] datagrams without blocking; `Ok(0)` when none is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.received.clear();
        for i in 0..BATCH {
            let buf = &mut self.bufs[i * self.buf_len..(i + 1) * self.buf_len];
            self.iovecs[i] = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = self.controls[i].as_mut_ptr().cast();
            header.msg_controllen = CONTROL_BUF;
            header.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` that outlive the call, with their lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(error),
            };
        }
        for i in 0..n as usize {
            let header = &self.headers[i].msg_hdr;
            let truncated = header.msg_flags & libc::MSG_TRUNC != 0;
            let from = sockaddr_to_std(&self.names[i], header.msg_namelen);
            let written = header.msg_controllen.min(CONTROL_BUF);
            // SAFETY: the control buffer is CONTROL_BUF bytes of initialised u64s, viewed as bytes (no alignment
            // or validity requirement), and `written` is at most that.
            let control = unsafe { std::slice::from_raw_parts(self.controls[i].as_ptr().cast::<u8>(), written) };
            let info = pktinfo_from_control(control);
            let len = if truncated { 0 } else { self.headers[i].msg_len as usize };
            self.received.push(Received { len, from, info });
        }
        Ok(n as usize)
    }
}

/// `UDP_GRO` (linux/udp.h): the socket option asking for merged receives, and the control message type giving
/// their segment size.
pub const UDP_GRO: libc::c_int = 104;

/// Control buffer bytes one datagram's messages need: IPV6_PKTINFO (40), IPV6_ORIGDSTADDR (48) and `UDP_GRO`
/// (24), or their IPv4 forms, with room to spare.
pub const CONTROL_LEN: usize = CONTROL_BUF;

/// Destination and interface from a control buffer the kernel wrote (the `msg_control` bytes of one datagram,
/// e.g. a multishot `RecvMsg` completion's control area), read in place at any alignment; messages past
/// [`CONTROL_LEN`] bytes are ignored. Each message is Linux's `cmsghdr` (`cmsg_len: usize`, `cmsg_level: i32`,
/// `cmsg_type: i32`, 16 bytes on 64-bit) followed by its data, the next one at the following 8-byte boundary.
pub fn pktinfo_from_control(control: &[u8]) -> PktInfo {
    const HDR: usize = size_of::<libc::cmsghdr>();
    const LEN: usize = size_of::<usize>();
    let mut info = PktInfo::default();
    let mut rest = &control[..control.len().min(CONTROL_LEN)];
    while let Some(header) = rest.get(..HDR) {
        let len = usize::from_ne_bytes(header[..LEN].try_into().expect("LEN bytes"));
        let level = i32::from_ne_bytes(header[LEN..LEN + 4].try_into().expect("4 bytes"));
        let kind = i32::from_ne_bytes(header[LEN + 4..LEN + 8].try_into().expect("4 bytes"));
        let Some(data) = rest.get(HDR..len.max(HDR)) else { break };
        match (level, kind) {
            // in_pktinfo: ipi_ifindex (i32) at 0, ipi_spec_dst at 4, ipi_addr at 8.
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if data.len() >= 12 => {
                info.ifindex = u32::from_ne_bytes(data[..4].try_into().expect("4 bytes"));
                info.dst = Some(IpAddr::V4(Ipv4Addr::new(data[8], data[9], data[10], data[11])));
            }
            // in6_pktinfo: ipi6_addr at 0, ipi6_ifindex (u32) at 16.
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() >= 20 => {
                info.ifindex = u32::from_ne_bytes(data[16..20].try_into().expect("4 bytes"));
                let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(&data[..16]).expect("16 bytes"));
                info.dst = Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4));
            }
            // sockaddr_in / sockaddr_in6: the port, big-endian, at 2.
            (libc::IPPROTO_IP, libc::IP_ORIGDSTADDR) | (libc::IPPROTO_IPV6, libc::IPV6_ORIGDSTADDR)
                if data.len() >= 4 =>
            {
                info.dst_port = u16::from_be_bytes([data[2], data[3]]);
            }
            // An int: the segment size of a merged receive.
            (libc::SOL_UDP, UDP_GRO) if data.len() >= 4 => {
                let size = i32::from_ne_bytes(data[..4].try_into().expect("4 bytes"));
                info.gro_segment = u16::try_from(size).unwrap_or(0);
            }
            _ => {}
        }
        if len < HDR {
            break;
        }
        rest = rest.get(len.next_multiple_of(LEN)..).unwrap_or(&[]);
    }
    info
}

/// The address in a socket name the kernel wrote (`sockaddr_in` or `sockaddr_in6` bytes, any alignment), read
/// in place: the family (native-endian u16) at 0 and the port (big-endian) at 2; then the IPv4 address at 4, or
/// the IPv6 flow info at 4, address at 8 and scope id at 24. A v4-mapped IPv6 address comes back as IPv4.
pub fn sockaddr_from_bytes(name: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(name.get(..2)?.try_into().ok()?));
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET if name.len() >= size_of::<libc::sockaddr_in>() => {
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(name[4], name[5], name[6], name[7]), port)))
        }
        libc::AF_INET6 if name.len() >= size_of::<libc::sockaddr_in6>() => {
            let flowinfo = u32::from_ne_bytes(name[4..8].try_into().ok()?);
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&name[8..24]).ok()?);
            let scope = u32::from_ne_bytes(name[24..28].try_into().ok()?);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(ip, port, flowinfo, scope)),
            })
        }
        _ => None,
    }
}

fn sockaddr_to_std(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = (len as usize).min(size_of::<libc::sockaddr_storage>());
    // SAFETY: the storage viewed as its first `len` bytes (at most its size; u8 has no alignment or validity
    // requirement).
    let bytes = unsafe { std::slice::from_raw_parts((storage as *const libc::sockaddr_storage).cast::<u8>(), len) };
    sockaddr_from_bytes(bytes)
}

fn std_to_sockaddr(addr: SocketAddr, v6_socket: bool) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let v6 = match addr {
        SocketAddr::V4(v4) if v6_socket => SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
        SocketAddr::V6(v6) => v6,
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_in fits in sockaddr_storage; we write through a correctly typed pointer.
            let sin: &mut libc::sockaddr_in = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            return (storage, size_of::<libc::sockaddr_in>() as libc::socklen_t);
        }
    };
    // SAFETY: sockaddr_in6 fits in sockaddr_storage; we write through a correctly typed pointer.
    let sin6: &mut libc::sockaddr_in6 = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast() };
    sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sin6.sin6_port = v6.port().to_be();
    sin6.sin6_addr.s6_addr = v6.ip().octets();
    sin6.sin6_flowinfo = v6.flowinfo();
    sin6.sin6_scope_id = v6.scope_id();
    (storage, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
}

/// One datagram to send: to `to` (unconnected sockets) from `from` (IP_PKTINFO source, so a multi-homed
/// gateway answers from the address the client asked).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The payload.
    pub payload: Vec<u8>,
    /// The destination; `None` on a connected socket.
    pub to: Option<SocketAddr>,
    /// The source address and interface to send from.
    pub from: Option<(IpAddr, u32)>,
}

/// Writes one IP_PKTINFO / IPV6_PKTINFO control message into `header`'s control buffer.
///
/// # Safety
/// `header.msg_control` must point at a writable buffer of `header.msg_controllen` bytes, at least
/// `CMSG_SPACE(sizeof(in6_pktinfo))`.
unsafe fn write_pktinfo(header: &mut libc::msghdr, source: IpAddr, ifindex: u32, v6_socket: bool) {
    // SAFETY: the caller guarantees the buffer; CMSG_FIRSTHDR is non-null for a buffer this size.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(header);
        match source {
            IpAddr::V4(v4) if !v6_socket => {
                (*cmsg).cmsg_level = libc::IPPROTO_IP;
                (*cmsg).cmsg_type = libc::IP_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr { s_addr: u32::from(v4).to_be() },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
                header.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as _;
            }
            _ => {
                let v6 = match source {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
                let link_local = v6.is_unicast_link_local();
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr { s6_addr: v6.octets() },
                    ipi6_ifindex: if link_local { ifindex } else { 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
                header.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as _;
            }
        }
    }
}

/// The name of interface `ifindex`, if it exists.
pub fn if_indextoname(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes as the call requires; the result is NUL-terminated on success.
    let ret = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if ret.is_null() {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..len].to_vec()).ok()
}

/// The pending error of a socket (SO_ERROR), e.g. the outcome of a non-blocking connect.
pub fn take_socket_error(fd: RawFd) -> io::Result<()> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the option's size.
    check(unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut value as *mut libc::c_int).cast(), &mut len)
    })?;
    if value == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(value)) }
}

/// CPU time of the calling thread (user + system), for per-worker accounting.
pub fn thread_cpu_time() -> std::time::Duration {
    // SAFETY: all-zero timespec is valid and clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { zeroed() };
    // SAFETY: `ts` is valid for writes.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is empty; CPU_SET writes within it for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        libc::CPU_SET(cpu, &mut set);
        check(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)).map(|_| ())
    }
}

/// The interface that holds local address `ip` (for a TCP client, the interface it reached the gateway by).
pub fn interface_of_local_addr(ip: IpAddr) -> Option<String> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` walks the list getifaddrs returned; each node is valid until freeifaddrs.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr whose family field tells its real size.
        let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
        let len = match family {
            libc::AF_INET => size_of::<libc::sockaddr_in>(),
            libc::AF_INET6 => size_of::<libc::sockaddr_in6>(),
            _ => continue,
        };
        // SAFETY: copying `len` bytes of the sockaddr the family describes into a zeroed storage.
        let storage = unsafe {
            let mut storage: libc::sockaddr_storage = zeroed();
            std::ptr::copy_nonoverlapping(
                entry.ifa_addr.cast::<u8>(),
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                len,
            );
            storage
        };
        if sockaddr_to_std(&storage, len as libc::socklen_t).map(|addr| addr.ip()) == Some(ip) {
            // SAFETY: ifa_name is a NUL-terminated string valid until freeifaddrs.
            let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
            found = name.to_str().ok().map(str::to_owned);
            break;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

/// Blocks SIGINT, SIGTERM and SIGUSR1 in the calling thread (threads spawned later inherit the mask), so
/// [`wait_signal`] can take them synchronously.
pub fn block_signals() -> io::Result<()> {
    // SAFETY: sigset manipulation on a local set; pthread_sigmask changes only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        let ret = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if ret != 0 {
            return Err(io::Error::from_raw_os_error(ret));
        }
    }
    Ok(())
}

/// Waits for one of the signals [`block_signals`] blocked; returns its number.
pub fn wait_signal() -> i32 {
    // SAFETY: as in block_signals; sigwait writes the received signal into `signal`.
    unsafe {
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        let mut signal: libc::c_int = 0;
        libc::sigwait(&set, &mut signal);
        signal
    }
}

/// A non-blocking, close-on-exec eventfd.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes an initial value and flags and returns a new descriptor or -1.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd (wakes whoever polls it).
pub fn eventfd_write(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes the 8 bytes of `one`, as eventfd requires.
    let _ = unsafe { libc::write(fd, (&one as *const u64).cast(), size_of::<u64>()) };
}

/// Resets an eventfd's counter.
pub fn eventfd_read(fd: RawFd) {
    let mut value: u64 = 0;
    // SAFETY: reads 8 bytes into `value`, as eventfd requires; EAGAIN (nothing pending) is fine.
    let _ = unsafe { libc::read(fd, (&mut value as *mut u64).cast(), size_of::<u64>()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One control message as the kernel lays it out: `cmsghdr`, data, padding to 8 bytes.
    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let len = size_of::<libc::cmsghdr>() + data.len();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&len.to_ne_bytes());
        bytes.extend_from_slice(&level.to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(data);
        bytes.resize(len.next_multiple_of(8), 0);
        bytes
    }

    #[test]
    fn control_messages_are_read_at_any_alignment() {
        let mut pktinfo = 7i32.to_ne_bytes().to_vec();
        pktinfo.extend_from_slice(&[0; 4]);
        pktinfo.extend_from_slice(&[10, 0, 0, 1]);
        let mut origdst = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        origdst.extend_from_slice(&5353u16.to_be_bytes());
        origdst.extend_from_slice(&[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut control = cmsg(libc::IPPROTO_IP, libc::IP_PKTINFO, &pktinfo);
        control.extend(cmsg(libc::IPPROTO_IP, libc::IP_ORIGDSTADDR, &origdst));
        control.extend(cmsg(libc::SOL_UDP, UDP_GRO, &1200i32.to_ne_bytes()));
        for shift in 0..8 {
            let mut shifted = vec![0xee; shift];
            shifted.extend_from_slice(&control);
            let info = pktinfo_from_control(&shifted[shift..]);
            assert_eq!(info.dst, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))), "shift {shift}");
            assert_eq!((info.ifindex, info.dst_port, info.gro_segment), (7, 5353, 1200), "shift {shift}");
        }
        assert_eq!(pktinfo_from_control(&control[..control.len() - 24]).gro_segment, 0, "a single datagram");
    }

    #[test]
    fn a_merged_receive_splits_at_its_segment_size() {
        let payload: Vec<u8> = (0..25).collect();
        let info = |gro_segment| PktInfo { gro_segment, ..PktInfo::default() };
        let merged = Received { len: 25, from: None, info: info(10) };
        let lens: Vec<usize> = merged.datagrams(&payload).map(<[u8]>::len).collect();
        assert_eq!(lens, [10, 10, 5], "the last one shorter");
        assert_eq!(merged.datagrams(&payload).nth(2), Some(&payload[20..]));
        let single = Received { len: 25, from: None, info: info(0) };
        assert_eq!(single.datagrams(&payload).collect::<Vec<_>>(), [&payload[..]]);
        let empty = Received { len: 0, from: None, info: info(0) };
        assert_eq!(empty.datagrams(&payload).count(), 0);
    }

    #[test]
    fn malformed_control_messages_end_the_walk_without_panicking() {
        // A length shorter than the header, one past the buffer, a truncated header, and noise.
        let mut short = cmsg(libc::IPPROTO_IP, libc::IP_PKTINFO, &[0; 12]);
        short[..8].copy_from_slice(&3usize.to_ne_bytes());
        let mut long = cmsg(libc::IPPROTO_IP, libc::IP_PKTINFO, &[0; 12]);
        long[..8].copy_from_slice(&4096usize.to_ne_bytes());
        for control in [short, long, vec![1, 2, 3], (0..=255u8).cycle().take(300).collect()] {
            let _ = pktinfo_from_control(&control);
        }
    }

    #[test]
    fn socket_names_round_trip_through_bytes() {
        for addr in ["192.0.2.7:53", "[2001:db8::5]:853", "[fe80::1%3]:5353"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let (storage, len) = std_to_sockaddr(addr, addr.is_ipv6());
            // SAFETY: `storage` is a live sockaddr_storage and `len` is at most its size.
            let bytes =
                unsafe { std::slice::from_raw_parts((&storage as *const libc::sockaddr_storage).cast(), len as usize) };
            assert_eq!(sockaddr_from_bytes(bytes), Some(addr));
            assert_eq!(sockaddr_from_bytes(&bytes[..bytes.len() - 1]), None, "a short name is refused");
        }
        // A v4-mapped IPv6 name (a dual-stack socket's) comes back as IPv4.
        let (storage, len) = std_to_sockaddr("198.51.100.1:443".parse().unwrap(), true);
        // SAFETY: as above.
        let bytes =
            unsafe { std::slice::from_raw_parts((&storage as *const libc::sockaddr_storage).cast(), len as usize) };
        assert_eq!(sockaddr_from_bytes(bytes), Some("198.51.100.1:443".parse().unwrap()));
    }
}
