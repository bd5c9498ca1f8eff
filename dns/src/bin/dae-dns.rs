//! `dae-dns -c FILE`: the DNS forwarder alone, for tests and benchmarks (the lead folds it into `dae run`).
//!
//! Listens on every `dns.bind` of the configuration (and `--listen ADDR`, UDP and TCP), runs until SIGINT or
//! SIGTERM, prints a JSON line of counters on SIGUSR1 and at exit (to stdout).
//!
//! ```text
//! dae-dns -c config.dae [--workers N] [--cpus 0,1] [--listen 127.0.0.1:5353] [--coalesce-us 100]
//!         [--no-gso] [--tls-roots ca.pem]
//! ```
//!
//! `--coalesce-us` bounds interrupt moderation's pause (default 100; 0 turns it off); `--no-gso` sends every
//! datagram on its own (docs/dns.md, "Workers and sockets").

use std::path::PathBuf;
use std::process::ExitCode;

use dns::service::{Options, WorkerStats, sys};

fn usage() -> ExitCode {
    eprintln!(
        "usage: dae-dns -c FILE [--workers N] [--cpus LIST] [--listen IP:PORT]... [--coalesce-us N] [--no-gso] [--tls-roots PEM]..."
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut path: Option<PathBuf> = None;
    let mut workers: Option<usize> = None;
    let mut cpus = Vec::new();
    let mut listen = Vec::new();
    let mut coalesce = None;
    let mut gso = true;
    let mut tls_roots = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = || args.next();
        match arg.as_str() {
            "-c" | "--config" => path = value().map(PathBuf::from),
            "--workers" => workers = value().and_then(|v| v.parse().ok()),
            "--cpus" => {
                cpus = value().map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect()).unwrap_or_default()
            }
            "--listen" => match value().and_then(|v| v.parse().ok()) {
                Some(addr) => listen.push(config::dns::Bind { addr, udp: true, tcp: true }),
                None => return usage(),
            },
            "--tls-roots" => match value() {
                Some(path) => tls_roots.push(PathBuf::from(path)),
                None => return usage(),
            },
            "--coalesce-us" => match value().and_then(|v| v.parse().ok()) {
                Some(us) => coalesce = Some(std::time::Duration::from_micros(us)),
                None => return usage(),
            },
            "--no-gso" => gso = false,
            "-h" | "--help" => return usage(),
            _ => return usage(),
        }
    }
    let Some(path) = path else { return usage() };
    let loaded = match config::load(&path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    for warning in &loaded.warnings {
        eprintln!("{warning}");
    }
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let lowered = match config::dns::lower(&loaded.config, &config::rules::Assets::default_for(Some(folder))) {
        Ok(lowered) => lowered,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    if lowered.dns.bind.is_empty() && listen.is_empty() {
        eprintln!("dae-dns: nothing to listen on: set `dns {{ bind: '127.0.0.1:5353' }}` or pass --listen");
        return ExitCode::from(2);
    }
    let mut options = Options::for_config(&loaded.config);
    if let Some(workers) = workers {
        options.workers = workers;
    }
    options.cpus = cpus;
    if !tls_roots.is_empty() {
        options.tls_roots = tls_roots;
    }
    if let Some(coalesce) = coalesce {
        options.coalesce = coalesce;
    }
    options.gso = gso;
    options.extra_binds = listen;
    if let Err(error) = sys::block_signals() {
        eprintln!("dae-dns: cannot block signals: {error}");
        return ExitCode::FAILURE;
    }
    let handle = match dns::Service::start(lowered.dns, options, None) {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("dae-dns: {error}");
            return ExitCode::FAILURE;
        }
    };
    for (addr, proto) in handle.local_addrs() {
        eprintln!("dae-dns: listening on {proto} {addr}");
    }
    eprintln!("dae-dns: ready");
    loop {
        let signal = sys::wait_signal();
        // Workers publish their counters every STATS_EVERY: wait one period so the line covers everything
        // received before the signal.
        std::thread::sleep(dns::service::STATS_EVERY + std::time::Duration::from_millis(50));
        println!("{}", stats_json(&handle.worker_stats()));
        if signal != libc::SIGUSR1 {
            break;
        }
    }
    handle.stop();
    ExitCode::SUCCESS
}

fn stats_json(workers: &[WorkerStats]) -> String {
    let sum = |f: &dyn Fn(&WorkerStats) -> u64| workers.iter().map(f).sum::<u64>();
    let fields: Vec<(&str, u64)> = vec![
        ("queries", sum(&|w| w.core.queries)),
        ("cache_hits", sum(&|w| w.core.cache_hits)),
        ("stale_hits", sum(&|w| w.core.stale_hits)),
        ("flights", sum(&|w| w.core.flights)),
        ("joined", sum(&|w| w.core.joined)),
        ("servfail", sum(&|w| w.core.servfail)),
        ("refused_overload", sum(&|w| w.core.refused_overload)),
        ("refused_flight_limit", sum(&|w| w.core.refused_flight_limit)),
        ("upstream_sent", sum(&|w| w.core.upstream_sent)),
        ("udp_timeouts", sum(&|w| w.core.udp_timeouts)),
        ("late_datagrams", sum(&|w| w.core.late_datagrams)),
        ("unexpected_datagrams", sum(&|w| w.core.unexpected_datagrams)),
        ("mismatched_datagrams", sum(&|w| w.core.mismatched_datagrams)),
        ("sockets_retired", sum(&|w| w.core.sockets_retired)),
        ("tcp_opened", sum(&|w| w.core.tcp_opened)),
        ("tcp_broken", sum(&|w| w.core.tcp_broken)),
        ("tcp_bystanders", sum(&|w| w.core.tcp_bystanders)),
        ("in_flight", sum(&|w| w.core.in_flight)),
        ("upstream_pending", sum(&|w| w.core.upstream_pending)),
        ("flights_now", sum(&|w| w.core.flights_now)),
        ("tcp_fallbacks", sum(&|w| w.core.tcp_fallbacks)),
        ("malformed", sum(&|w| w.core.malformed)),
        ("udp_sockets", sum(&|w| w.core.udp_sockets)),
        ("tcp_conns", sum(&|w| w.core.tcp_conns)),
        ("cache_entries", sum(&|w| w.cache.entries as u64)),
        ("cache_bytes", sum(&|w| w.cache.bytes as u64)),
        ("cache_evicted", sum(&|w| w.cache.evicted)),
        ("datagrams_in", sum(&|w| w.datagrams_in)),
        ("answers_out", sum(&|w| w.answers_out)),
        ("answer_messages_out", sum(&|w| w.answer_messages_out)),
        ("upstream_messages_out", sum(&|w| w.upstream_messages_out)),
        ("wakeups", sum(&|w| w.wakeups)),
        ("answer_send_drops", sum(&|w| w.answer_send_drops)),
        ("upstream_send_drops", sum(&|w| w.upstream_send_drops)),
        ("cpu_us", sum(&|w| w.cpu.as_micros() as u64)),
    ];
    let body: Vec<String> = fields.iter().map(|(name, value)| format!("\"{name}\":{value}")).collect();
    format!("{{{}}}", body.join(","))
}
