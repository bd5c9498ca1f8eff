//! The flow table as userspace sees it: the kernel's `FLOWS` array mapped into this process.
//!
//! Reading a flow or expiring one is a memory access, not a system call: a janitor pass over 131,072 slots
//! touches 12 MiB of memory instead of making a quarter of a million `bpf()` calls. Slots follow the protocol
//! written down in `datapath_abi::flow`: the kernel claims and publishes, userspace only ever turns VALID into
//! EMPTY, with a compare-and-swap.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::maps::MapData;
use datapath_abi::{
    FlowBucket, FlowKey, FlowSlot, FlowTag,
    flow::{BUCKET_WAYS, SLOT_EMPTY, SLOT_VALID, bucket_of, flow_hash},
};

/// A mapping of the kernel's flow table.
#[derive(Debug)]
pub struct FlowTable {
    base: NonNull<FlowBucket>,
    buckets: u32,
    len: usize,
}

// SAFETY: the mapping is shared memory that every access reads or writes through volatile or atomic
// operations; it stays valid until Drop unmaps it.
unsafe impl Send for FlowTable {}
// SAFETY: as above.
unsafe impl Sync for FlowTable {}

/// What one expiry pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Valid slots looked at.
    pub scanned: usize,
    /// Slots freed.
    pub removed: usize,
}

impl FlowTable {
    /// Maps `map` (the `FLOWS` array); `writable` for the daemon, read-only for inspection.
    pub fn map(map: &MapData, writable: bool) -> io::Result<Self> {
        let info = map.info().map_err(io::Error::other)?;
        if info.value_size() as usize != size_of::<FlowBucket>() {
            return Err(io::Error::other(format!(
                "FLOWS holds {}-byte values; this build expects {}-byte buckets (another dae-rs version?)",
                info.value_size(),
                size_of::<FlowBucket>()
            )));
        }
        let buckets = info.max_entries();
        if !buckets.is_power_of_two() {
            return Err(io::Error::other(format!("FLOWS has {buckets} buckets, not a power of two")));
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let len = (buckets as usize * size_of::<FlowBucket>()).div_ceil(page) * page;
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: mapping a BPF array created with BPF_F_MMAPABLE from its fd; the kernel checks length and
        // protection and keeps the map alive while it is mapped.
        let addr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, map.fd().as_fd().as_raw_fd(), 0) };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(addr.cast::<FlowBucket>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, buckets, len })
    }

    /// Buckets in the table.
    pub fn buckets(&self) -> u32 {
        self.buckets
    }

    /// Slots in the table.
    pub fn capacity(&self) -> usize {
        self.buckets as usize * BUCKET_WAYS
    }

    fn slot(&self, index: usize) -> *mut FlowSlot {
        debug_assert!(index < self.capacity());
        // SAFETY: index < capacity, so the slot lies inside the mapping.
        unsafe { self.base.as_ptr().cast::<FlowSlot>().add(index) }
    }

    fn state(&self, slot: *mut FlowSlot) -> &AtomicU32 {
        // SAFETY: `state` is the 4-aligned first word of a slot inside the mapping; every side accesses it
        // atomically (the kernel with BPF atomics, which are the same machine instructions).
        unsafe { AtomicU32::from_ptr(&raw mut (*slot).state) }
    }

    /// A consistent copy of a valid slot, or `None` if the slot is not valid or changed while being read.
    fn read(&self, index: usize) -> Option<FlowSlot> {
        let slot = self.slot(index);
        if self.state(slot).load(Ordering::Acquire) != SLOT_VALID {
            return None;
        }
        // SAFETY: the slot lies inside the mapping; the kernel may write counters concurrently, which a copy
        // tolerates (each field is read whole on 64-bit machines).
        let copy = unsafe { std::ptr::read_volatile(slot) };
        (self.state(slot).load(Ordering::Acquire) == SLOT_VALID).then_some(copy)
    }

    /// Every valid flow. Flows created or removed during the walk may or may not appear.
    pub fn snapshot(&self) -> Vec<(FlowKey, FlowTag)> {
        (0..self.capacity()).filter_map(|i| self.read(i)).map(|s| (s.key, s.tag)).collect()
    }

    /// The tag of `key`, looked up the way the kernel does (bucket of its hash under `seed`).
    pub fn lookup(&self, key: &FlowKey, seed: u64) -> Option<FlowTag> {
        let hash = flow_hash(key, seed);
        let first = bucket_of(hash, self.buckets) as usize * BUCKET_WAYS;
        (first..first + BUCKET_WAYS)
            .filter_map(|i| self.read(i))
            .find(|s| s.hash == hash && s.key == *key)
            .map(|s| s.tag)
    }

    /// Frees every valid slot for which `expired` says so. Needs a writable mapping.
    pub fn expire(&self, mut expired: impl FnMut(&FlowKey, &FlowTag) -> bool) -> Sweep {
        let mut sweep = Sweep::default();
        for i in 0..self.capacity() {
            let Some(slot) = self.read(i) else { continue };
            sweep.scanned += 1;
            if expired(&slot.key, &slot.tag)
                && self
                    .state(self.slot(i))
                    .compare_exchange(SLOT_VALID, SLOT_EMPTY, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                sweep.removed += 1;
            }
        }
        sweep
    }
}

impl Drop for FlowTable {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
