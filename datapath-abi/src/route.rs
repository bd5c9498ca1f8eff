//! The routing engine's maps: a rule set compiled into per-dimension rule bitmaps, in two banks.
//!
//! Classification by bit vectors: for every dimension a rule can test (destination and source address, ports,
//! transport, DSCP, interface, MAC, domain) the compiler precomputes, for each *class* of values, the bitmap of
//! rules whose term in that dimension holds for such a value — rules without a term in the dimension have their
//! bit set (they do not care), negated terms are folded in. A packet looks up one class per dimension the rule
//! set uses, ANDs the bitmaps, and the first set bit is the first rule whose every term holds. The cost depends
//! on the dimensions in use, not on the number of rules (`perf`: `route_miss_ns_net_*`).
//!
//! Everything lives in two banks selected by [`RouteSelector`]: a reload fills the inactive bank and flips the
//! selector with one store; flows in flight keep the decision stored in their flow tag.

use crate::{assert_layout, assert_offset};

/// Rules per rule set (dae's limit is 1024 match sets).
pub const MAX_RULES: usize = 1024;
/// 64-bit words of a [`RuleBits`].
pub const RULE_WORDS: usize = MAX_RULES / 64;
/// Distinct bitmaps per bank, over all dimensions. A geoip list of 8,000 prefixes folds into a handful of
/// classes (prefixes whose covering sets are the same share one), so this is far from the prefix count.
pub const MAX_CLASSES: u32 = 16_384;
/// Banks: the active one and the one a reload fills.
pub const BANKS: u32 = 2;

/// A set of rules, bit `i` = rule `i`.
///
/// Layout: 128 bytes, align 8, word `w` holds rules `64*w ..= 64*w+63` (bit 0 = lowest rule).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleBits {
    /// The words.
    pub words: [u64; RULE_WORDS],
}
assert_layout!(RuleBits, size = 128, align = 8);

impl Default for RuleBits {
    fn default() -> Self {
        Self { words: [0; RULE_WORDS] }
    }
}

impl RuleBits {
    /// Every rule.
    pub const ALL: RuleBits = RuleBits { words: [u64::MAX; RULE_WORDS] };

    /// Sets bit `rule`.
    pub fn set(&mut self, rule: usize) {
        self.words[rule / 64] |= 1 << (rule % 64);
    }

    /// Whether bit `rule` is set.
    pub fn get(&self, rule: usize) -> bool {
        self.words[rule / 64] & (1 << (rule % 64)) != 0
    }
}

/// The dimensions, in the order of the `dims_used` bits of [`RouteConfig`].
pub mod dim {
    /// Destination address (LPM).
    pub const DST_IP: u32 = 0;
    /// Source address (LPM).
    pub const SRC_IP: u32 = 1;
    /// Destination port.
    pub const DST_PORT: u32 = 2;
    /// Source port.
    pub const SRC_PORT: u32 = 3;
    /// Transport × IP version (four classes: tcp4, tcp6, udp4, udp6).
    pub const TRANSPORT: u32 = 4;
    /// DSCP.
    pub const DSCP: u32 = 5;
    /// Interface of the packet's direction.
    pub const IFACE: u32 = 6;
    /// Source MAC.
    pub const MAC: u32 = 7;
    /// Domain the destination address is known by (filled from DNS answers).
    pub const DOMAIN: u32 = 8;
    /// Owning process name of a gateway-originated packet: the socket's cookie, recorded with the creating
    /// task's `comm` by the `cgroup/sock_create` hook. LAN-in packets, and sockets created before the daemon
    /// started, have none.
    pub const PNAME: u32 = 9;
    /// Number of dimensions.
    pub const COUNT: u32 = 10;
}

/// Slots per bank in `ROUTE_PORT_CLASS`: one class id per port, destination then source.
pub const PORT_SLOTS: u32 = 2 * 65_536;
/// Slots per bank in `ROUTE_SMALL_CLASS`: transport (4) then DSCP (64).
pub const SMALL_SLOTS: u32 = 4 + 64;
/// Offset of the DSCP classes inside a bank's small slots.
pub const SMALL_DSCP: u32 = 4;

/// Outbound ids in a [`RouteAction`] and a flow tag (dae's numbering).
pub mod outbound {
    /// Pass untouched.
    pub const DIRECT: u8 = 0;
    /// Drop.
    pub const BLOCK: u8 = 1;
    /// First proxy group; group `g` is `GROUP_BASE + g`.
    pub const GROUP_BASE: u8 = 2;
    /// Last usable group id.
    pub const GROUP_MAX: u8 = 0xFB;
    /// DNS for the forwarder (dae's "control plane routing").
    pub const DNS: u8 = 0xFD;
    /// Not routed (no rule set loaded when the flow was first seen).
    pub const NONE: u8 = 0xFF;
}

/// [`RouteAction::flags`]: the decision is `must`.
pub const ACTION_MUST: u8 = 1 << 0;

/// What a rule (or the fallback) decides.
///
/// Layout (8 bytes, align 4): `outbound u8, flags u8, _pad [u8; 2], mark u32`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteAction {
    /// `outbound::*`.
    pub outbound: u8,
    /// `ACTION_*`.
    pub flags: u8,
    /// Zero.
    pub _pad: [u8; 2],
    /// Firewall mark to set; 0 for none.
    pub mark: u32,
}
assert_layout!(RouteAction, size = 8, align = 4);
assert_offset!(RouteAction, mark, 4);

/// Per-bank settings.
///
/// Layout (320 bytes, align 8):
/// ```text
///   0..4    words           u32   words of the rule bitmaps in use (rules / 64, rounded up; >= 1)
///   4..8    dims_used       u32   bit d set: dimension d has at least one term
///   8..16   fallback        RouteAction
///  16..56   default_class   [u32; 10]  class of a value no entry maps (LPM miss, unknown interface, ...);
///                                       for IFACE the LAN-in default, see iface_wan_default
///  56..60   iface_wan_default u32
///  60..64   _pad            u32
///  64..192  must_rules      RuleBits   rules whose action is must_rules
/// 192..320  xdp_rules       RuleBits   the leading rules that test addresses only: XDP on LAN interfaces
///                                       drops what the first of them to match blocks (empty: XDP routes nothing)
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// Words of rule bitmaps in use.
    pub words: u32,
    /// Dimensions in use.
    pub dims_used: u32,
    /// The fallback.
    pub fallback: RouteAction,
    /// Default class per dimension.
    pub default_class: [u32; dim::COUNT as usize],
    /// Default interface class for WAN-out packets.
    pub iface_wan_default: u32,
    /// Zero.
    pub _pad: u32,
    /// Rules whose action is `must_rules`.
    pub must_rules: RuleBits,
    /// The address-only rules at the head of the list (see the layout).
    pub xdp_rules: RuleBits,
}
assert_layout!(RouteConfig, size = 320, align = 8);
assert_offset!(RouteConfig, fallback, 8);
assert_offset!(RouteConfig, default_class, 16);
assert_offset!(RouteConfig, iface_wan_default, 56);
assert_offset!(RouteConfig, must_rules, 64);
assert_offset!(RouteConfig, xdp_rules, 192);

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            words: 1,
            dims_used: 0,
            fallback: RouteAction::default(),
            default_class: [0; dim::COUNT as usize],
            iface_wan_default: 0,
            _pad: 0,
            must_rules: RuleBits::default(),
            xdp_rules: RuleBits::default(),
        }
    }
}

/// `ROUTE_SELECTOR[0]`: which bank is active, and whether any rule set is loaded.
///
/// Layout (8 bytes, align 4): `bank u32 (0 or 1), loaded u32 (0: no rule set, flows stay unrouted)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteSelector {
    /// The active bank.
    pub bank: u32,
    /// Non-zero once a rule set was published.
    pub loaded: u32,
}
assert_layout!(RouteSelector, size = 8, align = 4);

/// Address bytes of an LPM key (see [`lpm_key_data`]).
pub const LPM_DATA: usize = 20;
/// Bits of an LPM key before the address: bank, dimension and two zero bytes.
pub const LPM_KEY_PREFIX_BITS: u32 = 32;

/// The data of an `ROUTE_LPM` key: `[bank, dim, 0, 0, addr[16]]` with IPv4 as `::ffff:a.b.c.d`; the key's
/// prefix length is `LPM_KEY_PREFIX_BITS + address prefix` (IPv4 prefixes add 96).
pub fn lpm_key_data(bank: u8, dim: u8, addr: [u8; 16]) -> [u8; LPM_DATA] {
    let mut data = [0u8; LPM_DATA];
    data[0] = bank;
    data[1] = dim;
    data[4..].copy_from_slice(&addr);
    data
}

/// Key of `ROUTE_IFACE`: the class of an interface in one direction.
///
/// Layout (8 bytes, align 4): `bank u8, direction u8 (Direction), _pad [u8; 2], ifindex u32`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IfaceKey {
    /// Bank.
    pub bank: u8,
    /// `Direction` as u8.
    pub direction: u8,
    /// Zero.
    pub _pad: [u8; 2],
    /// Interface index.
    pub ifindex: u32,
}
assert_layout!(IfaceKey, size = 8, align = 4);

/// Key of `ROUTE_MAC`.
///
/// Layout (8 bytes, align 1): `bank u8, _pad u8, mac [u8; 6]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacKey {
    /// Bank.
    pub bank: u8,
    /// Zero.
    pub _pad: u8,
    /// Source MAC.
    pub mac: [u8; 6],
}
assert_layout!(MacKey, size = 8, align = 1);

/// Key of `ROUTE_DOMAIN`: a destination address the DNS forwarder has seen in an answer.
///
/// Layout (20 bytes, align 4): `bank u32, addr [u8; 16]` (IPv4 mapped).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DomainKey {
    /// Bank.
    pub bank: u32,
    /// Address.
    pub addr: [u8; 16],
}
assert_layout!(DomainKey, size = 20, align = 4);

/// `ROUTE_PROBE[0]`: input and output of the `route_probe` program, which routes one test-run packet the way
/// the tc programs do and writes the decision here (tests and benchmarks; loaded, never attached).
///
/// Layout (32 bytes, align 4): `direction u8, _pad [u8; 3], ifindex u32, action RouteAction, comm [u8; 16]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteProbe {
    /// In: `Direction` as u8 the packet is routed as.
    pub direction: u8,
    /// Zero.
    pub _pad: [u8; 3],
    /// In: the interface of that direction.
    pub ifindex: u32,
    /// Out: the decision.
    pub action: RouteAction,
    /// In: the owning process name (all zero: none), as a socket's would be found.
    pub comm: [u8; COMM_LEN],
}
assert_layout!(RouteProbe, size = 32, align = 4);
assert_offset!(RouteProbe, action, 8);
assert_offset!(RouteProbe, comm, 16);

/// Bytes of a process name as the kernel keeps it (`TASK_COMM_LEN`): at most 15 characters and a NUL.
pub const COMM_LEN: usize = 16;

/// A process name as a `ROUTE_PNAME` key: `name` zero-padded (names longer than 15 bytes are cut, as the
/// kernel cuts `comm`).
pub fn comm_of(name: &str) -> [u8; COMM_LEN] {
    let mut comm = [0u8; COMM_LEN];
    let bytes = name.as_bytes();
    let n = bytes.len().min(COMM_LEN - 1);
    comm[..n].copy_from_slice(&bytes[..n]);
    comm
}

/// Key of `ROUTE_PNAME`: a process name in a bank.
///
/// Layout (20 bytes, align 4): `bank u32, comm [u8; 16]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PnameKey {
    /// Bank.
    pub bank: u32,
    /// `comm`, NUL-padded.
    pub comm: [u8; COMM_LEN],
}
assert_layout!(PnameKey, size = 20, align = 4);

/// Capacity of `ROUTE_PNAME`.
pub const PNAME_ENTRIES: u32 = 4096;
/// Capacity of `SOCK_PNAME` (socket cookie -> process name), least recently used first out.
pub const SOCK_PNAME_ENTRIES: u32 = 65_536;

/// Capacity of `ROUTE_LPM` (prefixes over both banks and both address dimensions).
pub const LPM_ENTRIES: u32 = 1 << 20;
/// Capacity of `ROUTE_IFACE`.
pub const IFACE_ENTRIES: u32 = 4096;
/// Capacity of `ROUTE_MAC`.
pub const MAC_ENTRIES: u32 = 65_536;
/// Capacity of `ROUTE_DOMAIN` (addresses over both banks).
pub const DOMAIN_ENTRIES: u32 = 131_072;
