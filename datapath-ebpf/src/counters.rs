//! Counting events off the common path.

use datapath_abi::Counter;

use crate::maps::COUNTERS;

/// Adds one to `counter` on this CPU.
#[inline(always)]
pub fn bump(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer is a per-CPU array slot owned by this CPU for the duration of the program.
        unsafe { *slot += 1 };
    }
}
