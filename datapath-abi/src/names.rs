//! Names by which the loader finds programs and maps in the eBPF object.
//!
//! The eBPF crate names its programs and maps with these exact strings; the loader's tests check that every name
//! here exists in the built object, so the two cannot drift apart.

/// XDP on an Ethernet-framed interface.
pub const PROG_XDP_L2: &str = "xdp_ingress_l2";
/// XDP on an interface without a link-layer header (tun, WireGuard, PPP).
pub const PROG_XDP_L3: &str = "xdp_ingress_l3";
/// tc ingress of a LAN interface, Ethernet framing.
pub const PROG_TC_LAN_INGRESS_L2: &str = "tc_lan_ingress_l2";
/// tc ingress of a LAN interface, no link-layer header.
pub const PROG_TC_LAN_INGRESS_L3: &str = "tc_lan_ingress_l3";
/// tc egress of a WAN interface, Ethernet framing.
pub const PROG_TC_WAN_EGRESS_L2: &str = "tc_wan_egress_l2";
/// tc egress of a WAN interface, no link-layer header.
pub const PROG_TC_WAN_EGRESS_L3: &str = "tc_wan_egress_l3";

/// Writes the current tick count into `CLOCK_PROBE` when test-run; loaded, never attached.
pub const PROG_CLOCK_PROBE: &str = "clock_probe";
/// Benchmark baseline: XDP that only passes (loaded, never attached).
pub const PROG_BENCH_EMPTY_XDP: &str = "bench_empty_xdp";
/// Benchmark baseline: tc that only passes (loaded, never attached).
pub const PROG_BENCH_EMPTY_TC: &str = "bench_empty_tc";

/// Every program in the object.
pub const PROGRAMS: [&str; 9] = [
    PROG_XDP_L2,
    PROG_XDP_L3,
    PROG_TC_LAN_INGRESS_L2,
    PROG_TC_LAN_INGRESS_L3,
    PROG_TC_WAN_EGRESS_L2,
    PROG_TC_WAN_EGRESS_L3,
    PROG_BENCH_EMPTY_XDP,
    PROG_BENCH_EMPTY_TC,
    PROG_CLOCK_PROBE,
];

/// `Array<FlowBucket>`, mmap-able: the flow table.
pub const MAP_FLOWS: &str = "FLOWS";
/// `Array<Admission>` with one entry: the admission gate.
pub const MAP_ADMISSION: &str = "ADMISSION";
/// `PerCpuArray<u64>` with `COUNTER_SLOTS` entries.
pub const MAP_COUNTERS: &str = "COUNTERS";

/// `Array<u64>` with one entry: where `clock_probe` writes the tick count.
pub const MAP_CLOCK_PROBE: &str = "CLOCK_PROBE";

/// The `u64` global with the flow-hash seed, set by the loader (`EbpfLoader::override_global`).
pub const GLOBAL_FLOW_HASH_SEED: &str = "FLOW_HASH_SEED";
/// The `u32` global with the flow table's bucket count (a power of two), set by the loader.
pub const GLOBAL_FLOW_BUCKETS: &str = "FLOW_BUCKETS";

/// Every map in the object.
pub const MAPS: [&str; 4] = [MAP_FLOWS, MAP_ADMISSION, MAP_COUNTERS, MAP_CLOCK_PROBE];
