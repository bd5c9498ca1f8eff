//! BPF_PROG_TEST_RUN benchmarks of the kernel programs, net of an empty program of the same type measured in
//! the same run (the harness's own cost: context setup, skb allocation, the run loop); and the userspace lookup
//! of a flow those programs tagged.

use aya::maps::Map;
use aya::programs::{Program, SchedClassifier, TestRun, TestRunOptions, Xdp};
use bench_lab::packet::Spec;
use datapath::{flow_table::FlowTable, maps::Maps, mmap::MappedArray, object};
use datapath_abi::{
    Admission, FlowBucket, FlowKey,
    flow::{IPPROTO_UDP, SLOT_VALID, bucket_of, flow_hash},
    gate::GATE_OPEN,
    names::{
        MAP_FLOWS, PROG_BENCH_EMPTY_TC, PROG_BENCH_EMPTY_XDP, PROG_TC_LAN_INGRESS_L2, PROG_XDP_L2, PROG_XDP_LAN_L2,
    },
};

use crate::report::{Figure, median};

/// Rounds per program and packet. Each round measures the empty baseline, the program, and the baseline again,
/// back to back; the reported net figure is the median over rounds of program minus the mean of its two
/// neighbouring baselines, which cancels the slow drift of a shared virtual machine's clock speed.
const ROUNDS: usize = 15;
/// Packets per run: long enough that the syscall's fixed cost vanishes (TOOLCHAIN.md: repeat 1,000,000).
const REPEAT: u32 = 1_000_000;
/// Userspace flow lookups per timed run: tens of milliseconds, so the clock's resolution does not matter.
const LOOKUPS: u32 = 100_000;

fn run(program: &mut Program, frame: &[u8]) -> anyhow::Result<f64> {
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat: REPEAT, ..Default::default() };
    let result = match program {
        Program::Xdp(p) => <Xdp as TestRun>::test_run(p, opts)?,
        Program::SchedClassifier(p) => <SchedClassifier as TestRun>::test_run(p, opts)?,
        _ => anyhow::bail!("not a packet program"),
    };
    // `duration` is the kernel's average per repetition.
    Ok(result.duration.as_nanos() as f64)
}

/// ns per packet of each program, minus its empty baseline. No rule set is published: these are the tagging
/// costs (`perf --only routing` measures routing). `xdp_lan_*` is the LAN variant, which also checks for leading
/// address-only block rules.
pub fn bench() -> anyhow::Result<Vec<Figure>> {
    pin_to_last_cpu();
    let mut loaded = object::load(datapath_abi::flow::FLOW_TABLE_DEFAULT_ENTRIES)?;
    // The lookup benchmark's baseline reads the table through a mapping of all of it; the mapping outlives the
    // handle Maps::take moves.
    let Some(Map::Array(flows)) = loaded.ebpf.map(MAP_FLOWS) else { anyhow::bail!("no {MAP_FLOWS} array") };
    let whole: MappedArray<FlowBucket> = MappedArray::map(flows, false)?;
    let mut maps = Maps::take(&mut loaded.ebpf, None)?;
    // Open the gate for the whole run: the programs do their real work only behind an open gate.
    maps.set_gate(Admission {
        state: GATE_OPEN,
        owner_pid: std::process::id(),
        lease_until: u64::MAX,
        ticks_per_sec: 250,
        ..Admission::default()
    })?;
    let mut figures = Vec::new();
    let cases = [
        ("v4_64", Spec { frame_len: 64, ..Spec::udp("10.1.0.2", 40000, "10.2.0.2", 5201) }),
        ("v4_1500", Spec { frame_len: 1500, ..Spec::udp("10.1.0.2", 40000, "10.2.0.2", 5201) }),
        ("v6_64", Spec { frame_len: 64, ..Spec::udp("fd00:1::2", 40000, "fd00:2::2", 5201) }),
        ("v6_1500", Spec { frame_len: 1500, ..Spec::udp("fd00:1::2", 40000, "fd00:2::2", 5201) }),
    ];
    for (prog, empty, label) in [
        (PROG_XDP_L2, PROG_BENCH_EMPTY_XDP, "xdp_ns_net"),
        (PROG_XDP_LAN_L2, PROG_BENCH_EMPTY_XDP, "xdp_lan_ns_net"),
        (PROG_TC_LAN_INGRESS_L2, PROG_BENCH_EMPTY_TC, "tc_tag_ns_net"),
    ] {
        for (case, spec) in &cases {
            let frame = spec.build();
            let (mut net, mut base) = (Vec::new(), Vec::new());
            let mut measure = |name: &str| -> anyhow::Result<f64> {
                run(loaded.ebpf.program_mut(name).ok_or_else(|| anyhow::anyhow!("no program {name}"))?, &frame)
            };
            for _ in 0..ROUNDS {
                let before = measure(empty)?;
                let gross = measure(prog)?;
                let after = measure(empty)?;
                let b = (before + after) / 2.0;
                base.push(b);
                net.push(gross - b);
            }
            let (net, base) = (median(&mut net), median(&mut base));
            figures.push(Figure {
                name: format!("{label}_{case}"),
                value: net,
                unit: "ns",
                baseline: base,
                ratio: (net + base) / base,
            });
        }
    }
    // The tc runs above tagged the v4 case's flow.
    let spec = &cases[0].1;
    let key = FlowKey::new(spec.src, spec.sport, spec.dst, spec.dport, IPPROTO_UDP);
    figures.push(flow_lookup(&maps.flows, &whole, &key, loaded.flow_hash_seed)?);
    Ok(figures)
}

/// `flow_lookup_ns`: one userspace lookup of a tagged flow as the gateway's workers make it (a copy of its bucket
/// with `BPF_MAP_LOOKUP_ELEM`), against reading the same bucket through a mapping of the whole table (how they
/// read it before that mapping's 12 MiB were taken out of the daemon's RSS), in the same rounds.
fn flow_lookup(table: &FlowTable, whole: &MappedArray<FlowBucket>, key: &FlowKey, seed: u64) -> anyhow::Result<Figure> {
    anyhow::ensure!(table.lookup(key, seed).is_some(), "the benchmark flow is not in the table");
    let mapped = || {
        let hash = flow_hash(key, seed);
        let bucket = whole.get(bucket_of(hash, table.buckets()) as usize);
        bucket.slots.iter().find(|s| s.state == SLOT_VALID && s.hash == hash && s.key == *key).map(|s| s.tag)
    };
    anyhow::ensure!(mapped() == table.lookup(key, seed), "both ways find the same tag");
    let time = |lookup: &dyn Fn() -> bool| {
        let start = std::time::Instant::now();
        for _ in 0..LOOKUPS {
            std::hint::black_box(lookup());
        }
        start.elapsed().as_nanos() as f64 / f64::from(LOOKUPS)
    };
    let (mut syscall, mut read) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        read.push(time(&|| mapped().is_some()));
        syscall.push(time(&|| table.lookup(std::hint::black_box(key), seed).is_some()));
    }
    let (value, baseline) = (median(&mut syscall), median(&mut read));
    Ok(Figure { name: "flow_lookup_ns".into(), value, unit: "ns", baseline, ratio: value / baseline })
}

/// Runs the benchmark thread on one CPU: BPF_PROG_TEST_RUN executes on the caller's CPU, and migrating between
/// rounds mixes two CPUs' cache and frequency states into one figure.
fn pin_to_last_cpu() {
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get valid pointers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus - 1, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}
