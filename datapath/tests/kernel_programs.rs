//! The kernel programs under BPF_PROG_TEST_RUN: what they record for crafted frames (VLAN, QinQ, IPv6
//! extension headers, fragments, malformed and non-IP input), behind an open or a closed gate. Needs root.

use aya::programs::{Program, SchedClassifier, TestRun, TestRunOptions, Xdp};
use bench_lab::{
    packet::{ETH_P_8021AD, ETH_P_8021Q, Fragment, L4, Spec},
    skip_unless_root,
};
use datapath::{
    flow_table::WINDOW_BUCKETS,
    maps::Maps,
    object::{self, Loaded},
};
use datapath_abi::{
    Admission, Counter, Direction, FlowKey, FlowTag, XdpMeta,
    flow::{BUCKET_WAYS, FLOW_F_TCP_CLOSING, FLOW_F_TCP_SYN, IPPROTO_TCP, IPPROTO_UDP, bucket_of, flow_hash},
    gate::GATE_OPEN,
    meta::{META_F_FRAGMENT, XDP_META_MAGIC},
    names::{PROG_TC_LAN_INGRESS_L2, PROG_TC_WAN_EGRESS_L2, PROG_XDP_L2},
};

/// tc's "pass and continue" verdict as the test run reports it.
const TC_ACT_UNSPEC: u32 = -1i32 as u32;
const XDP_PASS: u32 = 2;

struct Harness {
    loaded: Loaded,
    maps: Maps,
}

impl Harness {
    fn new() -> Self {
        let mut loaded = object::load(1024).expect("object loads and verifies");
        let maps = Maps::take(&mut loaded.ebpf, None).expect("every ABI map exists");
        Self { loaded, maps }
    }

    fn open_gate(&mut self) {
        let gate = Admission {
            state: GATE_OPEN,
            owner_pid: 1,
            lease_until: u64::MAX,
            ticks_per_sec: 250,
            ..Admission::default()
        };
        self.maps.set_gate(gate).unwrap();
    }

    fn run(&mut self, program: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() };
        let result = match self.loaded.ebpf.program_mut(program).unwrap() {
            Program::Xdp(p) => <Xdp as TestRun>::test_run(p, opts).unwrap(),
            Program::SchedClassifier(p) => <SchedClassifier as TestRun>::test_run(p, opts).unwrap(),
            _ => unreachable!(),
        };
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    fn tc(&mut self, frame: &[u8]) {
        assert_eq!(self.run(PROG_TC_LAN_INGRESS_L2, frame).0, TC_ACT_UNSPEC, "tc passes every packet");
    }

    fn tag(&self, key: &FlowKey) -> Option<FlowTag> {
        self.maps.flows.lookup(key, self.loaded.flow_hash_seed)
    }

    fn counter(&self, counter: Counter) -> u64 {
        self.maps.counters().unwrap().into_iter().find(|(c, _)| *c == counter).unwrap().1
    }
}

fn key(spec: &Spec) -> FlowKey {
    let proto = match spec.l4 {
        L4::Udp => IPPROTO_UDP,
        L4::Tcp(_) => IPPROTO_TCP,
        L4::Other(p) => p,
    };
    FlowKey::new(spec.src, spec.sport, spec.dst, spec.dport, proto)
}

fn udp4() -> Spec {
    Spec { frame_len: 64, ..Spec::udp("10.1.0.2", 40000, "10.2.0.2", 53) }
}

#[test]
fn a_closed_gate_or_an_expired_lease_records_nothing() {
    if skip_unless_root("a_closed_gate_or_an_expired_lease_records_nothing") {
        return;
    }
    let mut h = Harness::new();
    let spec = udp4();
    h.tc(&spec.build());
    assert_eq!(h.tag(&key(&spec)), None, "closed gate");
    h.maps
        .set_gate(Admission { state: GATE_OPEN, lease_until: 0, ticks_per_sec: 250, ..Admission::default() })
        .unwrap();
    h.tc(&spec.build());
    assert_eq!(h.tag(&key(&spec)), None, "expired lease");
    assert!(h.maps.counters().unwrap().iter().all(|(_, v)| *v == 0), "not even a counter moved");
    assert_eq!(h.run(PROG_XDP_L2, &spec.build()).0, XDP_PASS);
    h.open_gate();
    h.tc(&spec.build());
    assert!(h.tag(&key(&spec)).is_some(), "recorded once open");
}

#[test]
fn tcp_and_udp_flows_are_tagged_once_and_refreshed() {
    if skip_unless_root("tcp_and_udp_flows_are_tagged_once_and_refreshed") {
        return;
    }
    let mut h = Harness::new();
    h.open_gate();
    let specs = [
        udp4(),
        Spec { frame_len: 1500, ..Spec::udp("fd00:1::2", 40001, "fd00:2::2", 443) },
        Spec::tcp("10.1.0.2", 40002, "10.2.0.2", 80, 0x02),
        Spec::tcp("fd00:1::2", 40003, "fd00:2::2", 80, 0x10),
    ];
    for spec in &specs {
        let frame = spec.build();
        h.tc(&frame);
        h.tc(&frame);
        let tag = h.tag(&key(spec)).unwrap_or_else(|| panic!("{spec:?} tagged"));
        assert_eq!(tag.direction, Direction::LanIn as u8);
        assert_eq!(tag.packets, 2);
        assert_eq!(tag.bytes, 2 * frame.len() as u64);
        assert_ne!(tag.ingress_ifindex, 0, "the test-run skb's device");
        let began_with_syn = matches!(spec.l4, L4::Tcp(0x02));
        assert_eq!(tag.flags, if began_with_syn { FLOW_F_TCP_SYN } else { 0 }, "{spec:?}");
    }
    assert_eq!(h.counter(Counter::FlowsCreated), specs.len() as u64);
    assert_eq!(h.maps.flows.snapshot().unwrap().len(), specs.len());
}

#[test]
fn fin_or_rst_marks_a_flow_closing() {
    if skip_unless_root("fin_or_rst_marks_a_flow_closing") {
        return;
    }
    let mut h = Harness::new();
    h.open_gate();
    let syn = Spec::tcp("10.1.0.2", 40010, "10.2.0.2", 80, 0x02);
    h.tc(&syn.build());
    assert_eq!(h.tag(&key(&syn)).unwrap().flags & FLOW_F_TCP_CLOSING, 0);
    h.tc(&Spec::tcp("10.1.0.2", 40010, "10.2.0.2", 80, 0x11).build());
    assert_ne!(h.tag(&key(&syn)).unwrap().flags & FLOW_F_TCP_CLOSING, 0, "FIN|ACK");
    let rst = Spec::tcp("10.1.0.2", 40011, "10.2.0.2", 80, 0x04);
    h.tc(&rst.build());
    assert_ne!(h.tag(&key(&rst)).unwrap().flags & FLOW_F_TCP_CLOSING, 0, "RST on a new flow");
}

#[test]
fn vlan_and_qinq_tags_are_walked() {
    if skip_unless_root("vlan_and_qinq_tags_are_walked") {
        return;
    }
    let mut h = Harness::new();
    h.open_gate();
    let single = Spec { vlans: vec![(ETH_P_8021Q, 100)], ..Spec::udp("10.1.0.2", 40020, "10.2.0.2", 53) };
    let double = Spec {
        vlans: vec![(ETH_P_8021AD, 200), (ETH_P_8021Q, 100)],
        ..Spec::tcp("fd00:1::2", 40021, "fd00:2::2", 443, 0x02)
    };
    for spec in [&single, &double] {
        h.tc(&spec.build());
        assert!(h.tag(&key(spec)).is_some(), "{:?}", spec.vlans);
    }
    // Three tags is more than the parser walks: not IP as far as it can tell, passed untouched.
    let triple = Spec { vlans: vec![(ETH_P_8021AD, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)], ..udp4() };
    h.tc(&triple.build());
    assert_eq!(h.tag(&key(&triple)), None);
    assert_eq!(h.counter(Counter::NotIp), 1);
}

#[test]
fn ipv6_extension_headers_are_walked_to_the_transport() {
    if skip_unless_root("ipv6_extension_headers_are_walked_to_the_transport") {
        return;
    }
    let mut h = Harness::new();
    h.open_gate();
    for (i, chain) in [vec![0], vec![0, 43, 60], vec![51], vec![60, 51, 60]].into_iter().enumerate() {
        let spec = Spec { v6_ext: chain.clone(), ..Spec::tcp("fd00:1::2", 40030 + i as u16, "fd00:2::2", 22, 0x02) };
        h.tc(&spec.build());
        assert!(h.tag(&key(&spec)).is_some(), "chain {chain:?}");
    }
    // Nine extension headers: deeper than the parser follows, so it stops at a non-transport header.
    let deep = Spec { v6_ext: vec![60; 9], ..Spec::udp("fd00:1::2", 40039, "fd00:2::2", 53) };
    h.tc(&deep.build());
    assert_eq!(h.tag(&key(&deep)), None);
    assert_eq!(h.counter(Counter::NotTcpUdp), 1);
}

/// A first UDP fragment carries the ports and is tagged as its flow, and the later fragments of its datagram
/// (same addresses and IP identification) follow its decision: pass, for a direct flow as here. A later
/// fragment whose first was never seen, and a fragment of anything but UDP, pass untouched and are counted.
/// (What later fragments of a blocked or proxied flow do: `datapath/tests/gateway.rs`.)
#[test]
fn first_udp_fragments_are_tagged_as_their_flow_and_other_fragments_pass_counted() {
    if skip_unless_root("first_udp_fragments_are_tagged_as_their_flow_and_other_fragments_pass_counted") {
        return;
    }
    let mut h = Harness::new();
    h.open_gate();
    let firsts = [
        Spec { fragment: Some(Fragment::First), ..udp4() },
        Spec { fragment: Some(Fragment::First), ..Spec::udp("fd00:1::2", 40040, "fd00:2::2", 53) },
    ];
    for spec in &firsts {
        h.tc(&spec.build());
        assert!(h.tag(&key(spec)).is_some(), "{spec:?}");
    }
    let following = [
        Spec { fragment: Some(Fragment::Later), ..udp4() },
        Spec { fragment: Some(Fragment::Later), v6_ext: vec![0], ..Spec::udp("fd00:1::2", 40040, "fd00:2::2", 53) },
    ];
    for spec in &following {
        h.tc(&spec.build());
        assert_eq!(h.tag(&key(spec)).map(|t| t.packets), Some(1), "not counted as its flow's packet: {spec:?}");
    }
    let orphans = [
        Spec { fragment: Some(Fragment::Later), ..Spec::udp("10.1.0.9", 40043, "10.2.0.2", 53) },
        Spec { fragment: Some(Fragment::First), ..Spec::tcp("10.0.0.2", 40042, "10.0.1.2", 80, 0x02) },
    ];
    for spec in &orphans {
        h.tc(&spec.build());
        assert_eq!(h.tag(&key(spec)), None, "{spec:?}");
    }
    assert_eq!(h.counter(Counter::FlowsCreated), firsts.len() as u64);
    assert_eq!(h.counter(Counter::FragmentFollowed), following.len() as u64);
    assert_eq!(h.counter(Counter::Fragment), orphans.len() as u64);
}

#[test]
fn malformed_and_foreign_frames_are_counted_and_pass() {
    if skip_unless_root("malformed_and_foreign_frames_are_counted_and_pass") {
        return;
    }
    let mut h = Harness::new();
    h.open_gate();
    let mut bad_ihl = udp4().build();
    bad_ihl[14] = 0x43; // IHL 3: shorter than an IPv4 header can be
    h.tc(&bad_ihl);
    let tcp = Spec::tcp("10.1.0.2", 40050, "10.2.0.2", 80, 0x02).build();
    h.tc(&tcp[..14 + 20 + 8]); // the TCP header cut after 8 bytes
    assert_eq!(h.counter(Counter::Malformed), 2);
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.resize(60, 0);
    h.tc(&arp);
    assert_eq!(h.counter(Counter::NotIp), 1);
    h.tc(&Spec { l4: L4::Other(1), ..udp4() }.build());
    assert_eq!(h.counter(Counter::NotTcpUdp), 1);
    assert_eq!(h.counter(Counter::FlowsCreated), 0);
}

#[test]
fn wan_egress_tags_locally_originated_packets_as_wan_out() {
    if skip_unless_root("wan_egress_tags_locally_originated_packets_as_wan_out") {
        return;
    }
    let mut h = Harness::new();
    h.open_gate();
    let spec = udp4();
    assert_eq!(h.run(PROG_TC_WAN_EGRESS_L2, &spec.build()).0, TC_ACT_UNSPEC);
    let tag = h.tag(&key(&spec)).expect("a test-run skb has no ingress interface: locally originated");
    assert_eq!(tag.direction, Direction::WanOut as u8);
    assert_eq!(tag.ingress_ifindex, 0);
    assert_ne!(tag.egress_ifindex, 0);
}

#[test]
fn xdp_leaves_a_parse_summary_in_front_of_the_frame() {
    if skip_unless_root("xdp_leaves_a_parse_summary_in_front_of_the_frame") {
        return;
    }
    let mut h = Harness::new();
    h.open_gate();
    if !h.loaded.xdp_meta {
        // This kernel refuses bpf_xdp_adjust_meta to XDP programs: the loader turned the summary off. XDP must
        // then leave the frame as it was and count it; tc parses it itself (the other tests).
        eprintln!(
            "xdp_leaves_a_parse_summary_in_front_of_the_frame: the kernel refuses XDP metadata; checking the fallback"
        );
        let frame = udp4().build();
        let (verdict, out) = h.run(PROG_XDP_L2, &frame);
        assert_eq!((verdict, &out[..]), (XDP_PASS, &frame[..]), "no metadata, the frame untouched");
        assert_eq!(h.counter(Counter::XdpMetaUnavailable), 1);
        return;
    }
    let cases = [
        (udp4(), 14, 34, 4, 0, 0),
        (Spec { vlans: vec![(ETH_P_8021AD, 2), (ETH_P_8021Q, 3)], ..udp4() }, 22, 42, 4, 2, 0),
        (Spec { v6_ext: vec![0, 60], ..Spec::udp("fd00::1", 1, "fd00::2", 2) }, 14, 86, 6, 0, 0),
        (Spec { fragment: Some(Fragment::Later), ..udp4() }, 14, 34, 4, 0, META_F_FRAGMENT),
    ];
    for (spec, l3, l4, version, vlans, flags) in cases {
        let frame = spec.build();
        let (verdict, out) = h.run(PROG_XDP_L2, &frame);
        assert_eq!(verdict, XDP_PASS);
        assert_eq!(out.len(), frame.len() + size_of::<XdpMeta>(), "metadata precedes the frame");
        // SAFETY: `out` holds at least size_of::<XdpMeta>() bytes (asserted above); XdpMeta is plain integers.
        let meta: XdpMeta = unsafe { std::ptr::read_unaligned(out.as_ptr().cast()) };
        assert_eq!(meta.magic, XDP_META_MAGIC);
        assert_eq!((meta.l3_offset, meta.l4_offset, meta.ip_version), (l3, l4, version), "{spec:?}");
        assert_eq!((meta.vlan_tags, meta.flags), (vlans, flags));
        assert_eq!(meta.l4_proto, IPPROTO_UDP);
        assert_eq!(&out[size_of::<XdpMeta>()..], &frame[..], "the frame itself is untouched");
    }
}

#[test]
fn the_janitor_frees_idle_flows_and_a_full_bucket_takes_new_ones_again() {
    if skip_unless_root("the_janitor_frees_idle_flows_and_a_full_bucket_takes_new_ones_again") {
        return;
    }
    let mut loaded = object::load(4).expect("one bucket of four slots");
    let maps = Maps::take(&mut loaded.ebpf, None).unwrap();
    let mut h = Harness { loaded, maps };
    h.open_gate();
    let flows: Vec<Spec> = (0..5).map(|i| Spec { sport: 40060 + i, ..udp4() }).collect();
    for spec in &flows {
        h.tc(&spec.build());
    }
    assert_eq!(h.maps.flows.snapshot().unwrap().len(), 4);
    assert_eq!(h.counter(Counter::FlowTableFull), 1);
    assert_eq!(h.tag(&key(&flows[4])), None);

    let probe = h.maps.clock_probe.as_ref().unwrap();
    let now = datapath::clock::sample(&mut h.loaded.ebpf, probe).unwrap();
    let clock = Admission::open(1, 250, now.ticks, now.mono_ns);
    let fresh = datapath::flows::sweep(&h.maps.flows, &clock, now.mono_ns).unwrap();
    assert_eq!((fresh.scanned, fresh.removed), (4, 0), "nothing is idle yet");
    let later = now.mono_ns + datapath::flows::UDP_IDLE.as_nanos() as u64 + 2_000_000_000;
    let swept = datapath::flows::sweep(&h.maps.flows, &clock, later).unwrap();
    assert_eq!((swept.scanned, swept.removed), (4, 4));
    assert!(h.maps.flows.snapshot().unwrap().is_empty());

    h.tc(&flows[4].build());
    assert!(h.tag(&key(&flows[4])).is_some(), "a freed slot takes the flow that did not fit");
}

#[test]
fn lookups_snapshots_and_the_janitor_cover_every_window_of_a_large_table() {
    if skip_unless_root("lookups_snapshots_and_the_janitor_cover_every_window_of_a_large_table") {
        return;
    }
    let windows = 4;
    let mut loaded = object::load(windows * WINDOW_BUCKETS * BUCKET_WAYS as u32).expect("a four-window table");
    let maps = Maps::take(&mut loaded.ebpf, None).unwrap();
    let mut h = Harness { loaded, maps };
    assert_eq!(h.maps.flows.buckets(), windows * WINDOW_BUCKETS);
    h.open_gate();
    let flows: Vec<Spec> = (0..64).map(|i| Spec { sport: 41000 + i, ..udp4() }).collect();
    for spec in &flows {
        h.tc(&spec.build());
    }
    let buckets = h.maps.flows.buckets();
    let seed = h.loaded.flow_hash_seed;
    let used: std::collections::HashSet<u32> =
        flows.iter().map(|spec| bucket_of(flow_hash(&key(spec), seed), buckets) / WINDOW_BUCKETS).collect();
    assert_eq!(used.len(), windows as usize, "64 flows land in every window");
    assert!(flows.iter().all(|spec| h.tag(&key(spec)).is_some()), "every flow is found by its bucket");
    assert_eq!(h.maps.flows.snapshot().unwrap().len(), flows.len());

    let probe = h.maps.clock_probe.as_ref().unwrap();
    let now = datapath::clock::sample(&mut h.loaded.ebpf, probe).unwrap();
    let clock = Admission::open(1, 250, now.ticks, now.mono_ns);
    let later = now.mono_ns + datapath::flows::UDP_IDLE.as_nanos() as u64 + 2_000_000_000;
    let swept = datapath::flows::sweep(&h.maps.flows, &clock, later).unwrap();
    assert_eq!((swept.scanned, swept.removed), (flows.len(), flows.len()));
    assert!(h.maps.flows.snapshot().unwrap().is_empty());
    assert!(flows.iter().all(|spec| h.tag(&key(spec)).is_none()));
}
