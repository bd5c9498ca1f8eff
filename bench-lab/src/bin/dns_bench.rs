//! `dns_bench`: the DNS forwarder against dnsdist 1.7 (packet cache), unbound 1.17 (one thread) and dnsmasq,
//! all forwarding to the same nsd, in one run, on loopback. JSON lines on stdout: `name`, `value`, `unit`,
//! `baseline`, `ratio` (value / baseline's value; dnsdist is the baseline unless the name says otherwise) and
//! `samples`; `value` is the median over `--rounds` rounds, the forwarders taking turns in each round.
//!
//! Placement (2 cores): the forwarder under test alone on CPU 1 (`taskset`); nsd, dnsperf and the slow upstream
//! on CPU 0. A forwarder's CPU is its process time (`/proc/PID/stat`) plus CPU 1's irq and softirq time
//! (`/proc/stat`): the loopback transmit of its answers runs there.
//!
//! Figures (issue 5):
//! - (a) CPU microseconds per query at a fixed offered rate: cached at 50k qps, uncached (no name repeats) at 10k;
//! - (b) saturated qps and qps per forwarder core, with the client's CPU to say when dnsperf was the limit;
//! - (c) p50/p99 latency of the fixed-rate runs (dnsperf -v);
//! - (d) upstream sockets in use with ~10,000 queries in flight (a slow upstream answers after 500 ms);
//! - (e) miss qps before and after the cache fills to its bound (50,000 entries).
//!
//! ```text
//! dns_bench --dae-dns target/release/dae-dns [--seconds 8] [--rounds 3] [--only dae-dns,dnsdist]
//!           [--variant LABEL=PATH[,ARG...]]... [--fixed-only]
//! ```
//!
//! `--variant` adds another dae-dns build or flag set (e.g. `--variant coalesce=target/release/dae-dns,--coalesce-us,200`)
//! as forwarder LABEL, run right after dae-dns in every round; its figures' baseline is `dae-dns/...` (same run,
//! alternated), not dnsdist. `--fixed-only` runs only the fixed-rate figures (a) and (c).

use bench_lab::daemon::process_cpu;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const NSD_PORT: u16 = 5300;
const SLOW_PORT: u16 = 5350;
const SLOW_DELAY: Duration = Duration::from_millis(500);
const CACHE_BOUND: usize = 50_000;
/// dnsperf flags of one pass over a list of names, 2,000 in flight.
const ONE_PASS: &[&str] = &["-n", "1", "-q", "2000"];
const CACHED_NAMES: usize = 100;
const CLIENT_CPU: &str = "0";
const FORWARDER_CPU: usize = 1;
const READY_TIMEOUT: Duration = Duration::from_secs(15);

struct Args {
    dae_dns: PathBuf,
    seconds: u64,
    rounds: usize,
    only: Vec<String>,
    /// (label, binary, extra arguments): more dae-dns builds or flag sets, measured against `dae-dns`.
    variants: Vec<(String, PathBuf, Vec<String>)>,
    fixed_only: bool,
}

fn parse_args() -> Option<Args> {
    let mut args = std::env::args().skip(1);
    let mut out = Args {
        dae_dns: PathBuf::from("target/release/dae-dns"),
        seconds: 8,
        rounds: 1,
        only: Vec::new(),
        variants: Vec::new(),
        fixed_only: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dae-dns" => out.dae_dns = PathBuf::from(args.next()?),
            "--seconds" => out.seconds = args.next()?.parse().ok()?,
            "--rounds" => out.rounds = args.next()?.parse().ok()?,
            "--only" => out.only = args.next()?.split(',').map(str::to_owned).collect(),
            "--variant" => {
                let spec = args.next()?;
                let (label, rest) = spec.split_once('=')?;
                let mut parts = rest.split(',');
                let path = PathBuf::from(parts.next()?);
                out.variants.push((label.to_owned(), path, parts.map(str::to_owned).collect()));
            }
            "--fixed-only" => out.fixed_only = true,
            _ => return None,
        }
    }
    Some(out)
}

/// A scratch folder removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("daers-dnsbench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pinned(cpu: &str, program: &str) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpu, program]);
    cmd
}

/// CPU time of `pid` and every process descended from it (nsd forks its server process).
fn tree_cpu(pid: u32) -> Duration {
    let mut total = process_cpu(pid);
    let Ok(dir) = std::fs::read_dir("/proc") else { return total };
    for entry in dir.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if parent == Some(pid) {
            total += tree_cpu(child);
        }
    }
    total
}

/// irq + softirq time of `cpu` (from /proc/stat).
fn cpu_irq(cpu: usize) -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let label = format!("cpu{cpu} ");
    let line = stat.lines().find(|l| l.starts_with(&label)).unwrap_or("");
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    bench_lab::daemon::ticks_to_duration(fields.get(5).copied().unwrap_or(0) + fields.get(6).copied().unwrap_or(0))
}

fn socket_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
                .count()
        })
        .unwrap_or(0)
}

/// What one dnsperf run reported.
#[derive(Debug, Default, Clone)]
struct Perf {
    completed: u64,
    lost: u64,
    qps: f64,
    latencies: Vec<f64>,
    client_cpu: Duration,
    /// dnsperf's own "Run time".
    elapsed: Duration,
    /// From spawn to exit (data file reading and the final timeout wait included).
    wall: Duration,
}

fn dnsperf(port: u16, data: &Path, extra: &[&str], verbose: bool) -> Perf {
    let mut cmd = pinned(CLIENT_CPU, "dnsperf");
    cmd.args(["-s", "127.0.0.1", "-p", &port.to_string(), "-d", &data.display().to_string(), "-c", "4", "-b", "4096"]);
    cmd.args(extra);
    if verbose {
        cmd.arg("-v");
    }
    let start = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("dnsperf");
    let pid = child.id();
    let mut perf = Perf::default();
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    for line in stdout.lines().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("> ") {
            if let Some(latency) = rest.rsplit(' ').next().and_then(|l| l.parse::<f64>().ok()) {
                perf.latencies.push(latency);
            }
            continue;
        }
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Queries completed:") {
            perf.completed = rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Queries lost:") {
            perf.lost = rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Queries per second:") {
            perf.qps = rest.trim().parse().unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("Run time (s):") {
            perf.elapsed = Duration::from_secs_f64(rest.trim().parse().unwrap_or(0.0));
        }
    }
    // Stdout closed: dnsperf has exited and, not yet reaped, still shows its final CPU times.
    let cpu_seen = process_cpu(pid);
    let _ = child.wait();
    perf.wall = start.elapsed();
    perf.client_cpu = cpu_seen;
    if perf.elapsed.is_zero() {
        perf.elapsed = start.elapsed();
    }
    perf
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The slow upstream for (d): answers every query after SLOW_DELAY with one A record (FIFO: the delay is
/// constant).
fn slow_upstream(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let socket = UdpSocket::bind(("127.0.0.1", SLOW_PORT)).expect("slow upstream port");
        socket.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let mut queue: VecDeque<(Instant, Vec<u8>, SocketAddr)> = VecDeque::new();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            while queue.front().is_some_and(|(due, _, _)| *due <= now) {
                let (_, reply, to) = queue.pop_front().expect("front");
                let _ = socket.send_to(&reply, to);
            }
            let Ok((len, from)) = socket.recv_from(&mut buf) else { continue };
            if len < 12 {
                continue;
            }
            let Some(question_end) = question_end(&buf[..len]) else { continue };
            let mut reply = buf[..question_end].to_vec();
            reply[2] = 0x84 | (buf[2] & 0x01);
            reply[3] = 0x00;
            reply[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
            reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 9, 9, 9]);
            queue.push_back((now + SLOW_DELAY, reply, from));
        }
    })
}

fn question_end(message: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let len = usize::from(*message.get(at)?);
        at += 1;
        if len == 0 {
            return (at + 4 <= message.len()).then_some(at + 4);
        }
        if len & 0xc0 != 0 {
            return None;
        }
        at += len;
    }
}

struct Forwarder {
    proc: Option<Proc>,
}

impl Forwarder {
    fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, |p| p.0.id())
    }

    /// (process and children, irq + softirq of the forwarder's CPU).
    fn cpu(&self) -> (Duration, Duration) {
        (tree_cpu(self.pid()), cpu_irq(FORWARDER_CPU))
    }
}

fn wait_ready(port: u16, probe: &str) -> bool {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        let out = Command::new("kdig")
            .args(["@127.0.0.1", "-p", &port.to_string(), probe, "A", "+timeout=1", "+retry=0"])
            .output();
        if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("NOERROR")) {
            return true;
        }
    }
    false
}

/// What to start: a peer by name, or a dae-dns binary with extra arguments.
#[derive(Clone, Copy)]
enum Kind<'a> {
    Peer(&'a str),
    DaeDns(&'a Path, &'a [String]),
}

fn start(name: &str, kind: Kind<'_>, port: u16, scratch: &Scratch) -> Option<Forwarder> {
    let cpu = FORWARDER_CPU.to_string();
    let upstream = format!("127.0.0.1:{NSD_PORT}");
    let slow = format!("127.0.0.1:{SLOW_PORT}");
    let peer = match kind {
        Kind::Peer(peer) => peer,
        Kind::DaeDns(..) => "dae-dns",
    };
    let mut cmd = match peer {
        "nsd" => {
            let conf = nsd_conf(scratch, port, "nsd-fwd");
            let mut cmd = pinned(&cpu, "nsd");
            cmd.args(["-d", "-c", &conf.display().to_string()]);
            cmd
        }
        "dae-dns" => {
            let Kind::DaeDns(dae_dns, extra) = kind else { return None };
            let conf = scratch.write(
                &format!("{name}.dae"),
                &format!(
                    "global {{}}\ndns {{\n bind: 'udp://127.0.0.1:{port}'\n max_cache_size: {CACHE_BOUND}\n \
                     upstream {{ nsd: 'udp://{upstream}'\n slow: 'udp://{slow}' }}\n \
                     routing {{ request {{ qname(suffix: slow.test) -> slow\n fallback: nsd }} }}\n}}\n"
                ),
            );
            let mut cmd = pinned(&cpu, &dae_dns.display().to_string());
            cmd.args(["-c", &conf.display().to_string(), "--workers", "1"]);
            cmd.args(extra);
            cmd
        }
        "dnsdist" => {
            let conf = scratch.write(
                "dnsdist.conf",
                &format!(
                    "setSecurityPollSuffix('')\nsetLocal('127.0.0.1:{port}')\nsetACL({{'127.0.0.0/8'}})\n\
                     newServer({{address='{upstream}', pool=''}})\nnewServer({{address='{slow}', pool='slow'}})\n\
                     addAction('slow.test.', PoolAction('slow'))\n\
                     pc = newPacketCache({CACHE_BOUND})\ngetPool(''):setCache(pc)\n"
                ),
            );
            let mut cmd = pinned(&cpu, "dnsdist");
            cmd.args(["--supervised", "--disable-syslog", "-C", &conf.display().to_string()]);
            cmd
        }
        "unbound" => {
            let dir = scratch.0.display().to_string();
            let conf = scratch.write(
                "unbound.conf",
                &format!(
                    "server:\n  interface: 127.0.0.1@{port}\n  port: {port}\n  num-threads: 1\n  do-daemonize: no\n  \
                     username: \"\"\n  chroot: \"\"\n  directory: \"{dir}\"\n  pidfile: \"{dir}/unbound.pid\"\n  \
                     use-syslog: no\n  logfile: \"\"\n  access-control: 127.0.0.0/8 allow\n  do-not-query-localhost: no\n  \
                     module-config: \"iterator\"\n  local-zone: \"test.\" nodefault\n  msg-cache-size: 16m\n  rrset-cache-size: 32m\n  \
                     outgoing-range: 8192\n  num-queries-per-thread: 4096\n\
                     forward-zone:\n  name: \"slow.test\"\n  forward-addr: {slow_at}\n\
                     forward-zone:\n  name: \".\"\n  forward-addr: {up_at}\n",
                    slow_at = slow.replace(':', "@"),
                    up_at = upstream.replace(':', "@"),
                ),
            );
            let mut cmd = pinned(&cpu, "unbound");
            cmd.args(["-d", "-c", &conf.display().to_string()]);
            cmd
        }
        "dnsmasq" => {
            let mut cmd = pinned(&cpu, "dnsmasq");
            cmd.args([
                "-d",
                "-k",
                "-C",
                "/dev/null",
                "-p",
                &port.to_string(),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                &format!("--server=127.0.0.1#{NSD_PORT}"),
                &format!("--server=/slow.test/127.0.0.1#{SLOW_PORT}"),
                &format!("--cache-size={CACHE_BOUND}"),
                "--dns-forward-max=10000",
                "--user=root",
            ]);
            cmd
        }
        _ => return None,
    };
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok()?;
    let forwarder = Forwarder { proc: Some(Proc(child)) };
    if !wait_ready(port, "c0.bench.test") {
        eprintln!("dns_bench: {name} did not answer on port {port}; skipped");
        return None;
    }
    Some(forwarder)
}

fn nsd_conf(scratch: &Scratch, port: u16, tag: &str) -> PathBuf {
    let dir = scratch.0.display().to_string();
    scratch.write(
        &format!("{tag}.conf"),
        &format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  server-count: 1\n  username: \"\"\n  zonesdir: \"{dir}\"\n  \
             database: \"\"\n  pidfile: \"{dir}/{tag}.pid\"\n  xfrdfile: \"{dir}/{tag}.xfrd\"\n  zonelistfile: \"{dir}/{tag}.zl\"\n  \
             rrl-ratelimit: 0\n  verbosity: 0\n  send-buffer-size: 8388608\n  receive-buffer-size: 8388608\n\
             remote-control:\n  control-enable: no\nzone:\n  name: bench.test\n  zonefile: bench.zone\n"
        ),
    )
}

/// Every sample of every figure; printed as medians.
struct Report {
    lines: Vec<(String, Vec<f64>, &'static str)>,
    /// Labels of `--variant` forwarders (their baseline is dae-dns).
    variants: Vec<String>,
}

impl Report {
    fn add(&mut self, name: String, value: f64, unit: &'static str) {
        match self.lines.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, samples, _)) => samples.push(value),
            None => self.lines.push((name, vec![value], unit)),
        }
    }

    fn value(&self, name: &str) -> Option<f64> {
        self.lines.iter().find(|(n, _, _)| n == name).map(|(_, v, _)| median(v))
    }

    fn print(&self) {
        for (name, samples, unit) in &self.lines {
            let value = &median(samples);
            let (forwarder, metric) = name.split_once('/').unwrap_or(("", name));
            let against = if self.variants.iter().any(|v| v == forwarder) { "dae-dns" } else { "dnsdist" };
            let baseline = format!("{against}/{metric}");
            let base = self.value(&baseline);
            let ratio = base.filter(|b| *b != 0.0 && forwarder != against).map(|b| value / b);
            let mut line = format!("{{\"name\":\"{name}\",\"value\":{},\"unit\":\"{unit}\"", json_number(*value));
            match ratio {
                Some(ratio) => {
                    let _ = write!(line, ",\"baseline\":\"{baseline}\",\"ratio\":{}", json_number(ratio));
                }
                None => line.push_str(",\"baseline\":null,\"ratio\":null"),
            }
            let list: Vec<String> = samples.iter().map(|v| json_number(*v)).collect();
            let _ = write!(line, ",\"samples\":[{}]", list.join(","));
            line.push('}');
            println!("{line}");
        }
        if let (Some(ours), Some(unbound)) =
            (self.value("dae-dns/cached_cpu_us_per_query_at_50k"), self.value("unbound/cached_cpu_us_per_query_at_50k"))
        {
            println!(
                "{{\"name\":\"dae-dns/cached_cpu_us_per_query_at_50k_vs_unbound\",\"value\":{},\"unit\":\"us\",\"baseline\":\"unbound/cached_cpu_us_per_query_at_50k\",\"ratio\":{}}}",
                json_number(ours),
                json_number(ours / unbound)
            );
        }
    }
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn json_number(value: f64) -> String {
    if value.is_finite() { format!("{value:.3}") } else { "null".to_owned() }
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        eprintln!(
            "usage: dns_bench [--dae-dns PATH] [--seconds N] [--rounds N] [--only nsd,dae-dns,dnsdist,unbound,dnsmasq]"
        );
        return ExitCode::from(2);
    };
    if !bench_lab::is_root() {
        eprintln!("dns_bench: run as root (forwarders bind ports, dnsmasq drops privileges)");
        return ExitCode::from(2);
    }
    let scratch = Scratch::new();
    let seconds = args.seconds.to_string();
    // Zone: 100 cached names, a wildcard for names never asked twice.
    let mut zone = String::from(
        "$ORIGIN bench.test.\n$TTL 3600\n@ IN SOA ns admin 1 3600 600 86400 300\n@ IN NS ns\nns IN A 127.0.0.1\n*.u IN A 10.8.8.8\n",
    );
    for i in 0..CACHED_NAMES {
        let _ = writeln!(zone, "c{i} IN A 10.7.{}.{}", i / 250, i % 250 + 1);
    }
    scratch.write("bench.zone", &zone);
    let cached: String = (0..CACHED_NAMES).map(|i| format!("c{i}.bench.test A\n")).collect();
    let cached = scratch.write("cached.txt", &cached);
    let unique = |tag: &str, count: usize| {
        let text: String = (0..count).map(|i| format!("{tag}{i}.u.bench.test A\n")).collect();
        scratch.write(&format!("{tag}.txt"), &text)
    };
    let nsd_conf = nsd_conf(&scratch, NSD_PORT, "nsd-up");
    let mut nsd_cmd = pinned(CLIENT_CPU, "nsd");
    nsd_cmd.args(["-d", "-c", &nsd_conf.display().to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
    let _nsd = Proc(nsd_cmd.spawn().expect("nsd"));
    if !wait_ready(NSD_PORT, "c0.bench.test") {
        eprintln!("dns_bench: nsd did not start");
        return ExitCode::FAILURE;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let slow = slow_upstream(stop.clone());
    let variants: Vec<String> = args.variants.iter().map(|(label, _, _)| label.clone()).collect();
    let mut report = Report { lines: Vec::new(), variants: variants.clone() };
    let mut all: Vec<(&str, Kind<'_>)> =
        vec![("nsd", Kind::Peer("nsd")), ("dae-dns", Kind::DaeDns(&args.dae_dns, &[]))];
    all.extend(args.variants.iter().map(|(label, path, extra)| (label.as_str(), Kind::DaeDns(path, extra))));
    all.extend(["dnsdist", "unbound", "dnsmasq"].map(|peer| (peer, Kind::Peer(peer))));
    for round in 0..args.rounds {
        for (index, (name, kind)) in all.iter().enumerate() {
            let tag = index + 100 * round;
            let selected =
                args.only.is_empty() || args.only.iter().any(|o| o == name) || variants.iter().any(|v| v == name);
            if !selected {
                continue;
            }
            let port = 5310 + index as u16;
            let Some(forwarder) = start(name, *kind, port, &scratch) else { continue };
            eprintln!("dns_bench: {name}");
            // Warm the cache with the cached set.
            dnsperf(port, &cached, &["-n", "3"], false);
            // (a) + (c) cached at 50k qps.
            let before = forwarder.cpu();
            let perf = dnsperf(port, &cached, &["-Q", "50000", "-l", &seconds, "-q", "500"], true);
            record_fixed(&mut report, name, "cached", "50k", &perf, before, forwarder.cpu());
            // (a) + (c) uncached at 10k qps.
            let data = unique(&format!("f{tag}x"), 10_000 * args.seconds as usize + 1000);
            let before = forwarder.cpu();
            let perf = dnsperf(port, &data, &["-Q", "10000", "-l", &seconds, "-n", "1", "-q", "500"], true);
            record_fixed(&mut report, name, "uncached", "10k", &perf, before, forwarder.cpu());
            if args.fixed_only {
                continue;
            }
            // (b) saturated, uncached and cached.
            for (kind, data, extra) in [
                ("uncached", unique(&format!("f{tag}s"), 400_000), vec!["-n", "1"]),
                ("cached", cached.clone(), vec![]),
            ] {
                let before = forwarder.cpu();
                let mut flags = vec!["-l", seconds.as_str(), "-q", "2000"];
                flags.extend(extra);
                let perf = dnsperf(port, &data, &flags, false);
                let after = forwarder.cpu();
                let cpu = (after.0 + after.1).saturating_sub(before.0 + before.1);
                let elapsed = perf.elapsed.as_secs_f64().max(0.001);
                let cores = cpu.as_secs_f64() / elapsed;
                report.add(format!("{name}/{kind}_saturated_qps"), perf.qps, "qps");
                report.add(format!("{name}/{kind}_saturated_qps_per_core"), perf.qps / cores.max(0.001), "qps/core");
                report.add(format!("{name}/{kind}_saturated_forwarder_cores"), cores, "cores");
                report.add(
                    format!("{name}/{kind}_saturated_client_cores"),
                    perf.client_cpu.as_secs_f64() / elapsed,
                    "cores",
                );
                report.add(format!("{name}/{kind}_saturated_lost"), perf.lost as f64, "queries");
            }
            if *name == "nsd" {
                // nsd is the upstream: (d) and (e) are about forwarders.
                continue;
            }
            // (d) sockets with ~10,000 queries in flight: 20k qps into a 500 ms upstream.
            let idle_sockets = socket_fds(forwarder.pid());
            let slow_names: String = (0..60_000).map(|i| format!("s{tag}x{i}.slow.test A\n")).collect();
            let slow_data = scratch.write(&format!("slow{tag}.txt"), &slow_names);
            let pid = forwarder.pid();
            let sampler = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1500));
                socket_fds(pid)
            });
            let perf =
                dnsperf(port, &slow_data, &["-Q", "20000", "-q", "12000", "-l", "3", "-n", "1", "-t", "5"], false);
            let busy_sockets = sampler.join().unwrap_or(0);
            report.add(
                format!("{name}/sockets_at_10k_in_flight"),
                busy_sockets.saturating_sub(idle_sockets) as f64,
                "sockets",
            );
            report.add(format!("{name}/slow_upstream_completed"), perf.completed as f64, "queries");
            // (e) miss qps while the cache fills, then once it is full and evicting, on a fresh process: the runs
            // above filled its cache long ago. Both are one pass over CACHE_BOUND new names, so both have the same
            // start and drain; a pass of the same shape straight to nsd first warms nsd and the client, so the
            // filling pass is not also the first one they serve.
            drop(forwarder);
            let Some(forwarder) = start(name, *kind, port, &scratch) else { continue };
            let warm = unique(&format!("f{tag}w"), CACHE_BOUND);
            let _ = dnsperf(NSD_PORT, &warm, ONE_PASS, false);
            let fill = unique(&format!("f{tag}c"), CACHE_BOUND);
            let filling = dnsperf(port, &fill, ONE_PASS, false);
            let next = unique(&format!("f{tag}d"), CACHE_BOUND);
            let full = dnsperf(port, &next, ONE_PASS, false);
            let beyond = unique(&format!("f{tag}e"), 400_000);
            let sustained = dnsperf(port, &beyond, &["-l", &seconds, "-n", "1", "-q", "2000"], false);
            report.add(format!("{name}/miss_qps_cache_filling"), filling.qps, "qps");
            report.add(format!("{name}/miss_qps_cache_full"), full.qps, "qps");
            report.add(format!("{name}/cache_full_over_filling"), full.qps / filling.qps.max(1.0), "ratio");
            report.add(format!("{name}/miss_qps_cache_full_sustained"), sustained.qps, "qps");
            let lost = filling.lost + full.lost + sustained.lost;
            report.add(format!("{name}/miss_lost_filling_and_full"), lost as f64, "queries");
            drop(forwarder);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = slow.join();
    report.print();
    ExitCode::SUCCESS
}

fn record_fixed(
    report: &mut Report,
    name: &str,
    kind: &str,
    rate: &str,
    perf: &Perf,
    before: (Duration, Duration),
    after: (Duration, Duration),
) {
    let completed = perf.completed.max(1) as f64;
    let process = after.0.saturating_sub(before.0).as_secs_f64();
    let irq = after.1.saturating_sub(before.1).as_secs_f64();
    report.add(format!("{name}/{kind}_cpu_us_per_query_at_{rate}"), (process + irq) * 1e6 / completed, "us");
    // The process part alone: immune to other work's softirq on the forwarder's CPU (a shared machine).
    report.add(format!("{name}/{kind}_process_cpu_us_per_query_at_{rate}"), process * 1e6 / completed, "us");
    let mut sorted = perf.latencies.clone();
    sorted.sort_by(f64::total_cmp);
    report.add(format!("{name}/{kind}_p50_latency_at_{rate}"), percentile(&sorted, 0.50) * 1e6, "us");
    report.add(format!("{name}/{kind}_p99_latency_at_{rate}"), percentile(&sorted, 0.99) * 1e6, "us");
    report.add(format!("{name}/{kind}_achieved_qps_at_{rate}"), perf.qps, "qps");
    report.add(format!("{name}/{kind}_lost_at_{rate}"), perf.lost as f64, "queries");
}
