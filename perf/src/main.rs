//! `cargo run --release -p perf -- [--json] [--only kernel|ifname|routing|rules|sniff|gateway|udp|runtime]`:
//! dae-rs benchmarks. `gateway` needs root and `target/release/dae` (`cargo build --release -p datapath --bin dae`);
//! `udp` and `runtime` need root (`SO_RCVBUFFORCE`); `runtime` needs two cores.
//!
//! Every figure is printed with the baseline measured in the same run and their ratio (STYLE.md, "Benchmarks").
//! Kernel benchmarks (BPF_PROG_TEST_RUN) need root and say so when not.

mod gateway;
mod ifname;
mod kernel;
mod report;
mod routing;
mod rules;
mod runtime;
mod sniff;
mod udp_recv;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "dae-rs benchmarks: figures with same-run baselines")]
struct Args {
    /// One JSON object per line: name, value, unit, baseline, ratio.
    #[arg(long)]
    json: bool,
    /// Run only one group.
    #[arg(long, value_parser = ["kernel", "ifname", "routing", "rules", "sniff", "gateway", "udp", "runtime"])]
    only: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let want = |group: &str| args.only.as_deref().is_none_or(|o| o == group);
    if want("kernel") {
        if bench_lab::is_root() {
            for figure in kernel::bench()? {
                figure.print(args.json);
            }
        } else {
            eprintln!("perf: skipping kernel benchmarks: BPF_PROG_TEST_RUN needs root");
        }
    }
    if want("routing") {
        if bench_lab::is_root() {
            for figure in routing::bench()? {
                figure.print(args.json);
            }
        } else {
            eprintln!("perf: skipping routing benchmarks: BPF_PROG_TEST_RUN needs root");
        }
    }
    if want("ifname") {
        for figure in ifname::bench() {
            figure.print(args.json);
        }
    }
    if want("rules") {
        for figure in rules::bench() {
            figure.print(args.json);
        }
    }
    // Through the gateway with iperf3: only when asked (tens of seconds, and both cores).
    if args.only.as_deref() == Some("gateway") {
        for figure in gateway::bench()? {
            figure.print(args.json);
        }
    }
    // UDP receive paths on one pinned core: only when asked (millions of datagrams queued, tens of seconds).
    if args.only.as_deref() == Some("udp") {
        for figure in udp_recv::bench()? {
            figure.print(args.json);
        }
    }
    // compio against the hand-written loops (UDP drains, TCP relays): only when asked (about a minute, both cores).
    if args.only.as_deref() == Some("runtime") {
        for figure in runtime::bench()? {
            figure.print(args.json);
        }
    }
    if want("sniff") {
        for figure in sniff::bench() {
            figure.print(args.json);
        }
    }
    Ok(())
}
