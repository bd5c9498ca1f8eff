//! Names by which the loader finds programs and maps in the eBPF object.
//!
//! The eBPF crate names its programs and maps with these exact strings; the loader's tests check that every name
//! here exists in the built object, so the two cannot drift apart.

/// XDP on an Ethernet-framed interface.
pub const PROG_XDP_L2: &str = "xdp_ingress_l2";
/// XDP on an interface without a link-layer header (tun, WireGuard, PPP).
pub const PROG_XDP_L3: &str = "xdp_ingress_l3";
/// XDP on a LAN interface (Ethernet): also drops what the leading address-only rules block.
pub const PROG_XDP_LAN_L2: &str = "xdp_lan_l2";
/// XDP on a LAN interface without a link-layer header.
pub const PROG_XDP_LAN_L3: &str = "xdp_lan_l3";
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
pub const PROGRAMS: [&str; 15] = [
    PROG_XDP_L2,
    PROG_XDP_L3,
    PROG_XDP_LAN_L2,
    PROG_XDP_LAN_L3,
    PROG_TC_LAN_INGRESS_L2,
    PROG_TC_LAN_INGRESS_L3,
    PROG_TC_WAN_EGRESS_L2,
    PROG_TC_WAN_EGRESS_L3,
    PROG_BENCH_EMPTY_XDP,
    PROG_BENCH_EMPTY_TC,
    PROG_CLOCK_PROBE,
    PROG_ROUTE_PROBE,
    PROG_CGROUP_SOCK_CREATE,
    PROG_TC_LOCAL_INGRESS,
    PROG_SK_LOOKUP_REASM,
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
/// The `u32` global that turns XDP's parse summary on (1) or off (0), set by the loader.
pub const GLOBAL_XDP_META: &str = "XDP_META";
/// The `u32` global with the flow table's bucket count (a power of two), set by the loader.
pub const GLOBAL_FLOW_BUCKETS: &str = "FLOW_BUCKETS";

/// `Array<RouteSelector>` [1]: the active routing bank.
pub const MAP_ROUTE_SELECTOR: &str = "ROUTE_SELECTOR";
/// `Array<RouteConfig>` [2 banks].
pub const MAP_ROUTE_CONFIG: &str = "ROUTE_CONFIG";
/// `Array<RuleBits>` [2 banks × MAX_CLASSES]: the class bitmaps of every dimension.
pub const MAP_ROUTE_CLASS_BITS: &str = "ROUTE_CLASS_BITS";
/// `Array<RouteAction>` [2 banks × MAX_RULES].
pub const MAP_ROUTE_ACTIONS: &str = "ROUTE_ACTIONS";
/// `LpmTrie<[u8; LPM_DATA], u32>`: address prefix -> class, both address dimensions, both banks.
pub const MAP_ROUTE_LPM: &str = "ROUTE_LPM";
/// `Array<u64>` [2 banks × PORT_SLOTS]: port -> class (u64 so the mmap-able array has no padding).
pub const MAP_ROUTE_PORT_CLASS: &str = "ROUTE_PORT_CLASS";
/// `Array<u64>` [2 banks × SMALL_SLOTS]: transport and DSCP -> class.
pub const MAP_ROUTE_SMALL_CLASS: &str = "ROUTE_SMALL_CLASS";
/// `HashMap<IfaceKey, u32>`: interface -> class.
pub const MAP_ROUTE_IFACE: &str = "ROUTE_IFACE";
/// `HashMap<MacKey, u32>`: source MAC -> class.
pub const MAP_ROUTE_MAC: &str = "ROUTE_MAC";
/// `HashMap<DomainKey, RuleBits>`: destination address -> domain-dimension bitmap, from DNS answers.
pub const MAP_ROUTE_DOMAIN: &str = "ROUTE_DOMAIN";
/// `HashMap<PnameKey, u32>`: process name -> class.
pub const MAP_ROUTE_PNAME: &str = "ROUTE_PNAME";
/// `LruHashMap<u64, [u8; 16]>`: socket cookie -> `comm` of the task that created the socket.
pub const MAP_SOCK_PNAME: &str = "SOCK_PNAME";
/// `Array<SteerConfig>` [1]: how proxied flows reach the workers.
pub const MAP_STEER_CONFIG: &str = "STEER_CONFIG";
/// `SockMap` [MAX_WORKERS × SOCKS_PER_WORKER]: the workers' transparent sockets.
pub const MAP_STEER_SOCKS: &str = "STEER_SOCKS";
/// `LruHashMap<FragKey, FragAction>` [FRAG_ENTRIES]: what later fragments of a datagram do (its first's decision).
pub const MAP_FRAG_TRAINS: &str = "FRAG_TRAINS";
/// `LruHashMap<FlowKey, u32>` [FRAG_ENTRIES]: the worker slot of a flow whose fragmented datagrams are steered.
pub const MAP_REASM_STEER: &str = "REASM_STEER";
/// `Array<RouteProbe>` [1]: in/out of `route_probe`.
pub const MAP_ROUTE_PROBE: &str = "ROUTE_PROBE";

/// Routes one test-run packet as tc would, writing the decision into `ROUTE_PROBE`; loaded, never attached.
pub const PROG_ROUTE_PROBE: &str = "route_probe";

/// tc ingress of the local steering device: assigns gateway-originated proxied packets to worker sockets.
pub const PROG_TC_LOCAL_INGRESS: &str = "tc_local_ingress";

/// `cgroup/sock_create` on the cgroup v2 root: records which process created each socket.
pub const PROG_CGROUP_SOCK_CREATE: &str = "cgroup_sock_create";

/// `sk_lookup` on the daemon's network namespace: hands reassembled datagrams of steered fragment trains to
/// their worker's socket.
pub const PROG_SK_LOOKUP_REASM: &str = "sk_lookup_reasm";

/// Every map in the object.
pub const MAPS: [&str; 21] = [
    MAP_FLOWS,
    MAP_ADMISSION,
    MAP_COUNTERS,
    MAP_CLOCK_PROBE,
    MAP_ROUTE_SELECTOR,
    MAP_ROUTE_CONFIG,
    MAP_ROUTE_CLASS_BITS,
    MAP_ROUTE_ACTIONS,
    MAP_ROUTE_LPM,
    MAP_ROUTE_PORT_CLASS,
    MAP_ROUTE_SMALL_CLASS,
    MAP_ROUTE_IFACE,
    MAP_ROUTE_MAC,
    MAP_ROUTE_DOMAIN,
    MAP_ROUTE_PNAME,
    MAP_SOCK_PNAME,
    MAP_ROUTE_PROBE,
    MAP_STEER_CONFIG,
    MAP_STEER_SOCKS,
    MAP_FRAG_TRAINS,
    MAP_REASM_STEER,
];
