//! Real sockets inside namespaces: echo servers and the clients that talk to them.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::netns::Netns;

/// How long a client waits for an echo.
pub const ECHO_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a server checks whether it should stop.
const POLL: Duration = Duration::from_millis(50);

/// A running echo server; stopped and joined on drop.
#[derive(Debug)]
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `len` bytes of a test stream whose byte `i` depends on `i` and `seed`: a lost, repeated or reordered chunk
/// breaks it.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed).collect()
}

/// A UDP echo server on `addr` inside `ns`.
pub fn udp_echo(ns: &Netns, addr: SocketAddr) -> io::Result<EchoServer> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let socket = ns.run_in(move || UdpSocket::bind(addr))??;
    socket.set_read_timeout(Some(POLL))?;
    let thread = std::thread::spawn(move || -> io::Result<()> {
        let mut buf = [0u8; 65536];
        while !flag.load(Ordering::Relaxed) {
            // A server keeps serving: an error is reported and the next datagram is awaited.
            match socket.recv_from(&mut buf) {
                Ok((n, peer)) => {
                    if let Err(e) = socket.send_to(&buf[..n], peer) {
                        eprintln!("udp echo {addr}: answering {peer}: {e}");
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    eprintln!("udp echo {addr}: {e}");
                    std::thread::sleep(POLL);
                }
            }
        }
        Ok(())
    });
    Ok(EchoServer { addr, stop, thread: Some(thread) })
}

/// A TCP echo server on `addr` inside `ns` (one connection at a time, each echoed until it closes).
pub fn tcp_echo(ns: &Netns, addr: SocketAddr) -> io::Result<EchoServer> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let listener = ns.run_in(move || TcpListener::bind(addr))??;
    listener.set_nonblocking(true)?;
    let thread = std::thread::spawn(move || -> io::Result<()> {
        while !flag.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false)?;
                    stream.set_read_timeout(Some(ECHO_TIMEOUT))?;
                    let mut buf = [0u8; 16384];
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => stream.write_all(&buf[..n])?,
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    Ok(EchoServer { addr, stop, thread: Some(thread) })
}

/// Sends `payload` from `ns` (bound to `from`, port 0 = any) to `to` over UDP and waits for the echo.
pub fn udp_roundtrip(ns: &Netns, from: SocketAddr, to: SocketAddr, payload: &[u8]) -> io::Result<Vec<u8>> {
    udp_roundtrip_within(ns, from, to, payload, ECHO_TIMEOUT)
}

/// [`udp_roundtrip`] waiting at most `timeout` (for checking that something is dropped).
pub fn udp_roundtrip_within(
    ns: &Netns,
    from: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    let payload = payload.to_vec();
    ns.run_in(move || -> io::Result<Vec<u8>> {
        let socket = UdpSocket::bind(from)?;
        socket.set_read_timeout(Some(timeout))?;
        socket.send_to(&payload, to)?;
        let mut buf = vec![0u8; 65536];
        let (n, _) = socket.recv_from(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })?
}

/// Connects from `ns` to `to`, writes `payload`, reads the echo, closes. Returns the local address used.
pub fn tcp_roundtrip(ns: &Netns, to: SocketAddr, payload: &[u8]) -> io::Result<(SocketAddr, Vec<u8>)> {
    let payload = payload.to_vec();
    ns.run_in(move || -> io::Result<(SocketAddr, Vec<u8>)> {
        let mut stream = TcpStream::connect_timeout(&to, ECHO_TIMEOUT)?;
        stream.set_read_timeout(Some(ECHO_TIMEOUT))?;
        stream.write_all(&payload)?;
        let mut echo = vec![0u8; payload.len()];
        stream.read_exact(&mut echo)?;
        Ok((stream.local_addr()?, echo))
    })?
}

/// `ping -c 1` from `ns` to `to`; true if a reply came back.
pub fn ping(ns: &Netns, to: std::net::IpAddr) -> io::Result<bool> {
    let out = ns.output("ping", &["-c", "1", "-W", "2", &to.to_string()])?;
    Ok(out.status.success())
}

/// An `iperf3 -s` inside a namespace; killed on drop.
#[derive(Debug)]
pub struct Iperf3Server {
    _child: crate::netns::ChildGuard,
}

/// Starts `iperf3 -s -p port` inside `ns` and waits (bounded) until it listens.
pub fn iperf3_server(ns: &Netns, port: u16) -> io::Result<Iperf3Server> {
    let mut cmd = ns.command("iperf3");
    cmd.args(["-s", "-p", &port.to_string()]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let child = ns.spawn(&mut cmd)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = ns.output("ss", &["-ltnH", &format!("sport = :{port}")])?;
        if !out.stdout.is_empty() {
            return Ok(Iperf3Server { _child: child });
        }
        if std::time::Instant::now() > deadline {
            return Err(io::Error::other(format!("iperf3 did not listen on {port}")));
        }
        std::thread::sleep(POLL);
    }
}

/// What an iperf3 run measured.
#[derive(Debug, Clone, Copy)]
pub struct Goodput {
    /// Bits per second the receiver got.
    pub bits_per_second: f64,
    /// Bytes the receiver got.
    pub bytes: u64,
}

/// `iperf3 -c to -p port -t seconds -J` (plus `extra` arguments) from `ns`: the receiver's goodput.
pub fn iperf3_client(ns: &Netns, to: std::net::IpAddr, port: u16, seconds: u32, extra: &[&str]) -> io::Result<Goodput> {
    let (to, port, seconds) = (to.to_string(), port.to_string(), seconds.to_string());
    let mut args = vec!["-c", to.as_str(), "-p", port.as_str(), "-t", seconds.as_str(), "-J"];
    args.extend_from_slice(extra);
    let out = ns.output("iperf3", &args)?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(io::Error::other)?;
    if let Some(error) = report["error"].as_str() {
        return Err(io::Error::other(format!("iperf3: {error}")));
    }
    let received = &report["end"]["sum_received"];
    match (received["bits_per_second"].as_f64(), received["bytes"].as_u64()) {
        (Some(bits_per_second), Some(bytes)) => Ok(Goodput { bits_per_second, bytes }),
        _ => Err(io::Error::other("iperf3 printed no sum_received")),
    }
}
