//! `dae`: the dae-rs command line.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use datapath::{
    attach::{TcAttach, XdpAttach},
    clock::monotonic_coarse_ns,
    daemon::{self, RunOptions},
    features::LanGroForwarding,
    flows::{FlowRow, render_table},
    gateway::{
        pump::TcpRelay,
        udp::{UdpGro, UdpRecv},
    },
    links::LinkCache,
    maps::Maps,
    netlink,
    state::{self, DEFAULT_BPFFS, StatusFile},
};
use datapath_abi::flow::FLOW_TABLE_DEFAULT_ENTRIES;
use tracing_subscriber::EnvFilter;

/// dae-rs: a Linux gateway datapath (XDP + tc eBPF, io_uring userspace) that reads dae's configuration language.
#[derive(Debug, Parser)]
#[command(name = "dae", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load the datapath, attach to the configured interfaces and serve until SIGINT/SIGTERM.
    Run {
        /// The configuration file (dae's `.dae` language); without it, the embedded default configuration
        /// (`dae default-config` prints it).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        #[command(flatten)]
        instance: InstanceArgs,
        /// How tc programs are attached.
        #[arg(long, value_enum, default_value = "auto")]
        tc_attach: TcAttach,
        /// How XDP is attached.
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: XdpAttach,
        /// Flow table capacity in entries.
        #[arg(long, default_value_t = FLOW_TABLE_DEFAULT_ENTRIES)]
        flow_table_size: u32,
        /// How the UDP workers read their steering sockets: `auto` (io_uring multishot RecvMsg where the kernel
        /// has it, recvmmsg otherwise) or `recvmmsg`.
        #[arg(long, value_enum, default_value = "auto", env = "DAE_UDP_RECV")]
        udp_recv: UdpRecv,
        /// Whether UDP session sockets ask the kernel for merged receives (UDP_GRO): `on` (a remote's burst,
        /// merged by the receiving device, is read at once and sent back in one GSO send) or `off`.
        #[arg(long, value_enum, default_value = "on", env = "DAE_UDP_GRO")]
        udp_gro: UdpGro,
        /// Whether LAN interfaces get `rx-gro` and `rx-udp-gro-forwarding` turned on while attached (restored on
        /// detach and exit): `on` (a NIC's poll merges a client's train of datagrams, which the workers then read
        /// in one receive; only with `--udp-gro on`) or `off` (device features are left alone).
        #[arg(long, value_enum, default_value = "on", env = "DAE_LAN_GRO_FORWARDING")]
        lan_gro_forwarding: LanGroForwarding,
        /// How relayed TCP connections' bytes move: `copy` (read into a per-core buffer, write on; the faster
        /// here, docs/gateway.md) or `splice` (zero-copy through a pipe per direction).
        #[arg(long, value_enum, default_value = "copy", env = "DAE_TCP_RELAY")]
        tcp_relay: TcpRelay,
    },
    /// Check a configuration: print OK (and warnings) or every error, exit 0 or 1.
    Validate {
        /// The configuration file.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Print the embedded default configuration (what `dae run` without `-c` uses).
    DefaultConfig,
    /// Make a running daemon re-read its configuration (as SIGHUP does) and report whether the new rules took.
    Reload {
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Read a capture (pcap or pcapng) and print, per flow, what the sniffers see: protocol, SNI or Host, ALPN,
    /// QUIC version. Shows why a domain rule did or did not match.
    Sniff {
        /// The capture file.
        #[arg(long)]
        pcap: PathBuf,
    },
    /// Print the live flow tags of a running daemon.
    Flows {
        #[command(flatten)]
        instance: InstanceArgs,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the datapath counters of a running daemon.
    Stats {
        #[command(flatten)]
        instance: InstanceArgs,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct InstanceArgs {
    /// Instance name: several daemons may run side by side under different names.
    #[arg(long, default_value = "default")]
    instance: String,
    /// The bpffs mount the maps are pinned under.
    #[arg(long, default_value = DEFAULT_BPFFS)]
    bpffs: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dae: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match command {
        Command::Run {
            config,
            instance,
            tc_attach,
            xdp_mode,
            flow_table_size,
            udp_recv,
            udp_gro,
            lan_gro_forwarding,
            tcp_relay,
        } => {
            daemon::require_privileges()?;
            let validated = match &config {
                Some(path) => config::validate(path),
                None => {
                    tracing::info!(
                        "no -c given: running the embedded default configuration (`dae default-config` prints it)"
                    );
                    config::validate_str(daemon::DEFAULT_CONFIG_NAME, daemon::DEFAULT_CONFIG)
                }
            }
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            for warning in &validated.warnings {
                tracing::warn!("{warning}");
            }
            let opts = RunOptions {
                config_path: config,
                instance: instance.instance,
                bpffs: instance.bpffs,
                tc: tc_attach,
                xdp: xdp_mode,
                flow_table_entries: flow_table_size,
                udp_recv,
                udp_gro,
                lan_gro_forwarding,
                tcp_relay,
            };
            rt.block_on(daemon::run(validated, opts))
        }
        Command::Validate { config } => match config::validate(&config) {
            Ok(validated) if let Err(errors) = relay::outbound::Outbounds::from_config(&validated.config) => {
                println!("{}", daemon::render_errors(&validated.config, &errors));
                std::process::exit(1);
            }
            Ok(validated) => {
                for warning in &validated.warnings {
                    println!("{warning}");
                }
                println!("OK");
                Ok(())
            }
            Err(errors) => {
                print!("{errors}");
                std::process::exit(1);
            }
        },
        Command::DefaultConfig => {
            print!("{}", daemon::DEFAULT_CONFIG);
            Ok(())
        }
        Command::Reload { instance } => reload(&instance),
        Command::Sniff { pcap } => {
            let flows = relay::sniff::pcap::report(&pcap)?;
            print!("{}", relay::sniff::pcap::Table(&flows));
            Ok(())
        }
        Command::Flows { instance, json } => {
            let maps = open(&instance)?;
            let cache = LinkCache::new();
            rt.block_on(async {
                let handle = netlink::connect()?;
                cache.replace_all(netlink::dump_links(&handle).await?);
                anyhow::Ok(())
            })?;
            let mut reader = cache.reader();
            let clock = maps.gate()?;
            let now = monotonic_coarse_ns();
            let mut rows: Vec<FlowRow> =
                maps.flows.snapshot()?.iter().map(|(k, t)| FlowRow::new(k, t, &mut reader, &clock, now)).collect();
            rows.sort_by(|a, b| a.age_ms.cmp(&b.age_ms).reverse().then_with(|| a.src.cmp(&b.src)));
            if json {
                for row in &rows {
                    println!("{}", serde_json::to_string(row)?);
                }
            } else {
                print!("{}", render_table(&rows));
            }
            Ok(())
        }
        Command::Stats { instance, json } => {
            let maps = open(&instance)?;
            let gate = maps.gate()?;
            let counters = maps.counters()?;
            // The lease is in ticks; the gate's own sample says how many ticks have passed since it was written.
            let elapsed_ns = monotonic_coarse_ns().saturating_sub(gate.sample_mono_ns);
            let now_ticks = gate.sample_ticks + elapsed_ns * gate.ticks_per_sec / 1_000_000_000;
            let open = gate.is_open(now_ticks);
            let flows = maps.flows.snapshot()?.len();
            // Relay, UDP and DNS counters of the daemon (about a second old; absent when none runs).
            let userspace = state::CountersFile::new(&instance.instance).read();
            if json {
                let mut obj = serde_json::Map::new();
                obj.insert("gate_open".into(), open.into());
                obj.insert("flows".into(), flows.into());
                obj.insert("flow_capacity".into(), maps.flows.capacity().into());
                for (c, v) in counters {
                    obj.insert(c.name().into(), v.into());
                }
                for (name, v) in &userspace {
                    obj.insert(name.clone(), (*v).into());
                }
                println!("{}", serde_json::Value::Object(obj));
            } else {
                println!("gate                  {}", if open { "open" } else { "closed" });
                println!("flows                 {flows} of {}", maps.flows.capacity());
                for (c, v) in counters {
                    println!("{:<21} {v}", c.name());
                }
                for (name, v) in &userspace {
                    println!("{name:<23} {v}");
                }
            }
            Ok(())
        }
    }
}

/// Signals the daemon and waits for its status file to report the outcome.
fn reload(args: &InstanceArgs) -> anyhow::Result<()> {
    state::check_name(&args.instance)?;
    let status = StatusFile::new(&args.instance);
    let before = status.read().with_context(|| format!("no running daemon for instance {:?}", args.instance))?;
    // SAFETY: kill(2) with a pid read from the daemon's own status file and SIGHUP.
    if unsafe { libc::kill(before.pid as i32, libc::SIGHUP) } != 0 {
        anyhow::bail!("signalling pid {}: {}", before.pid, std::io::Error::last_os_error());
    }
    let deadline = std::time::Instant::now() + RELOAD_WAIT;
    while std::time::Instant::now() < deadline {
        match status.read() {
            Some(now) if now.writes != before.writes => {
                return match now.last_error {
                    None => {
                        println!("OK: generation {}", now.generation);
                        Ok(())
                    }
                    Some(error) => {
                        println!("reload failed; generation {} keeps running:\n{error}", now.generation);
                        std::process::exit(1);
                    }
                };
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    anyhow::bail!("the daemon did not report within {RELOAD_WAIT:?}; see its log")
}

/// How long `dae reload` waits for the daemon's answer.
const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn open(args: &InstanceArgs) -> anyhow::Result<Maps> {
    state::check_name(&args.instance)?;
    let dir = state::pin_dir(&args.bpffs, &args.instance);
    Maps::open_pinned(&dir).with_context(|| {
        format!("no running daemon for instance {:?} (no maps pinned in {})", args.instance, dir.display())
    })
}
