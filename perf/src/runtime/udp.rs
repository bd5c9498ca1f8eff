//! UDP receive rate on one pinned core: compio's `UdpSocket` against the hand-written receivers of
//! [`crate::udp_recv`], all draining the same pre-queued datagrams (`IP_PKTINFO` and `IP_RECVORIGDSTADDR` on).
//!
//! compio 0.19 returns control messages from three receive calls; two are measured:
//! - `recv_msg_multi`: multishot `RecvMsg` over the runtime's provided-buffer pool (its best receive API), and
//! - `recv_msg`: one `RecvMsg` per datagram into owned buffers (the plain owned-buffer API).
//!
//! Every datagram is checked as in [`crate::udp_recv`]: full payload, a 127.0.0.1 source, pktinfo naming
//! 127.0.0.1.

use std::{
    net::UdpSocket,
    os::fd::AsRawFd,
    pin::pin,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use compio::{BufResult, runtime::Runtime};
use futures::StreamExt;

use super::compio_runtime;
use crate::{
    report::median,
    udp_recv::{
        CASES, CONTROL_LEN, Expect, LOOPBACK, PAYLOAD_MAX, UringReceiver, drain_recvmmsg, pin_to_current_core,
        pktinfo_addr, queued_socket,
    },
};

/// Rounds per receiver; the median is reported.
const ROUNDS: usize = 5;
/// The recvmmsg batch the gateway's UDP workers use (`datapath/src/gateway/udp.rs`).
const MMSG_BATCH: usize = 32;
/// A whole drain that takes longer than this lost datagrams: fail instead of hanging.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Receiver {
    /// `recvmmsg(32)`, as the gateway's UDP workers.
    Recvmmsg,
    /// The hand-written io_uring multishot `RecvMsg` receiver of `udp_recv.rs`.
    RawMultishot,
    /// compio `UdpSocket::recv_msg_multi`.
    CompioMulti,
    /// compio `UdpSocket::recv_msg`.
    CompioRecvMsg,
}

pub(crate) const RECEIVERS: [Receiver; 4] =
    [Receiver::Recvmmsg, Receiver::RawMultishot, Receiver::CompioMulti, Receiver::CompioRecvMsg];

/// Per payload size, the median Mpps of each receiver in [`RECEIVERS`] order.
pub(crate) type Rates = Vec<(usize, [f64; RECEIVERS.len()])>;

/// Runs the drains on a thread pinned to the core it starts on.
pub(crate) fn bench() -> anyhow::Result<Rates> {
    std::thread::spawn(|| {
        pin_to_current_core()?;
        let rt = compio_runtime()?;
        let mut rates = Vec::new();
        for (size, count) in CASES {
            let mut mpps: [Vec<f64>; RECEIVERS.len()] = Default::default();
            for round in 0..ROUNDS {
                // Rotate the order each round so a neighbour's burst does not always hit one receiver.
                for i in 0..RECEIVERS.len() {
                    let k = (i + round) % RECEIVERS.len();
                    mpps[k].push(drain(&rt, RECEIVERS[k], size, count)?);
                }
            }
            rates.push((size, mpps.map(|mut s| median(&mut s))));
        }
        Ok(rates)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("runtime udp benchmark thread panicked"))?
}

/// One timed drain of `count` queued datagrams of `size` bytes; returns Mpps.
fn drain(rt: &Runtime, receiver: Receiver, size: usize, count: usize) -> anyhow::Result<f64> {
    let rx = queued_socket(size, count)?;
    let (bad, secs) = match receiver {
        Receiver::Recvmmsg => {
            let start = Instant::now();
            let bad = drain_recvmmsg(rx.as_raw_fd(), count, Expect::loopback(size), MMSG_BATCH)?;
            (bad, start.elapsed().as_secs_f64())
        }
        Receiver::RawMultishot => {
            let mut uring = UringReceiver::new()?;
            let start = Instant::now();
            let bad = uring.drain(rx.as_raw_fd(), count, Expect::loopback(size))?;
            (bad, start.elapsed().as_secs_f64())
        }
        Receiver::CompioMulti | Receiver::CompioRecvMsg => rt.block_on(drain_compio(rx, receiver, size, count))?,
    };
    ensure!(bad == 0, "{receiver:?}: {bad} of {count} x {size} B datagrams without pktinfo, name or full payload");
    Ok(count as f64 / secs / 1e6)
}

/// Drains through compio; returns (bad datagrams, seconds). Only the receive loop is timed.
async fn drain_compio(rx: UdpSocket, receiver: Receiver, size: usize, count: usize) -> anyhow::Result<(usize, f64)> {
    let socket = compio::net::UdpSocket::from_std(rx)?;
    let start = Instant::now();
    let receive = async {
        match receiver {
            Receiver::CompioMulti => drain_multi(&socket, size, count).await,
            _ => drain_recv_msg(&socket, size, count).await,
        }
    };
    let bad = compio::time::timeout(DRAIN_LIMIT, receive)
        .await
        .with_context(|| format!("{receiver:?} stalled draining {count} x {size} B"))??;
    Ok((bad, start.elapsed().as_secs_f64()))
}

fn loopback_source(addr: Option<std::net::SocketAddr>) -> bool {
    matches!(addr, Some(std::net::SocketAddr::V4(a)) if a.ip().octets() == LOOPBACK)
}

/// `recv_msg_multi` until `count` datagrams came; an `ENOBUFS` end (the pool ran dry) re-arms on the next poll.
async fn drain_multi(socket: &compio::net::UdpSocket, size: usize, count: usize) -> anyhow::Result<usize> {
    let mut stream = pin!(socket.recv_msg_multi(CONTROL_LEN));
    let (mut got, mut bad) = (0, 0);
    while got < count {
        match stream.next().await {
            Some(Ok(msg)) => {
                let source = msg.addr().and_then(|a| a.as_socket());
                let ok = msg.data().len() == size
                    && loopback_source(source)
                    && pktinfo_addr(msg.ancillary()) == Some(LOOPBACK);
                bad += usize::from(!ok);
                got += 1;
            }
            Some(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
            Some(Err(e)) => return Err(e).with_context(|| format!("recv_msg_multi after {got}")),
            None => bail!("recv_msg_multi ended after {got}"),
        }
    }
    Ok(bad)
}

/// One `recv_msg` per datagram into owned payload and control buffers handed back by each call.
async fn drain_recv_msg(socket: &compio::net::UdpSocket, size: usize, count: usize) -> anyhow::Result<usize> {
    let mut payload = Vec::with_capacity(PAYLOAD_MAX);
    let mut control = Vec::with_capacity(CONTROL_LEN);
    let mut bad = 0;
    for got in 0..count {
        payload.clear();
        control.clear();
        let BufResult(res, (p, c)) = socket.recv_msg(payload, control).await;
        (payload, control) = (p, c);
        let (n, control_len, source, _) = res.with_context(|| format!("recv_msg after {got}"))?;
        let ok = n == size
            && loopback_source(Some(source))
            && control.get(..control_len).and_then(pktinfo_addr) == Some(LOOPBACK);
        bad += usize::from(!ok);
    }
    Ok(bad)
}
