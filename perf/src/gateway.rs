//! Through the gateway, with real parts (root): client -> gateway (`dae run`) -> server namespaces, iperf3 TCP.
//!
//! - `gateway_tcp_relay_gbps`: goodput of flows the gateway steers to its workers and relays itself (a group
//!   whose node is `direct`), against the direct routed path (the kernel forwards, dae only tags) in the same run.
//! - `gateway_tcp_relay_copy_vs_splice_gbps`, `..._cores_per_gbps`: the relay copying (`dae run --tcp-relay
//!   copy`, the default) against splicing (`--tcp-relay splice`), a daemon each, alternating;
//!   `gateway_tcp_relay_splice_*`: the splicing relay against the direct runs beside it.
//! - `gateway_tcp_socks5_gbps`: the same through a real SOCKS5 proxy (microsocks in the server namespace).
//! - `gateway_udp_relay_gbps`: UDP (iperf3 `-u -b 0 -l 1200 -w 4M`, goodput the receiver counted) relayed by
//!   the gateway's UDP sessions, against the direct routed path.
//! - `gateway_udp_reply_relay_gbps`: the same in the reply direction (iperf3 `-R`: the server sends, the gateway
//!   reads its session socket and sends from the server's address to the client), against the direct path.
//! - `gateway_udp_reply_gro_gbps`, `gateway_udp_reply_gro_cores_per_gbps`: the relayed reply direction with the
//!   session sockets' UDP GRO on (`dae run --udp-gro on`, the default) against off, a daemon started per run and
//!   the two alternating, GRO turned on on the gateway's WAN veth (off by default on a veth); the merged receives the daemon counted go to stderr.
//! - `gateway_udp_gso_reply_gro_gbps`, `gateway_udp_gso_reply_gro_cores_per_gbps`: the same comparison with a
//!   sender that sends as QUIC stacks do, in GSO sends of [`GSO_RUN`] datagrams of 1200 bytes (iperf3 sends
//!   one datagram per system call, each taken by its own NAPI poll, so nothing is merged for it).
//! - `gateway_udp_gso_relay_gro_gbps`, `gateway_udp_gso_relay_gro_cores_per_gbps`: the client -> server direction
//!   with the same kind of GSO sender, relayed, with the steering sockets' UDP GRO on against off, on the daemons
//!   above, with GRO and `rx-udp-gro-forwarding` on on the gateway's LAN veth (the client's veth segments each
//!   run, its peer running XDP; the LAN veth merges the train again, as a NIC does with that setting).
//! - `gateway_udp_gso_relay_gbps`, `gateway_udp_gso_relay_cores_per_gbps`: that sender relayed (GRO on) against
//!   the direct routed path with the same LAN settings (the kernel forwards the merged train whole).
//! - `gateway_udp_coalesced_lan_gro_gbps`, `..._cores_per_gbps`: iperf3 (one datagram per send) relayed
//!   through a LAN link that coalesces as a NIC under load does, `dae run`'s defaults (merged receives) against
//!   `--udp-gro off`, alternating; the merged receives go to stderr.
//! - `gateway_tcp_relay_wire_gbps`, `..._cores_per_gbps`: the TCP relay against the direct path with the
//!   gateway's WAN link limited to a wire of [`WIRE_SHARE`] of what the unlimited direct runs reached (a `tbf`
//!   qdisc on the lab's own veth): the appliance's case, where a wire and not the CPU bounds a flow, as the peers'
//!   labs measure (10 GbE, 4+ cores for the gateway alone). Here client, gateway and server share two cores, so
//!   the unlimited runs above measure who needs less CPU; these say whether the relay keeps up with a wire, and at
//!   what CPU per Gbit/s.
//! - `gateway_tcp_*_cores_per_gbps`: CPU cores busy per Gbit/s, counted from `/proc/stat` over the run (user,
//!   system, irq and softirq of the whole machine: client, gateway, proxy and server share it), so softirq work
//!   is included, not only the daemon's process time.
//! - `dae_rss_after_load_mib`: the daemon's resident memory after the runs, against its idle RSS right after
//!   start.
//!
//! Rounds alternate the paths so a noisy neighbour hits them alike; each figure is the median of the rounds. Each
//! round's goodputs, and each UDP run's receive-buffer drops in the client, gateway and server namespaces, go to
//! stderr.
//!
//! The daemon inherits the environment: `DAE_UDP_RECV=recvmmsg` runs its UDP workers on the `recvmmsg` receiver
//! instead of io_uring (`dae run --udp-recv`). The receiver the daemon logged, the times its buffer rings ran
//! dry and the datagrams it dropped go to stderr, and so does the daemon's own CPU per relayed reply datagram at a
//! fixed 400 Mbit/s (an A/B figure for the reply path).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use bench_lab::{
    daemon::{Daemon, process_cpu},
    proxies,
    topology::{Topology, coalesce_like_a_nic},
    traffic::{iperf3_client, iperf3_server},
};

use crate::{
    report::{Figure, median},
    udp_recv::COALESCE_NS,
};

const ROUNDS: usize = 3;
const SECONDS: u32 = 4;
const DIRECT_PORT: u16 = 5300;
const RELAY_PORT: u16 = 5301;
/// What the daemon's log line naming its UDP steering receiver starts with.
const RECEIVER_LOG: &str = "UDP steering receive:";
const SOCKS_PORT: u16 = 5302;
/// The relayed port of the GSO sender.
const GSO_PORT: u16 = 5303;
/// How long a GSO run's receiver waits for more before it counts the run over.
const QUIET: std::time::Duration = std::time::Duration::from_millis(300);
/// The GSO sender's port on the direct routed path (client -> server).
const GSO_DIRECT_PORT: u16 = 5304;
/// Datagrams per GSO send of the GSO sender (a QUIC stack's usual batch).
const GSO_RUN: usize = 10;
/// Payload of each UDP datagram: iperf3's `-l 1200` in the `UDP_*_ARGS` below, and the GSO sender's.
const GSO_DATAGRAM: usize = 1200;

/// Busy and total jiffies of the whole machine (`/proc/stat`'s `cpu` line).
fn cpu_jiffies() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// UDP runs: iperf3's unlimited rate with 1200-byte datagrams (a QUIC-sized payload), the receiving iperf3's
/// socket buffer 4 MiB (`-w`, both paths alike; QUIC stacks ask for several MiB). With the default 208 KiB the
/// relayed runs measured the receiving process more than the gateway: a worker's batch arrives at once, and
/// while the receiver shares a core with the worker or the sender it cannot drain, so its socket dropped
/// 110,000-170,000 datagrams per 4 s relayed run against 1,700-2,900 direct (per-run drops go to stderr).
const UDP_ARGS: &[&str] = &["-u", "-b", "0", "-l", "1200", "-w", "4M"];
/// iperf3's `-w 4M` in bytes: [`bench_with`] raises `net.core.rmem_max` and `wmem_max` to it if they are lower.
const UDP_SOCKET_BUFFER: u64 = 4 << 20;
/// The same, the server sending (the gateway relays replies).
const UDP_REPLY_ARGS: &[&str] = &["-u", "-b", "0", "-l", "1200", "-w", "4M", "-R"];

/// The reply direction at a fixed offered rate, below saturation on two cores: the daemon's own CPU per relayed
/// datagram (stderr; an A/B figure for changes to the reply path, steadier than saturated goodput, whose
/// machine-wide CPU here is mostly iperf3's).
const UDP_REPLY_FIXED_ARGS: &[&str] = &["-u", "-b", "400M", "-l", "1200", "-R"];

/// The emulated wire of the `gateway_tcp_relay_wire_*` runs as a share of the unlimited direct path's median:
/// below what the relay reaches CPU-bound here (0.7-0.8x direct), so the wire, not the CPU, bounds both paths.
const WIRE_SHARE: f64 = 0.5;

/// One iperf3 run: (Gbit/s, cores busy per Gbit/s).
fn run(ns: &bench_lab::netns::Netns, to: IpAddr, port: u16, extra: &[&str]) -> anyhow::Result<(f64, f64)> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let (busy0, total0) = cpu_jiffies()?;
    let goodput = iperf3_client(ns, to, port, SECONDS, extra)?;
    let (busy1, total1) = cpu_jiffies()?;
    let cores = cpus * (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64;
    let gbps = goodput.bits_per_second / 1e9;
    Ok((gbps, cores / gbps))
}

/// The reply direction with a GSO sender: the server answers the client's first datagram with GSO sends of
/// [`GSO_RUN`] datagrams for [`SECONDS`]; (Gbit/s the client received, cores busy per Gbit/s).
fn gso_reply_run(topo: &Topology, port: u16) -> anyhow::Result<(f64, f64)> {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::{Duration, Instant};
    let to = SocketAddr::new(IpAddr::from(topo.server_v4), port);
    let server = topo.server.run_in(move || UdpSocket::bind(to))??;
    let client = topo.lan().client.run_in(|| UdpSocket::bind("0.0.0.0:0"))??;
    let seconds = Duration::from_secs(SECONDS.into());
    let sender = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut buf = [0u8; 64];
        let (_, peer) = server.recv_from(&mut buf)?;
        let run = vec![0x5au8; GSO_RUN * GSO_DATAGRAM];
        let fd = std::os::fd::AsRawFd::as_raw_fd(&server);
        let end = Instant::now() + seconds;
        while Instant::now() < end {
            // A full queue (ENOBUFS) drops the run, as a rate-unlimited iperf3 would.
            let _ = datapath::gateway::gso::send_gso(fd, peer, GSO_DATAGRAM as u16, &run);
        }
        Ok(())
    });
    let measured = receive_measured(&client, || client.send_to(b"go", to).map(drop))?;
    sender.join().map_err(|_| anyhow::anyhow!("the GSO sender panicked"))??;
    anyhow::ensure!(measured.0 > 0.0, "the GSO sender's datagrams never reached the client");
    Ok(measured)
}

/// Calls `start`, then receives on `socket` until it has been quiet for [`QUIET`]; (Gbit/s received, cores of
/// the whole machine busy per Gbit/s meanwhile).
fn receive_measured(
    socket: &std::net::UdpSocket,
    start: impl FnOnce() -> std::io::Result<()>,
) -> anyhow::Result<(f64, f64)> {
    socket.set_read_timeout(Some(QUIET))?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let (busy0, total0) = cpu_jiffies()?;
    start()?;
    let began = std::time::Instant::now();
    let mut bytes = 0u64;
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        bytes += n as u64;
    }
    let elapsed = began.elapsed().saturating_sub(QUIET).as_secs_f64().max(1e-3);
    let (busy1, total1) = cpu_jiffies()?;
    let cores = cpus * (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64;
    let gbps = bytes as f64 * 8.0 / elapsed / 1e9;
    Ok((gbps, cores / gbps.max(1e-9)))
}

/// The client -> server direction with a GSO sender: the client sends GSO sends of [`GSO_RUN`] datagrams to
/// `port` for [`SECONDS`]; (Gbit/s the server received, cores busy per Gbit/s).
fn gso_forward_run(topo: &Topology, port: u16) -> anyhow::Result<(f64, f64)> {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::{Duration, Instant};
    let to = SocketAddr::new(IpAddr::from(topo.server_v4), port);
    let server = topo.server.run_in(move || UdpSocket::bind(to))??;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&server);
    crate::udp_recv::set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, UDP_SOCKET_BUFFER as libc::c_int)?;
    let client = topo.lan().client.run_in(|| UdpSocket::bind("0.0.0.0:0"))??;
    let seconds = Duration::from_secs(SECONDS.into());
    let sender = std::thread::spawn(move || {
        let run = vec![0x5au8; GSO_RUN * GSO_DATAGRAM];
        let fd = std::os::fd::AsRawFd::as_raw_fd(&client);
        let end = Instant::now() + seconds;
        while Instant::now() < end {
            // A full queue (ENOBUFS) drops the run, as a rate-unlimited iperf3 would.
            let _ = datapath::gateway::gso::send_gso(fd, to, GSO_DATAGRAM as u16, &run);
        }
    });
    let measured = receive_measured(&server, || Ok(()))?;
    sender.join().map_err(|_| anyhow::anyhow!("the GSO sender panicked"))?;
    anyhow::ensure!(measured.0 > 0.0, "the GSO sender's datagrams never reached the server");
    Ok(measured)
}

/// Datagrams the namespace's UDP sockets dropped for a full receive buffer (`UdpRcvbufErrors`, both families).
fn rcvbuf_errors(ns: &bench_lab::netns::Netns) -> u64 {
    let Ok(out) = ns.output("cat", &["/proc/net/snmp", "/proc/net/snmp6"]) else { return 0 };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut total = 0;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(v) = line.strip_prefix("Udp6RcvbufErrors") {
            total += v.trim().parse::<u64>().unwrap_or(0);
        } else if line.starts_with("Udp: InDatagrams") {
            let names: Vec<&str> = line.split_whitespace().collect();
            let values: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
            if let Some(i) = names.iter().position(|n| *n == "RcvbufErrors") {
                total += values.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    total
}

/// One UDP [`run`] from the client to the server's `port`; the datagrams each namespace's sockets dropped for a
/// full receive buffer during it go to stderr under `label`.
fn udp_run(topo: &Topology, label: &str, port: u16, extra: &[&str]) -> anyhow::Result<(f64, f64)> {
    let spaces = [&topo.lan().client, &topo.gateway, &topo.server];
    let before = spaces.map(rcvbuf_errors);
    let result = run(&topo.lan().client, IpAddr::from(topo.server_v4), port, extra)?;
    let after = spaces.map(rcvbuf_errors);
    eprintln!(
        "gateway: {label}: {:.2} Gb/s; receive-buffer drops: client {}, gateway {}, server {}",
        result.0,
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2]
    );
    Ok(result)
}

/// Raises a host-wide `sysctl` (a file under `/proc/sys`) to at least `floor` for the benchmark's life and puts
/// back what was there on drop. iperf3 refuses to run (`socket buffer size not set correctly`) when its `-w`
/// exceeds `net.core.rmem_max` or `wmem_max`, which are not per network namespace (Debian's default: 208 KiB).
struct SysctlFloor {
    path: &'static str,
    previous: Option<String>,
}

impl SysctlFloor {
    fn raise(path: &'static str, floor: u64) -> anyhow::Result<Self> {
        let current = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let value: u64 = current.trim().parse().with_context(|| format!("{path}: {current:?}"))?;
        if value >= floor {
            return Ok(Self { path, previous: None });
        }
        std::fs::write(path, floor.to_string()).with_context(|| format!("raising {path} to {floor}"))?;
        Ok(Self { path, previous: Some(current) })
    }
}

impl Drop for SysctlFloor {
    fn drop(&mut self) {
        if let Some(previous) = &self.previous {
            let _ = std::fs::write(self.path, previous.trim());
        }
    }
}

fn rss_kib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

/// The `dae` binary next to this one (both built by `cargo build --release`).
fn dae() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dae = exe.parent().map(|dir| dir.join("dae")).context("no folder")?;
    anyhow::ensure!(dae.exists(), "{} missing: cargo build --release -p datapath --bin dae", dae.display());
    Ok(dae)
}

/// Per run: (Gbit/s, cores busy per Gbit/s).
type Runs = Vec<(f64, f64)>;

/// iperf3's single sends relayed through a LAN link that delivers as a NIC under load does
/// ([`coalesce_like_a_nic`], [`COALESCE_NS`]): `dae run` with its defaults (the LAN veth's GRO merges the
/// flow's trains, and the steering sockets read them merged) against `--udp-gro off` (every datagram steered
/// and read by itself), alternating, [`ROUNDS`] each. Runs last: the link set-up (checksum offload off on the
/// client's veth) stays for the topology's life.
fn coalesced_lan_runs(dae: &Path, topo: &Topology, config: &str) -> anyhow::Result<(Runs, Runs)> {
    let lan = topo.lan();
    coalesce_like_a_nic(&lan.client, &lan.client_if, &topo.gateway, &lan.gateway_if, COALESCE_NS)?;
    // The GSO runs above turned it on by hand; each daemon here finds it off.
    let off = topo.gateway.output("ethtool", &["-K", &lan.gateway_if, "rx-udp-gro-forwarding", "off"])?;
    anyhow::ensure!(off.status.success(), "ethtool -K {} rx-udp-gro-forwarding off: {off:?}", lan.gateway_if);
    let (mut on_runs, mut off_runs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for (gro, runs) in [("on", &mut on_runs), ("off", &mut off_runs)] {
            let mut daemon = Daemon::start(dae, &topo.gateway, config, &["--udp-gro", gro])?;
            runs.push(udp_run(topo, &format!("coalescing LAN, udp-gro {gro}"), RELAY_PORT, UDP_ARGS)?);
            let stats = daemon.stats()?;
            eprintln!(
                "gateway: coalescing LAN, udp-gro {gro}: udp_steer_gro_receives {} udp_forwarded {} udp_gso_sends {}",
                stats["udp_steer_gro_receives"], stats["udp_forwarded"], stats["udp_gso_sends"]
            );
            daemon.stop()?;
        }
    }
    Ok((on_runs, off_runs))
}

/// A token bucket on the root of a device the lab made, removed on drop (also when a run fails).
struct WireLimit<'a> {
    ns: &'a bench_lab::netns::Netns,
    dev: &'a str,
}

impl<'a> WireLimit<'a> {
    /// At most `mbit` Mbit/s out of `dev`, with a burst that passes a 64 KiB GSO packet whole (nothing is
    /// segmented for it).
    fn set(ns: &'a bench_lab::netns::Netns, dev: &'a str, mbit: u64) -> anyhow::Result<Self> {
        let rate = format!("{mbit}mbit");
        let args = ["qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", "512k", "latency", "4ms"];
        let out = ns.output("tc", &args)?;
        anyhow::ensure!(out.status.success(), "tc {}: {out:?}", args.join(" "));
        Ok(Self { ns, dev })
    }
}

impl Drop for WireLimit<'_> {
    fn drop(&mut self) {
        let _ = self.ns.output("tc", &["qdisc", "del", "dev", self.dev, "root"]);
    }
}

/// TCP direct and relayed, alternating, with the gateway's WAN veth sending at most `mbit` Mbit/s.
fn wire_limited_tcp_runs(topo: &Topology, server: IpAddr, mbit: u64) -> anyhow::Result<(Runs, Runs)> {
    let _wire = WireLimit::set(&topo.gateway, &topo.wan_if, mbit)?;
    let lan = topo.lan();
    let (mut direct, mut relay) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let d = run(&lan.client, server, DIRECT_PORT, &[])?;
        let r = run(&lan.client, server, RELAY_PORT, &[])?;
        eprintln!(
            "gateway: wire {mbit} Mbit/s: round {round}: tcp relayed / direct {:.2} / {:.2} Gb/s ({:.3}x), cores/Gbps {:.3} / {:.3}",
            r.0,
            d.0,
            r.0 / d.0,
            r.1,
            d.1
        );
        direct.push(d);
        relay.push(r);
    }
    Ok((direct, relay))
}

/// TCP relayed by a daemon that copies (`--tcp-relay copy`, the default) and by one that splices, a daemon
/// each, alternating, with a direct run beside each relayed one: (copy, splice, direct).
fn relay_mode_runs(dae: &Path, topo: &Topology, config: &str, server: IpAddr) -> anyhow::Result<(Runs, Runs, Runs)> {
    let lan = topo.lan();
    let (mut copy, mut splice, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        for (mode, runs) in [("copy", &mut copy), ("splice", &mut splice)] {
            let mut daemon = Daemon::start(dae, &topo.gateway, config, &["--tcp-relay", mode])?;
            direct.push(run(&lan.client, server, DIRECT_PORT, &[])?);
            runs.push(run(&lan.client, server, RELAY_PORT, &[])?);
            let relayed = daemon.stats()?["relay_tcp_relayed"].as_u64().unwrap_or(0);
            anyhow::ensure!(relayed >= 1, "the --tcp-relay {mode} run was not relayed");
            daemon.stop()?;
        }
        let last = |runs: &[(f64, f64)]| runs.last().map_or(0.0, |r| r.0);
        eprintln!(
            "gateway: tcp-relay round {round}: copy {:.2} Gb/s, splice {:.2} ({:.3}x), direct beside them {:.2} / {:.2}",
            last(&copy),
            last(&splice),
            last(&copy) / last(&splice),
            direct[direct.len() - 2].0,
            last(&direct)
        );
    }
    Ok((copy, splice, direct))
}

/// The median of one component of `runs`.
fn med(runs: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64) -> f64 {
    median(&mut runs.iter().map(pick).collect::<Vec<_>>())
}

/// Runs the gateway benchmarks.
pub fn bench() -> anyhow::Result<Vec<Figure>> {
    bench_with(&dae()?)
}

fn bench_with(dae: &Path) -> anyhow::Result<Vec<Figure>> {
    let _buffers = [
        SysctlFloor::raise("/proc/sys/net/core/rmem_max", UDP_SOCKET_BUFFER)?,
        SysctlFloor::raise("/proc/sys/net/core/wmem_max", UDP_SOCKET_BUFFER)?,
    ];
    let topo = Topology::client_gateway_server()?;
    let lan = topo.lan();
    let server = IpAddr::from(topo.server_v4);
    let _servers = [
        iperf3_server(&topo.server, DIRECT_PORT)?,
        iperf3_server(&topo.server, RELAY_PORT)?,
        iperf3_server(&topo.server, SOCKS_PORT)?,
    ];
    let _socks = proxies::microsocks(&topo.server, server, 1080)?;
    let config = format!(
        "global {{\n  lan_interface: {lan_if}\n  wan_interface: {wan_if}\n}}\n\
         node {{\n  gateway: 'direct'\n  socks: 'socks5://{server}:1080'\n}}\n\
         group {{\n  relay {{\n    filter: name(gateway)\n    policy: fixed(0)\n  }}\n  \
         socks {{\n    filter: name(socks)\n    policy: fixed(0)\n  }}\n}}\n\
         routing {{\n  dport({RELAY_PORT}, {GSO_PORT}) -> relay\n  dport({SOCKS_PORT}) -> socks\n  fallback: direct\n}}\n",
        lan_if = lan.gateway_if,
        wan_if = topo.wan_if,
    );
    let mut daemon = Daemon::start(dae, &topo.gateway, &config, &[])?;
    anyhow::ensure!(
        daemon.wait_for_log(RECEIVER_LOG, std::time::Duration::from_secs(2)),
        "the daemon logged no UDP receiver"
    );
    let receiver = daemon.log().lines().find(|l| l.contains(RECEIVER_LOG)).unwrap_or_default().to_owned();
    eprintln!("gateway: {}", receiver.split_once(RECEIVER_LOG).map_or(receiver.as_str(), |(_, r)| r).trim());
    let pid = daemon.pid();
    let idle_rss = rss_kib(pid)?;
    let (mut direct, mut relay, mut socks) = (Vec::new(), Vec::new(), Vec::new());
    let (mut udp_direct, mut udp_relay) = (Vec::new(), Vec::new());
    let (mut reply_direct, mut reply_relay) = (Vec::new(), Vec::new());
    let mut daemon_us = Vec::new();
    for _ in 0..ROUNDS {
        direct.push(run(&lan.client, server, DIRECT_PORT, &[])?);
        relay.push(run(&lan.client, server, RELAY_PORT, &[])?);
        socks.push(run(&lan.client, server, SOCKS_PORT, &[])?);
        udp_direct.push(udp_run(&topo, "udp direct", DIRECT_PORT, UDP_ARGS)?);
        udp_relay.push(udp_run(&topo, "udp relayed", RELAY_PORT, UDP_ARGS)?);
        reply_direct.push(udp_run(&topo, "udp reply direct", DIRECT_PORT, UDP_REPLY_ARGS)?);
        reply_relay.push(udp_run(&topo, "udp reply relayed", RELAY_PORT, UDP_REPLY_ARGS)?);
        let last = |runs: &[(f64, f64)]| runs.last().map_or(0.0, |r| r.0);
        eprintln!(
            "gateway: round {}: Gb/s relayed / direct: tcp {:.2} / {:.2}, udp {:.2} / {:.2} ({:.2}x), udp reply {:.2} / {:.2} ({:.2}x)",
            direct.len(),
            last(&relay),
            last(&direct),
            last(&udp_relay),
            last(&udp_direct),
            last(&udp_relay) / last(&udp_direct),
            last(&reply_relay),
            last(&reply_direct),
            last(&reply_relay) / last(&reply_direct)
        );
        let before = process_cpu(pid);
        let fixed = run(&lan.client, server, RELAY_PORT, UDP_REPLY_FIXED_ARGS)?;
        let datagrams = fixed.0 * 1e9 / 8.0 / GSO_DATAGRAM as f64 * f64::from(SECONDS);
        daemon_us.push(process_cpu(pid).saturating_sub(before).as_secs_f64() * 1e6 / datagrams.max(1.0));
    }
    eprintln!(
        "gateway: reply direction at 400 Mbit/s: the daemon's process CPU per relayed datagram {:.2} us (rounds: {})",
        median(&mut daemon_us.clone()),
        daemon_us.iter().map(|us| format!("{us:.2}")).collect::<Vec<_>>().join(", ")
    );
    let wire_mbit = (med(&direct, |r| r.0) * 1000.0 * WIRE_SHARE) as u64;
    let (wire_direct, wire_relay) = wire_limited_tcp_runs(&topo, server, wire_mbit)?;
    let stats = daemon.stats()?;
    eprintln!(
        "gateway: udp_recv_ring_empty {} udp_dropped {} udp_replied {} udp_reply_reads {} udp_gso_sends {}",
        stats["udp_recv_ring_empty"],
        stats["udp_dropped"],
        stats["udp_replied"],
        stats["udp_reply_reads"],
        stats["udp_gso_sends"]
    );
    let steered = stats["steered"].as_u64().unwrap_or(0);
    anyhow::ensure!(steered >= 2 * ROUNDS as u64, "relayed runs were not steered ({steered})");
    let loaded_rss = rss_kib(pid)?;
    daemon.stop()?;
    let (copy, splice, mode_direct) = relay_mode_runs(dae, &topo, &config, server)?;
    // A veth has GRO off by default; a physical NIC has it on. Only the lab's own veth is changed.
    let gro = topo.gateway.output("ethtool", &["-K", &topo.wan_if, "gro", "on"])?;
    anyhow::ensure!(gro.status.success(), "ethtool -K {} gro on: {gro:?}", topo.wan_if);
    let (mut gro_on, mut gro_off) = (Vec::new(), Vec::new());
    let (mut gso_gro_on, mut gso_gro_off) = (Vec::new(), Vec::new());
    // The same for forwarded UDP on the LAN side: merged only with rx-udp-gro-forwarding (off by default).
    // `dae run --udp-gro on` turns it on itself; set here so the `--udp-gro off` daemon and the direct path see
    // the same device (a daemon finding it on changes and restores nothing).
    let args = ["-K", lan.gateway_if.as_str(), "gro", "on", "rx-udp-gro-forwarding", "on"];
    let lan_gro = topo.gateway.output("ethtool", &args)?;
    anyhow::ensure!(lan_gro.status.success(), "ethtool -K {} rx-udp-gro-forwarding on: {lan_gro:?}", lan.gateway_if);
    let (mut fwd_gro_on, mut fwd_gro_off, mut fwd_direct) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for (gro, runs, gso_runs) in [("on", &mut gro_on, &mut gso_gro_on), ("off", &mut gro_off, &mut gso_gro_off)] {
            let mut daemon = Daemon::start(dae, &topo.gateway, &config, &["--udp-gro", gro])?;
            anyhow::ensure!(
                daemon.wait_for_log(RECEIVER_LOG, std::time::Duration::from_secs(2)),
                "the daemon logged no UDP receiver"
            );
            runs.push(run(&lan.client, server, RELAY_PORT, UDP_REPLY_ARGS)?);
            gso_runs.push(gso_reply_run(&topo, GSO_PORT)?);
            let forward = gso_forward_run(&topo, GSO_PORT)?;
            if gro == "on" {
                fwd_gro_on.push(forward);
                fwd_direct.push(gso_forward_run(&topo, GSO_DIRECT_PORT)?);
            } else {
                fwd_gro_off.push(forward);
            }
            let stats = daemon.stats()?;
            eprintln!(
                "gateway: udp-gro {gro}: client GSO sender relayed {:.2} Gb/s{}, udp_steer_gro_receives {}",
                forward.0,
                if gro == "on" {
                    format!(" (direct {:.2})", fwd_direct.last().map_or(0.0, |r| r.0))
                } else {
                    String::new()
                },
                stats["udp_steer_gro_receives"]
            );
            eprintln!(
                "gateway: udp-gro {gro}: iperf3 {:.2} Gb/s, GSO sender {:.2} Gb/s, udp_gro_receives {} udp_gso_sends {} udp_replied {} udp_dropped {}",
                runs.last().map_or(0.0, |r| r.0),
                gso_runs.last().map_or(0.0, |r| r.0),
                stats["udp_gro_receives"],
                stats["udp_gso_sends"],
                stats["udp_replied"],
                stats["udp_dropped"]
            );
            daemon.stop()?;
        }
    }
    let (coalesced_on, coalesced_off) = coalesced_lan_runs(dae, &topo, &config)?;
    let figure = |name: &str, value: f64, unit: &'static str, baseline: f64| Figure {
        name: name.into(),
        value,
        unit,
        baseline,
        ratio: value / baseline,
    };
    // `NAME_gbps` and `NAME_cores_per_gbps` of `runs` against the same figures of `baseline`.
    let pair = |name: &str, runs: &[(f64, f64)], baseline: &[(f64, f64)]| {
        [
            figure(&format!("{name}_gbps"), med(runs, |r| r.0), "Gb/s", med(baseline, |r| r.0)),
            figure(&format!("{name}_cores_per_gbps"), med(runs, |r| r.1), "core", med(baseline, |r| r.1)),
        ]
    };
    let mut figures = Vec::new();
    figures.extend(pair("gateway_tcp_relay", &relay, &direct));
    figures.extend(pair("gateway_tcp_socks5", &socks, &direct));
    figures.extend(pair("gateway_tcp_relay_wire", &wire_relay, &wire_direct));
    figures.extend(pair("gateway_tcp_relay_copy_vs_splice", &copy, &splice));
    figures.extend(pair("gateway_tcp_relay_splice", &splice, &mode_direct));
    figures.extend(pair("gateway_udp_relay", &udp_relay, &udp_direct));
    figures.extend(pair("gateway_udp_reply_relay", &reply_relay, &reply_direct));
    figures.extend(pair("gateway_udp_reply_gro", &gro_on, &gro_off));
    figures.extend(pair("gateway_udp_gso_reply_gro", &gso_gro_on, &gso_gro_off));
    figures.extend(pair("gateway_udp_gso_relay_gro", &fwd_gro_on, &fwd_gro_off));
    figures.extend(pair("gateway_udp_gso_relay", &fwd_gro_on, &fwd_direct));
    figures.extend(pair("gateway_udp_coalesced_lan_gro", &coalesced_on, &coalesced_off));
    figures.push(figure("dae_rss_after_load_mib", loaded_rss / 1024.0, "MiB", idle_rss / 1024.0));
    Ok(figures)
}
