//! The one kernel/userspace ABI of dae-rs.
//!
//! Every type and constant that crosses the boundary between the eBPF programs (`datapath-ebpf`) and the
//! loader (`datapath`) is defined here, once, and used by both sides (DESIGN.md, invariant 1). Each
//! `#[repr(C)]` struct writes its byte layout down in its documentation and carries `const` asserts of its size,
//! alignment and key field offsets, so a change that moves a field fails to compile instead of corrupting a map.
//!
//! Conventions shared by every type here:
//! - IP addresses are 16 bytes in network byte order; an IPv4 address is stored IPv4-mapped (`::ffff:a.b.c.d`),
//!   so one key type serves both families.
//! - Ports are stored as they appear on the wire (network byte order) so the kernel never swaps bytes.
//! - Kernel times are ticks (jiffies, `bpf_jiffies64`, free in the kernel); [`gate::Admission`] carries the tick
//!   rate and a tick/`CLOCK_MONOTONIC_COARSE` sample for userspace to convert.
#![no_std]

pub mod counters;
pub mod flow;
pub mod gate;
pub mod meta;
pub mod names;
#[cfg(feature = "user")]
mod pod;
pub mod route;
pub mod steer;

pub use counters::Counter;
pub use flow::{Direction, FlowBucket, FlowKey, FlowSlot, FlowTag};
pub use gate::Admission;
pub use meta::XdpMeta;

/// Asserts the size and alignment of an ABI type at compile time.
#[macro_export]
macro_rules! assert_layout {
    ($ty:ty, size = $size:expr, align = $align:expr) => {
        const _: () = assert!(core::mem::size_of::<$ty>() == $size);
        const _: () = assert!(core::mem::align_of::<$ty>() == $align);
    };
}

/// Asserts the byte offset of a field of an ABI type at compile time.
#[macro_export]
macro_rules! assert_offset {
    ($ty:ty, $field:ident, $offset:expr) => {
        const _: () = assert!(core::mem::offset_of!($ty, $field) == $offset);
    };
}
