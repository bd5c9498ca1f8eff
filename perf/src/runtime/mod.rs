//! The per-core runtime DESIGN.md names as default (compio) against the hand-written loops, in one run (root:
//! `SO_RCVBUFFORCE`; two cores or more).
//!
//! UDP ([`udp`], one pinned core, pre-queued drains as in `udp_recv.rs`), per payload size:
//! - `runtime_udp_compio_multi_vs_uring_{size}`: compio `recv_msg_multi` Mpps against the hand-written io_uring
//!   multishot `RecvMsg` receiver;
//! - `runtime_udp_compio_multi_vs_recvmmsg32_{size}`: the same against `recvmmsg(32)` (the gateway's UDP workers);
//! - `runtime_udp_compio_recvmsg_vs_recvmmsg32_{size}`: compio `recv_msg` (one owned-buffer call per datagram)
//!   against `recvmmsg(32)`.
//!
//! TCP ([`tcp`], relay on CPU 0, client and server on CPU 1), compio relay against `pump.rs`'s loop:
//! - `runtime_tcp_stream_gbps`: goodput of one 2 GiB stream;
//! - `runtime_tcp_stream_cpu_s_per_gb`: relay process time per GB (10^9 bytes) relayed;
//! - `runtime_tcp_stream_softirq_s_per_gb`, `runtime_tcp_stream_core_s_per_gb`: softirq and busy time of the relay's
//!   core per GB;
//! - `runtime_tcp_conns_per_s`: 20k connections of 1 KiB each way, 8 clients in parallel;
//! - `runtime_tcp_conn_cpu_us`, `runtime_tcp_conn_core_us`: relay process time and relay-core busy time per
//!   connection.
//!
//! - `runtime_tcp_stream_copy_vs_splice_*`, `runtime_tcp_copy_vs_splice_conn*`: the same figures for `pump.rs`'s
//!   loop copying (`--tcp-relay copy`, the gateway's default) against the same loop splicing.
//!
//! Each compio (or copying) figure is the value, the splicing loop's the baseline; ratios above 1 favour the
//! value for rates, below 1 for costs. Medians over interleaved rounds whose order alternates. On loopback the
//! received pages are the sender's own, so this says nothing of the gateway's case (pages of a receiving
//! device): `perf --only gateway` measures that.

mod cpu;
mod tcp;
mod udp;

use std::num::NonZero;

use anyhow::ensure;

use crate::report::{Figure, median};
use tcp::{Relay, Sample};

/// A TCP figure: name, unit, and how it is computed from one run.
type TcpFigure<'a> = (&'static str, &'static str, &'a dyn Fn(&Sample) -> f64);

/// TCP rounds per relay; the median is reported.
const TCP_ROUNDS: usize = 3;
/// Provided buffers in compio's pool: as many as the hand-written receiver's ring (`udp_recv::RING_BUFS`).
const POOL_BUFS: u16 = 256;
/// compio's multishot buffers hold an `io_uring_recvmsg_out` (16 B), a `sockaddr_storage` (128 B), the control
/// space and the payload.
const POOL_BUF_LEN: usize = 16 + 128 + crate::udp_recv::CONTROL_LEN + crate::udp_recv::PAYLOAD_MAX;

/// A compio runtime with the ring flags the hand-written receiver uses (SINGLE_ISSUER, DEFER_TASKRUN,
/// COOP_TASKRUN) and a provided-buffer pool the size of its ring.
pub(crate) fn compio_runtime() -> anyhow::Result<compio::runtime::Runtime> {
    let mut proactor = compio::driver::ProactorBuilder::new();
    proactor
        .single_issuer(true)
        .defer_taskrun(true)
        .coop_taskrun(true)
        .taskrun_flag(true)
        .buffer_pool_size(NonZero::new(POOL_BUFS).expect("nonzero"))
        .buffer_pool_buffer_len(POOL_BUF_LEN);
    let rt = compio::runtime::RuntimeBuilder::new().with_proactor(proactor).build()?;
    ensure!(
        rt.driver_type() == compio::driver::DriverType::IoUring,
        "compio chose {:?}, not io_uring",
        rt.driver_type()
    );
    Ok(rt)
}

fn figure(name: String, value: f64, unit: &'static str, baseline: f64) -> Figure {
    Figure { name, value, unit, baseline, ratio: value / baseline }
}

/// Runs the group.
pub fn bench() -> anyhow::Result<Vec<Figure>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    ensure!(cores >= 2, "the runtime benchmark needs two cores (relay and peers apart), found {cores}");
    let mut figures = Vec::new();
    for (size, [mmsg, raw, multi, recv_msg]) in udp::bench()? {
        figures.push(figure(format!("runtime_udp_compio_multi_vs_uring_{size}"), multi, "Mpps", raw));
        figures.push(figure(format!("runtime_udp_compio_multi_vs_recvmmsg32_{size}"), multi, "Mpps", mmsg));
        figures.push(figure(format!("runtime_udp_compio_recvmsg_vs_recvmmsg32_{size}"), recv_msg, "Mpps", mmsg));
    }
    let (mut streams, mut conns) = ([Vec::new(), Vec::new(), Vec::new()], [Vec::new(), Vec::new(), Vec::new()]);
    for round in 0..TCP_ROUNDS {
        let order = if round % 2 == 0 {
            [Relay::Pump, Relay::Compio, Relay::PumpCopy]
        } else {
            [Relay::PumpCopy, Relay::Compio, Relay::Pump]
        };
        for relay in order {
            streams[relay as usize].push(tcp::stream(relay)?);
        }
        for relay in order {
            conns[relay as usize].push(tcp::connections(relay)?);
        }
    }
    let med =
        |samples: &[Sample], pick: &dyn Fn(&Sample) -> f64| median(&mut samples.iter().map(pick).collect::<Vec<_>>());
    let gb = tcp::STREAM_BYTES as f64 / 1e9;
    let per_conn_us = 1e6 / tcp::CONNS as f64;
    let stream_figures: [TcpFigure; 4] = [
        ("runtime_tcp_stream_gbps", "Gb/s", &|s| gb * 8.0 / s.secs),
        ("runtime_tcp_stream_cpu_s_per_gb", "s", &|s| s.relay_cpu / gb),
        ("runtime_tcp_stream_softirq_s_per_gb", "s", &|s| s.core_softirq / gb),
        ("runtime_tcp_stream_core_s_per_gb", "s", &|s| s.core_busy / gb),
    ];
    for (name, unit, pick) in stream_figures {
        let (pump, compio, copy) = (med(&streams[0], pick), med(&streams[1], pick), med(&streams[2], pick));
        figures.push(figure(name.into(), compio, unit, pump));
        let copy_name = name.replacen("runtime_tcp_stream", "runtime_tcp_stream_copy_vs_splice", 1);
        figures.push(figure(copy_name, copy, unit, pump));
    }
    let conn_figures: [TcpFigure; 3] = [
        ("runtime_tcp_conns_per_s", "1/s", &|s| tcp::CONNS as f64 / s.secs),
        ("runtime_tcp_conn_cpu_us", "us", &|s| s.relay_cpu * per_conn_us),
        ("runtime_tcp_conn_core_us", "us", &|s| s.core_busy * per_conn_us),
    ];
    for (name, unit, pick) in conn_figures {
        let (pump, compio, copy) = (med(&conns[0], pick), med(&conns[1], pick), med(&conns[2], pick));
        figures.push(figure(name.into(), compio, unit, pump));
        figures.push(figure(name.replacen("runtime_tcp", "runtime_tcp_copy_vs_splice", 1), copy, unit, pump));
    }
    Ok(figures)
}
