//! Flow tagging: find the flow's slot in its bucket and refresh it, or claim an empty slot for it.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xchg};

use datapath_abi::{
    Counter, Direction, FlowKey, FlowTag,
    flow::{BUCKET_WAYS, FLOW_F_TCP_CLOSING, FLOW_F_TCP_SYN, SLOT_BUSY, SLOT_EMPTY, SLOT_VALID, bucket_of, flow_hash},
    route::RouteAction,
};

use crate::{
    counters,
    maps::{FLOWS, flow_buckets, flow_hash_seed},
};

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Where a packet is and which way it goes.
#[derive(Clone, Copy)]
pub struct Place {
    /// Tagging direction.
    pub direction: Direction,
    /// Ingress interface (0 for locally originated).
    pub ingress_ifindex: u32,
    /// Egress interface (0 if not known).
    pub egress_ifindex: u32,
}

/// The routing decision a flow carries: what every packet of it gets.
#[derive(Clone, Copy)]
pub struct Decision {
    /// The flow's hash (a flow always lands on the same worker).
    pub hash: u32,
    /// `route::outbound::*`.
    pub outbound: u8,
    /// Firewall mark to set (0: none).
    pub mark: u32,
    /// The flow tag's `FLOW_F_*` bits.
    pub flags: u8,
}

/// Records one packet of the flow `key` at `now` ticks and returns the flow's decision; `refresh` is the
/// last-seen refresh interval in ticks. `route` and `egress` are asked only when the flow is new (`egress` only
/// when the hook does not know the egress interface): a flow keeps the decision of its first packet, across
/// reloads too.
#[inline(always)]
pub fn record(
    key: &FlowKey,
    tcp_flags: u8,
    len: u32,
    place: Place,
    now: u64,
    refresh: u64,
    route: impl FnOnce() -> RouteAction,
    egress: impl FnOnce() -> u32,
) -> Decision {
    let hash = flow_hash(key, flow_hash_seed());
    let Some(bucket) = FLOWS.get_ptr_mut(bucket_of(hash, flow_buckets())) else {
        let action = route();
        return Decision { hash, outbound: action.outbound, mark: action.mark, flags: 0 };
    };
    // SAFETY: a live array element; other CPUs touch it only through the slot protocol below.
    let bucket = unsafe { &mut *bucket };
    let closing = tcp_flags & (TCP_FIN | TCP_RST) != 0;
    for i in 0..BUCKET_WAYS {
        let slot = &mut bucket.slots[i];
        // SAFETY: the state word of a live slot. A volatile load is a plain load in BPF (the target has no
        // atomic 32-bit load below cpu v4); a stale read costs at most one duplicate slot, never a wrong tag.
        let state = unsafe { core::ptr::read_volatile(&slot.state) };
        if state == SLOT_VALID && slot.hash == hash && slot.key.same(key) {
            let tag = &mut slot.tag;
            tag.packets += 1;
            tag.bytes += u64::from(len);
            if now.wrapping_sub(tag.last_seen) >= refresh {
                tag.last_seen = now;
            }
            if closing && tag.flags & FLOW_F_TCP_CLOSING == 0 {
                tag.flags |= FLOW_F_TCP_CLOSING;
            }
            return Decision { hash, outbound: tag.outbound, mark: tag.mark, flags: tag.flags };
        }
    }
    let action = route();
    for i in 0..BUCKET_WAYS {
        let slot = &mut bucket.slots[i];
        let state: *mut u32 = &mut slot.state;
        // SAFETY: the state word of a live slot, only ever accessed atomically. The target has no `AtomicU32`
        // (no CAS in its spec), but the kernel has BPF_CMPXCHG, which these intrinsics lower to.
        let claimed = unsafe {
            core::ptr::read_volatile(state) == SLOT_EMPTY
                && atomic_cxchg::<u32, { AtomicOrdering::Acquire }, { AtomicOrdering::Relaxed }>(
                    state, SLOT_EMPTY, SLOT_BUSY,
                )
                .1
        };
        if !claimed {
            continue;
        }
        let egress_ifindex = if place.egress_ifindex == 0 { egress() } else { place.egress_ifindex };
        let syn = tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        let flags = if closing { FLOW_F_TCP_CLOSING } else { 0 } | if syn { FLOW_F_TCP_SYN } else { 0 };
        slot.hash = hash;
        slot.key = *key;
        slot.tag = FlowTag {
            first_seen: now,
            last_seen: now,
            packets: 1,
            bytes: u64::from(len),
            ingress_ifindex: place.ingress_ifindex,
            egress_ifindex,
            mark: action.mark,
            direction: place.direction as u8,
            flags,
            outbound: action.outbound,
            route_flags: action.flags,
        };
        // Publish: an exchange is a full barrier, so lookups that see VALID see the key and tag.
        // SAFETY: as above.
        unsafe { atomic_xchg::<u32, { AtomicOrdering::Release }>(state, SLOT_VALID) };
        counters::bump(Counter::FlowsCreated);
        return Decision { hash, outbound: action.outbound, mark: action.mark, flags };
    }
    // No room: the packet is still routed, just not remembered.
    counters::bump(Counter::FlowTableFull);
    Decision { hash, outbound: action.outbound, mark: action.mark, flags: 0 }
}
