//! The userspace side of the dae-rs datapath and its composition root.
//!
//! - [`object`] embeds the eBPF object that `build.rs` built, [`attach`] loads its programs and attaches them,
//!   [`maps`] holds typed handles on its maps, [`state`] the instance lock and pin directory.
//! - [`links`] is the lock-free ifindex -> link cache, kept current by [`netlink`] events.
//! - [`daemon`] is `dae run`'s control loop ([`features`]: the device features it turns on for LAN links); [`flows`] reads the flow table for the janitor and `dae flows`.
//!
//! The `dae` binary (`src/main.rs`) is the command-line front end.

pub mod attach;
pub mod clock;
pub mod daemon;
pub mod features;
pub mod flow_table;
pub mod flows;
pub mod gateway;
pub mod links;
pub mod maps;
pub mod mmap;
pub mod netlink;
pub mod object;
pub mod routing;
pub mod selection;
pub mod state;
