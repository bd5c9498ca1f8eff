//! TCP through a relay on core [`RELAY_CPU`]: loopback client -> relay -> loopback server, client and server
//! threads on [`PEER_CPU`].
//!
//! - [`Relay::Pump`] is the gateway's own relay loop, `datapath::gateway::pump::Pumps` (one loop, pinned to CPU 0
//!   by `Pumps::start`: edge-triggered epoll, splice(2) through a 1 MiB pipe per direction, half-close;
//!   [`Relay::PumpCopy`] the same loop copying through its 256 KiB buffer, the gateway's default), fed by
//!   an acceptor thread on the same core that accepts, dials the upstream with a blocking `connect` and hands
//!   both sockets over as `worker.rs` does (which dials on a short-lived thread per connection instead).
//! - [`Relay::Compio`] is one compio runtime on a thread pinned to the same core: `TcpListener::accept`, a task
//!   per connection that dials with `TcpStream::connect` and runs `compio::io::util::copy_bidirectional_with_sizes`
//!   (owned-buffer read then `write_all`, [`COPY_BYTES`] per direction, `shutdown` after EOF: half-close).
//!
//! CPU: the relay's process time is `getrusage(RUSAGE_SELF)` over the run minus what the client and server
//! threads report from `getrusage(RUSAGE_THREAD)`; so it holds every relay thread, io_uring workers included.
//! Softirq and busy time of the relay's core come from `/proc/stat`. This kernel accounts CPU time by ticks
//! (no `CONFIG_IRQ_TIME_ACCOUNTING`): softirq work run in the relay thread's context is in its process time and
//! in the core's softirq ticks alike, so the two overlap; the core's busy time counts each tick once (and also
//! counts any neighbour that ran on that core).

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{Arc, atomic::Ordering, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use datapath::gateway::pump::Pumps;

use super::{compio_runtime, cpu};

/// The relay's core (`Pumps::start` pins its loop 0 there).
pub(crate) const RELAY_CPU: usize = 0;
/// The client's and server's core.
const PEER_CPU: usize = 1;
/// Bytes of the one-stream run, client to server.
pub(crate) const STREAM_BYTES: u64 = 2 << 30;
/// Write and read size of the stream's endpoints.
const CHUNK: usize = 1 << 20;
/// The compio relay's buffer per direction: `pump.rs`'s copy fallback size (compio's own default is 8 KiB).
const COPY_BYTES: usize = 64 * 1024;
/// Connections of the per-connection run, each `CONN_BYTES` each way.
pub(crate) const CONNS: usize = 20_000;
const CONN_BYTES: usize = 1024;
/// Client threads (each a sequence of connections) and as many server threads.
const PEERS: usize = 8;
const _: () = assert!(CONNS.is_multiple_of(PEERS));
/// Bound on waiting for the relay to finish its last connections after the clients are done.
const SETTLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Relay {
    /// pump.rs splicing (`--tcp-relay splice`).
    Pump,
    Compio,
    /// pump.rs copying through its loop's buffer (`--tcp-relay copy`, the gateway's default).
    PumpCopy,
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// Wall time until the last client was done.
    pub secs: f64,
    /// Relay process time (user + system), seconds.
    pub relay_cpu: f64,
    /// Softirq time of the relay's core, seconds.
    pub core_softirq: f64,
    /// Busy time (user, nice, system, irq, softirq) of the relay's core, seconds.
    pub core_busy: f64,
}

/// A relay serving a fixed number of connections.
struct Running {
    addr: SocketAddr,
    pumps: Option<Arc<Pumps>>,
    thread: JoinHandle<anyhow::Result<()>>,
    /// compio: sent once every connection's task ended.
    done: mpsc::Receiver<()>,
}

impl Running {
    fn start(relay: Relay, upstream: SocketAddr, conns: usize) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (ready_tx, ready) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let (pumps, thread) = match relay {
            Relay::Pump | Relay::PumpCopy => {
                let mode = match relay {
                    Relay::PumpCopy => datapath::gateway::pump::TcpRelay::Copy,
                    _ => datapath::gateway::pump::TcpRelay::Splice,
                };
                let pumps = Arc::new(Pumps::start(1, mode)?);
                let loops = Arc::clone(&pumps);
                let thread = std::thread::spawn(move || {
                    cpu::pin_to(RELAY_CPU)?;
                    let _ = ready_tx.send(());
                    for _ in 0..conns {
                        let (client, _) = listener.accept()?;
                        let upstream = TcpStream::connect(upstream).context("relay dial")?;
                        loops.relay(0, client, upstream);
                    }
                    Ok(())
                });
                (Some(pumps), thread)
            }
            Relay::Compio => {
                let thread = std::thread::spawn(move || {
                    cpu::pin_to(RELAY_CPU)?;
                    compio_runtime()?.block_on(async move {
                        let listener = compio::net::TcpListener::from_std(listener)?;
                        let _ = ready_tx.send(());
                        let mut tasks = Vec::with_capacity(conns);
                        for _ in 0..conns {
                            let (client, _) = listener.accept().await?;
                            tasks.push(compio::runtime::spawn(compio_relay(client, upstream)));
                        }
                        for task in tasks {
                            task.await.map_err(|_| anyhow::anyhow!("relay task panicked"))??;
                        }
                        let _ = done_tx.send(());
                        anyhow::Ok(())
                    })
                });
                (None, thread)
            }
        };
        ready.recv_timeout(SETTLE).context("relay did not start")?;
        Ok(Self { addr, pumps, thread, done })
    }

    /// Waits until the relay has ended every connection (the clients are done by now).
    fn settle(&self) -> anyhow::Result<()> {
        match &self.pumps {
            Some(pumps) => {
                let deadline = Instant::now() + SETTLE;
                while pumps.counters.active.load(Ordering::Relaxed) > 0 {
                    ensure!(Instant::now() < deadline, "relay loop still holds connections after {SETTLE:?}");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(())
            }
            None => self.done.recv_timeout(SETTLE).context("compio relay did not finish its connections"),
        }
    }

    fn join(self) -> anyhow::Result<()> {
        let result = self.thread.join().map_err(|_| anyhow::anyhow!("relay thread panicked"))?;
        if let Some(pumps) = self.pumps {
            ensure!(pumps.counters.errors.load(Ordering::Relaxed) == 0, "relay loop saw resets or failed writes");
        }
        result
    }
}

/// One relayed connection on compio: dial, then copy both ways with half-close.
async fn compio_relay(client: compio::net::TcpStream, upstream: SocketAddr) -> anyhow::Result<()> {
    let upstream = compio::net::TcpStream::connect(upstream).await.context("relay dial")?;
    let (up, down) = compio::io::util::copy_bidirectional_with_sizes(client, upstream, COPY_BYTES, COPY_BYTES).await;
    up.context("client -> upstream")?;
    down.context("upstream -> client")?;
    Ok(())
}

/// Spawns a peer thread on [`PEER_CPU`] that returns its own process time with its result.
fn peer<F>(work: F) -> JoinHandle<anyhow::Result<f64>>
where
    F: FnOnce() -> anyhow::Result<()> + Send + 'static,
{
    std::thread::spawn(move || {
        cpu::pin_to(PEER_CPU)?;
        let start = cpu::thread_secs();
        work()?;
        Ok(cpu::thread_secs() - start)
    })
}

/// Joins peers; returns their summed process time.
fn join_peers(peers: Vec<JoinHandle<anyhow::Result<f64>>>) -> anyhow::Result<f64> {
    let mut secs = 0.0;
    for peer in peers {
        secs += peer.join().map_err(|_| anyhow::anyhow!("peer thread panicked"))??;
    }
    Ok(secs)
}

/// Runs `peers` (built from the relay's address) through `relay` and measures the window around them.
fn measure(
    relay: Relay,
    server: TcpListener,
    conns: usize,
    peers: impl FnOnce(SocketAddr, TcpListener) -> anyhow::Result<Vec<JoinHandle<anyhow::Result<f64>>>>,
) -> anyhow::Result<Sample> {
    let running = Running::start(relay, server.local_addr()?, conns)?;
    let window = cpu::Window::open(RELAY_CPU)?;
    let started = Instant::now();
    let peer_cpu = join_peers(peers(running.addr, server)?)?;
    let secs = started.elapsed().as_secs_f64();
    running.settle()?;
    let (self_cpu, core_softirq, core_busy) = window.close()?;
    running.join()?;
    Ok(Sample { secs, relay_cpu: self_cpu - peer_cpu, core_softirq, core_busy })
}

/// One stream of [`STREAM_BYTES`] client -> server, half-closed, then the server's 8-byte count back.
pub(crate) fn stream(relay: Relay) -> anyhow::Result<Sample> {
    let server = TcpListener::bind("127.0.0.1:0")?;
    measure(relay, server, 1, |relay_addr, server| {
        let sink = peer(move || {
            let (mut socket, _) = server.accept()?;
            let mut buf = vec![0; CHUNK];
            let mut total = 0u64;
            loop {
                match socket.read(&mut buf)? {
                    0 => break,
                    n => total += n as u64,
                }
            }
            socket.write_all(&total.to_le_bytes())?;
            Ok(())
        });
        let source = peer(move || {
            let mut socket = TcpStream::connect(relay_addr)?;
            let buf = vec![0x5a; CHUNK];
            let mut left = STREAM_BYTES;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                socket.write_all(&buf[..n])?;
                left -= n as u64;
            }
            socket.shutdown(Shutdown::Write)?;
            let mut answer = Vec::new();
            socket.read_to_end(&mut answer)?;
            ensure!(answer == STREAM_BYTES.to_le_bytes(), "server counted {answer:?}, not {STREAM_BYTES} bytes");
            Ok(())
        });
        Ok(vec![sink, source])
    })
}

/// [`CONNS`] short exchanges: the client sends [`CONN_BYTES`] and half-closes, the server answers as many bytes
/// and closes; [`PEERS`] clients in parallel, each a sequence of connections.
pub(crate) fn connections(relay: Relay) -> anyhow::Result<Sample> {
    let server = TcpListener::bind("127.0.0.1:0")?;
    measure(relay, server, CONNS, |relay_addr, server| {
        let mut peers = Vec::new();
        for _ in 0..PEERS {
            let listener = server.try_clone()?;
            // Every connection is accepted by some server thread; each takes its share, so all finish.
            peers.push(peer(move || {
                let answer = [0xa5u8; CONN_BYTES];
                let mut request = Vec::with_capacity(CONN_BYTES);
                for _ in 0..CONNS / PEERS {
                    let (mut socket, _) = listener.accept()?;
                    request.clear();
                    socket.read_to_end(&mut request)?;
                    ensure!(request.len() == CONN_BYTES, "server got {} bytes", request.len());
                    socket.write_all(&answer)?;
                }
                Ok(())
            }));
            peers.push(peer(move || {
                let request = [0x5au8; CONN_BYTES];
                let mut answer = Vec::with_capacity(CONN_BYTES);
                for _ in 0..CONNS / PEERS {
                    let mut socket = TcpStream::connect(relay_addr)?;
                    socket.write_all(&request)?;
                    socket.shutdown(Shutdown::Write)?;
                    answer.clear();
                    socket.read_to_end(&mut answer)?;
                    ensure!(answer == [0xa5u8; CONN_BYTES], "client got {} bytes back", answer.len());
                }
                Ok(())
            }));
        }
        Ok(peers)
    })
}
