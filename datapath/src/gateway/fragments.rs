//! Fragmented UDP datagrams of proxied flows (see `datapath_abi::steer`): tc marks a steered train for local
//! delivery, the kernel reassembles it there and forgets the socket assignment on the way, so an `sk_lookup`
//! program on the daemon's network namespace hands the whole datagram to its flow's worker socket.

use std::fs::File;

use aya::programs::SkLookup;
use datapath_abi::names::PROG_SK_LOOKUP_REASM;
use tracing::info;

/// Attaches the `sk_lookup` program to the daemon's network namespace; the link lives as long as the loaded
/// object (the daemon).
pub fn attach(ebpf: &mut aya::Ebpf) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let program: &mut SkLookup =
        ebpf.program_mut(PROG_SK_LOOKUP_REASM).ok_or("sk_lookup_reasm missing from the object")?.try_into()?;
    let netns = File::open("/proc/self/ns/net")?;
    program.attach(&netns)?;
    info!("fragmented UDP datagrams of proxied flows are reassembled and relayed (sk_lookup attached)");
    Ok(())
}
