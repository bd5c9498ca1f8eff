//! Datapath counters: one per-CPU `u64` slot per [`Counter`] in the `COUNTERS` array map.
//!
//! Only events off the common path are counted, so the per-packet cost stays a flow-table lookup. A closed gate
//! records nothing, counters included.

/// Index into the `COUNTERS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// A flow tag was created.
    FlowsCreated = 0,
    /// A new flow could not be tagged because the flow table was full; the packet passed untouched.
    FlowTableFull = 1,
    /// An IP packet that is neither TCP nor UDP passed untouched.
    NotTcpUdp = 2,
    /// An IP fragment passed untouched (not a UDP one, or a later fragment whose first was not seen).
    Fragment = 3,
    /// A packet whose headers were truncated or inconsistent passed untouched.
    Malformed = 4,
    /// A frame that is not IPv4/IPv6 (ARP, LLDP, ...) passed untouched.
    NotIp = 5,
    /// tc used the parse summary XDP left in the packet's metadata.
    XdpMetaUsed = 6,
    /// XDP could not reserve metadata room (driver without support); tc parsed the packet itself.
    XdpMetaUnavailable = 7,
    /// A packet of a flow decided `block` was dropped.
    Blocked = 8,
    /// XDP dropped a packet a leading address-only `block` rule matched.
    XdpBlocked = 9,
    /// A proxied flow's first packet was handed to a worker's socket.
    Steered = 10,
    /// A proxied flow could not be steered (no worker socket in its slot); it passed untouched.
    SteerNoSocket = 11,
    /// A later IP fragment followed its first fragment's decision (passed, marked for a worker or a route, or
    /// dropped).
    FragmentFollowed = 12,
    /// A reassembled datagram of a steered fragment train was handed to its worker's socket (`sk_lookup`).
    ReassembledSteered = 13,
}

/// Number of [`Counter`] slots; the `COUNTERS` map has exactly this many entries.
pub const COUNTER_SLOTS: u32 = 14;

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; COUNTER_SLOTS as usize] = [
        Counter::FlowsCreated,
        Counter::FlowTableFull,
        Counter::NotTcpUdp,
        Counter::Fragment,
        Counter::Malformed,
        Counter::NotIp,
        Counter::XdpMetaUsed,
        Counter::XdpMetaUnavailable,
        Counter::Blocked,
        Counter::XdpBlocked,
        Counter::Steered,
        Counter::SteerNoSocket,
        Counter::FragmentFollowed,
        Counter::ReassembledSteered,
    ];

    /// The metric name operators see.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::FlowsCreated => "flows_created",
            Counter::FlowTableFull => "flow_table_full",
            Counter::NotTcpUdp => "not_tcp_udp",
            Counter::Fragment => "fragment",
            Counter::Malformed => "malformed",
            Counter::NotIp => "not_ip",
            Counter::XdpMetaUsed => "xdp_meta_used",
            Counter::XdpMetaUnavailable => "xdp_meta_unavailable",
            Counter::Blocked => "blocked",
            Counter::XdpBlocked => "xdp_blocked",
            Counter::Steered => "steered",
            Counter::SteerNoSocket => "steer_no_socket",
            Counter::FragmentFollowed => "fragment_followed",
            Counter::ReassembledSteered => "reassembled_steered",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_indices_are_dense_and_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as u32, i as u32, "{}", c.name());
        }
    }
}
