//! The routing engine: one class lookup per dimension in use, an AND of rule bitmaps, the first set bit.
//! See `datapath_abi::route` for the layout and the reasoning.

use datapath_abi::{
    Direction, FlowKey,
    route::{
        ACTION_MUST, BANKS, COMM_LEN, DomainKey, IfaceKey, LPM_DATA, LPM_KEY_PREFIX_BITS, MAX_CLASSES, MAX_RULES,
        MacKey, PORT_SLOTS, PnameKey, RULE_WORDS, RouteAction, RouteConfig, RuleBits, SMALL_DSCP, SMALL_SLOTS, dim,
        outbound,
    },
};

use crate::{
    maps::{
        ROUTE_ACTIONS, ROUTE_CLASS_BITS, ROUTE_CONFIG, ROUTE_DOMAIN, ROUTE_IFACE, ROUTE_LPM, ROUTE_MAC, ROUTE_PNAME,
        ROUTE_PORT_CLASS, ROUTE_SCRATCH, ROUTE_SELECTOR, ROUTE_SMALL_CLASS,
    },
    parse::{Headers, load},
};

const DNS_PORT_BE: u16 = 53u16.to_be();
const IPPROTO_TCP: u8 = 6;
const NO_RULE: u32 = u32::MAX;

/// What the routing engine may look at for one packet.
pub struct RouteInput<'a> {
    /// The flow key (addresses, ports, transport).
    pub key: &'a FlowKey,
    /// Where the headers are.
    pub headers: &'a Headers,
    /// Linear packet data (for DSCP and the source MAC).
    pub start: usize,
    /// End of linear data.
    pub end: usize,
    /// The frame starts with an Ethernet header.
    pub ethernet: bool,
    /// LAN-in or WAN-out.
    pub direction: Direction,
    /// Interface of that direction.
    pub ifindex: u32,
    /// The owning process's `comm`, for gateway-originated packets whose socket the sock_create hook saw.
    pub comm: Option<[u8; COMM_LEN]>,
}

/// The decision for a packet; `outbound::NONE` when no rule set is loaded.
#[inline(always)]
pub fn route(input: &RouteInput) -> RouteAction {
    let none = RouteAction { outbound: outbound::NONE, ..RouteAction::default() };
    let Some(selector) = ROUTE_SELECTOR.get(0) else { return none };
    if selector.loaded == 0 {
        return none;
    }
    let bank = selector.bank & 1;
    let Some(cfg) = ROUTE_CONFIG.get(bank) else { return none };
    // Class 0 is the set of rules that exist: the starting point every dimension narrows.
    let Some(present) = ROUTE_CLASS_BITS.get(bank * MAX_CLASSES) else { return none };
    let Some(acc) = ROUTE_SCRATCH.get_ptr_mut(0) else { return none };
    // SAFETY: this CPU's scratch slot; a BPF program runs to completion on one CPU without preemption by
    // another program touching the same slot.
    let acc = unsafe { &mut *acc };
    *acc = *present;
    let words = RULE_WORDS;
    let used = cfg.dims_used;
    let uses = |d: u32| used & (1 << d) != 0;

    if uses(dim::DST_IP) {
        let class = lpm_class(bank, dim::DST_IP, &input.key.dst_addr, cfg);
        and_class(acc, bank, class, words);
    }
    if uses(dim::SRC_IP) {
        let class = lpm_class(bank, dim::SRC_IP, &input.key.src_addr, cfg);
        and_class(acc, bank, class, words);
    }
    if uses(dim::DST_PORT) {
        let class = port_class(bank, 0, u16::from_be(input.key.dst_port));
        and_class(acc, bank, class, words);
    }
    if uses(dim::SRC_PORT) {
        let class = port_class(bank, 1, u16::from_be(input.key.src_port));
        and_class(acc, bank, class, words);
    }
    if uses(dim::TRANSPORT) {
        let slot =
            if input.key.l4_proto == IPPROTO_TCP { 0 } else { 2 } + if input.headers.version == 6 { 1 } else { 0 };
        and_class(acc, bank, small_class(bank, slot), words);
    }
    if uses(dim::DSCP) {
        let dscp = dscp(input).unwrap_or(0);
        and_class(acc, bank, small_class(bank, SMALL_DSCP + u32::from(dscp)), words);
    }
    if uses(dim::IFACE) {
        let key = IfaceKey { bank: bank as u8, direction: input.direction as u8, _pad: [0; 2], ifindex: input.ifindex };
        // SAFETY: a hash map value read by value.
        let class = match unsafe { ROUTE_IFACE.get(&key) } {
            Some(class) => *class,
            None if input.direction == Direction::LanIn => cfg.default_class[dim::IFACE as usize],
            None => cfg.iface_wan_default,
        };
        and_class(acc, bank, class, words);
    }
    if uses(dim::MAC) {
        let class = match source_mac(input) {
            Some(mac) => {
                let key = MacKey { bank: bank as u8, _pad: 0, mac };
                // SAFETY: a hash map value read by value.
                unsafe { ROUTE_MAC.get(&key) }.copied().unwrap_or(cfg.default_class[dim::MAC as usize])
            }
            None => cfg.default_class[dim::MAC as usize],
        };
        and_class(acc, bank, class, words);
    }
    if uses(dim::DOMAIN) {
        let key = DomainKey { bank, addr: input.key.dst_addr };
        // SAFETY: a hash map value; the bitmap is read, never kept.
        match unsafe { ROUTE_DOMAIN.get(&key) } {
            Some(bits) => and_bits(acc, bits, words),
            None => and_class(acc, bank, cfg.default_class[dim::DOMAIN as usize], words),
        }
    }
    if uses(dim::PNAME) {
        let class = match input.comm {
            Some(comm) => {
                let key = PnameKey { bank, comm };
                // SAFETY: a hash map value read by value.
                unsafe { ROUTE_PNAME.get(&key) }.copied().unwrap_or(cfg.default_class[dim::PNAME as usize])
            }
            None => cfg.default_class[dim::PNAME as usize],
        };
        and_class(acc, bank, class, words);
    }
    decide(acc, cfg, bank, input.key.dst_port)
}

/// The decision for the rules left in `acc`: the first that decides, or the fallback.
#[inline(always)]
fn decide(acc: &RuleBits, cfg: &RouteConfig, bank: u32, dst_port: u16) -> RouteAction {
    let (winner, must) = first_decision(acc, cfg);
    action_for(winner, must, cfg, bank, dst_port)
}

/// The first rule in `acc` that decides (not a `must_rules` rule; `NO_RULE` if none), and whether a `must_rules`
/// rule matched before it.
#[inline(always)]
fn first_decision(acc: &RuleBits, cfg: &RouteConfig) -> (u32, bool) {
    let mut must = false;
    for w in 0..RULE_WORDS {
        let hits = acc.words[w];
        let must_hits = hits & cfg.must_rules.words[w];
        let deciding = hits & !cfg.must_rules.words[w];
        if deciding != 0 {
            let bit = trailing_zeros(deciding);
            // must_rules rules before the winner, in its own word.
            if must_hits & ((1u64 << bit) - 1) != 0 {
                must = true;
            }
            return (w as u32 * 64 + bit, must);
        }
        if must_hits != 0 {
            must = true;
        }
    }
    (NO_RULE, must)
}

/// The action of rule `winner` (the fallback for `NO_RULE`), with `must` and dae's DNS rule applied.
#[inline(always)]
fn action_for(winner: u32, must: bool, cfg: &RouteConfig, bank: u32, dst_port: u16) -> RouteAction {
    let mut action = if winner == NO_RULE {
        cfg.fallback
    } else {
        match ROUTE_ACTIONS.get(bank * MAX_RULES as u32 + winner) {
            Some(action) => *action,
            None => cfg.fallback,
        }
    };
    if must {
        action.flags |= ACTION_MUST;
    }
    if dst_port == DNS_PORT_BE && action.flags & ACTION_MUST == 0 {
        action.outbound = outbound::DNS;
    }
    action
}

/// The active bank and its settings when it has leading address-only rules for XDP: checked before any per-packet
/// work, because the prefix starts at rule 0 and an empty first word (the common case) means there is none.
#[inline(always)]
pub fn xdp_rules_active() -> Option<(u32, &'static RouteConfig)> {
    let selector = ROUTE_SELECTOR.get(0)?;
    if selector.loaded == 0 {
        return None;
    }
    let bank = selector.bank & 1;
    let cfg = ROUTE_CONFIG.get(bank)?;
    (cfg.xdp_rules.words[0] != 0).then_some((bank, cfg))
}

/// Whether the leading address-only rules block this LAN-in packet. Only rules no earlier non-address rule can
/// pre-empt are considered, so XDP never drops what tc would have let through; when none of them matches, tc
/// decides as usual.
#[inline(always)]
pub fn xdp_blocks(key: &FlowKey, (bank, cfg): (u32, &RouteConfig)) -> bool {
    let Some(present) = ROUTE_CLASS_BITS.get(bank * MAX_CLASSES) else { return false };
    let Some(acc) = ROUTE_SCRATCH.get_ptr_mut(0) else { return false };
    // SAFETY: this CPU's scratch slot (see `route`).
    let acc = unsafe { &mut *acc };
    for w in 0..RULE_WORDS {
        acc.words[w] = present.words[w] & cfg.xdp_rules.words[w];
    }
    if cfg.dims_used & (1 << dim::DST_IP) != 0 {
        let class = lpm_class(bank, dim::DST_IP, &key.dst_addr, cfg);
        and_class(acc, bank, class, RULE_WORDS);
    }
    if cfg.dims_used & (1 << dim::SRC_IP) != 0 {
        let class = lpm_class(bank, dim::SRC_IP, &key.src_addr, cfg);
        and_class(acc, bank, class, RULE_WORDS);
    }
    let (winner, must) = first_decision(acc, cfg);
    winner != NO_RULE && action_for(winner, must, cfg, bank, key.dst_port).outbound == outbound::BLOCK
}

/// Index of the lowest set bit of a non-zero word, without branches (BPF has no count-trailing-zeros): isolate
/// the bit, then count the ones below it.
#[inline(always)]
fn trailing_zeros(x: u64) -> u32 {
    let below = (x & x.wrapping_neg()).wrapping_sub(1);
    let mut v = below - ((below >> 1) & 0x5555_5555_5555_5555);
    v = (v & 0x3333_3333_3333_3333) + ((v >> 2) & 0x3333_3333_3333_3333);
    v = (v + (v >> 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    (v.wrapping_mul(0x0101_0101_0101_0101) >> 56) as u32
}

#[inline(always)]
fn and_class(acc: &mut RuleBits, bank: u32, class: u32, words: usize) {
    if class >= MAX_CLASSES {
        return;
    }
    if let Some(bits) = ROUTE_CLASS_BITS.get(bank * MAX_CLASSES + class) {
        and_bits(acc, bits, words);
    }
}

/// ANDs all words, without a data-dependent loop bound: a bound read from a map gives the verifier a branch per
/// word per dimension, which multiplies into more states than it will explore.
#[inline(always)]
fn and_bits(acc: &mut RuleBits, bits: &RuleBits, _words: usize) {
    for w in 0..RULE_WORDS {
        acc.words[w] &= bits.words[w];
    }
}

#[inline(always)]
fn lpm_class(bank: u32, dimension: u32, addr: &[u8; 16], cfg: &RouteConfig) -> u32 {
    let mut data = [0u8; LPM_DATA];
    data[0] = bank as u8;
    data[1] = dimension as u8;
    data[4..].copy_from_slice(addr);
    let key = aya_ebpf::maps::lpm_trie::Key::new(LPM_KEY_PREFIX_BITS + 128, data);
    match ROUTE_LPM.get(&key) {
        Some(class) => *class,
        None => cfg.default_class[dimension as usize],
    }
}

#[inline(always)]
fn port_class(bank: u32, which: u32, port: u16) -> u32 {
    let index = bank * PORT_SLOTS + which * 65_536 + u32::from(port);
    ROUTE_PORT_CLASS.get(index).map_or(0, |c| *c as u32)
}

#[inline(always)]
fn small_class(bank: u32, slot: u32) -> u32 {
    ROUTE_SMALL_CLASS.get(bank * SMALL_SLOTS + slot).map_or(0, |c| *c as u32)
}

/// DSCP: the upper six bits of IPv4 TOS / IPv6 traffic class.
#[inline(always)]
fn dscp(input: &RouteInput) -> Option<u8> {
    let l3 = input.headers.l3;
    let [b0, b1] = load::<[u8; 2]>(input.start, input.end, l3).ok()?;
    Some(if input.headers.version == 4 { b1 >> 2 } else { ((b0 & 0x0F) << 4 | b1 >> 4) >> 2 })
}

/// The source MAC of an Ethernet frame entering from a LAN (a gateway-originated frame carries our own).
#[inline(always)]
fn source_mac(input: &RouteInput) -> Option<[u8; 6]> {
    if !input.ethernet || input.direction != Direction::LanIn {
        return None;
    }
    load::<[u8; 6]>(input.start, input.end, 6).ok()
}

const _: () = assert!(BANKS == 2, "bank & 1 selects a bank");
