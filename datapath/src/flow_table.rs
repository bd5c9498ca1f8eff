//! The flow table as userspace sees it: the kernel's `FLOWS` array, looked up one bucket at a time and walked
//! through a small moving mapping.
//!
//! A mapping of a BPF array is resident in full from the moment it exists: the kernel inserts every page at
//! `mmap` time (`remap_vmalloc_range`), and the mapping has no fault handler, so pages cannot be dropped after
//! use (`MADV_DONTNEED` makes the next access a SIGBUS). Mapped whole, the default table of 131,072 flows was
//! 12 MiB of the daemon's RSS whether or not a flow existed. So nothing maps it whole:
//!
//! - a lookup (once per accepted connection, new UDP flow or intercepted DNS query) copies the one bucket the
//!   key hashes to with `BPF_MAP_LOOKUP_ELEM`;
//! - a walk (the janitor every few seconds, `dae flows`) maps [`WINDOW_BUCKETS`] buckets at a time, scans them
//!   and unmaps them: 32 small mappings per pass over the default table instead of 12 MiB kept resident.
//!
//! Slots follow the protocol written down in `datapath_abi::flow`: the kernel claims and publishes, userspace
//! only ever turns VALID into EMPTY, with a compare-and-swap on the mapped state word.

use std::{
    io,
    ops::Range,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::maps::{Array, IterableMap, MapData};
use datapath_abi::{
    FlowBucket, FlowKey, FlowSlot, FlowTag,
    flow::{BUCKET_WAYS, SLOT_EMPTY, SLOT_VALID, bucket_of, flow_hash},
};

/// Buckets a walk maps at once: 384 KiB, a whole number of pages for 4, 16 and 64 KiB pages (so every window
/// starts on a page boundary, as `mmap` offsets must), small beside the 12 MiB of the default table.
pub const WINDOW_BUCKETS: u32 = 1024;
const _: () = assert!((WINDOW_BUCKETS as usize * size_of::<FlowBucket>()).is_multiple_of(64 * 1024));

/// The kernel's flow table.
pub struct FlowTable {
    array: Array<MapData, FlowBucket>,
    buckets: u32,
    writable: bool,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable").field("buckets", &self.buckets).field("writable", &self.writable).finish()
    }
}

/// What one expiry pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Valid slots looked at.
    pub scanned: usize,
    /// Slots freed.
    pub removed: usize,
}

impl FlowTable {
    /// Takes `map` (the `FLOWS` array); `writable` for the daemon (the janitor frees slots), read-only for
    /// inspection.
    pub fn new(map: MapData, writable: bool) -> io::Result<Self> {
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
        let array = Array::try_from(aya::maps::Map::Array(map)).map_err(io::Error::other)?;
        Ok(Self { array, buckets, writable })
    }

    /// Buckets in the table.
    pub fn buckets(&self) -> u32 {
        self.buckets
    }

    /// Slots in the table.
    pub fn capacity(&self) -> usize {
        self.buckets as usize * BUCKET_WAYS
    }

    fn fd(&self) -> BorrowedFd<'_> {
        IterableMap::map(&self.array).fd().as_fd()
    }

    /// The windows a walk maps, in order.
    fn windows(&self) -> impl Iterator<Item = Range<u32>> + use<> {
        let buckets = self.buckets;
        (0..buckets).step_by(WINDOW_BUCKETS as usize).map(move |first| first..buckets.min(first + WINDOW_BUCKETS))
    }

    /// Every valid flow. Flows created or removed during the walk may or may not appear.
    pub fn snapshot(&self) -> io::Result<Vec<(FlowKey, FlowTag)>> {
        let mut flows = Vec::new();
        for range in self.windows() {
            let window = Window::map(self.fd(), range, false)?;
            flows.extend((0..window.slots()).filter_map(|i| window.read(i)).map(|s| (s.key, s.tag)));
        }
        Ok(flows)
    }

    /// The tag of `key`, looked up the way the kernel does (bucket of its hash under `seed`): one copy of that
    /// bucket, one system call. A slot the kernel is writing while it is copied reads as not valid (its state
    /// word is copied first, and the kernel publishes VALID last) or its key does not match.
    pub fn lookup(&self, key: &FlowKey, seed: u64) -> Option<FlowTag> {
        let hash = flow_hash(key, seed);
        let bucket = self.array.get(&bucket_of(hash, self.buckets), 0).ok()?;
        bucket.slots.iter().find(|s| s.state == SLOT_VALID && s.hash == hash && s.key == *key).map(|s| s.tag)
    }

    /// Frees every valid slot for which `expired` says so. Needs a writable table.
    pub fn expire(&self, mut expired: impl FnMut(&FlowKey, &FlowTag) -> bool) -> io::Result<Sweep> {
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the flow table was opened read-only"));
        }
        let mut sweep = Sweep::default();
        for range in self.windows() {
            let window = Window::map(self.fd(), range, true)?;
            for i in 0..window.slots() {
                let Some(slot) = window.read(i) else { continue };
                sweep.scanned += 1;
                if expired(&slot.key, &slot.tag) && window.free(i) {
                    sweep.removed += 1;
                }
            }
        }
        Ok(sweep)
    }
}

/// A mapping of some buckets of the table, unmapped on drop.
struct Window {
    base: NonNull<FlowSlot>,
    bytes: usize,
    slots: usize,
}

impl Window {
    /// Maps `buckets` of the array behind `fd`; the first must be a multiple of [`WINDOW_BUCKETS`].
    fn map(fd: BorrowedFd<'_>, buckets: Range<u32>, writable: bool) -> io::Result<Self> {
        debug_assert!(buckets.start.is_multiple_of(WINDOW_BUCKETS));
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let offset = buckets.start as usize * size_of::<FlowBucket>();
        let bytes = (buckets.len() * size_of::<FlowBucket>()).div_ceil(page) * page;
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: mapping part of a BPF array created with BPF_F_MMAPABLE from its fd, at a page-aligned offset
        // (a multiple of WINDOW_BUCKETS buckets); the kernel checks offset, length and protection and keeps the
        // map alive while it is mapped.
        let addr = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, prot, libc::MAP_SHARED, fd.as_raw_fd(), offset as libc::off_t)
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(addr.cast::<FlowSlot>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, bytes, slots: buckets.len() * BUCKET_WAYS })
    }

    /// Slots in the window.
    fn slots(&self) -> usize {
        self.slots
    }

    fn slot(&self, index: usize) -> *mut FlowSlot {
        assert!(index < self.slots, "slot {index} outside a window of {}", self.slots);
        // SAFETY: index < slots, so the slot lies inside the mapping.
        unsafe { self.base.as_ptr().add(index) }
    }

    fn state(&self, index: usize) -> &AtomicU32 {
        // SAFETY: `state` is the 4-aligned first word of a slot inside the mapping; every side accesses it
        // atomically (the kernel with BPF atomics, which are the same machine instructions).
        unsafe { AtomicU32::from_ptr(&raw mut (*self.slot(index)).state) }
    }

    /// A consistent copy of a valid slot, or `None` if the slot is not valid or changed while being read.
    fn read(&self, index: usize) -> Option<FlowSlot> {
        if self.state(index).load(Ordering::Acquire) != SLOT_VALID {
            return None;
        }
        // SAFETY: the slot lies inside the mapping; the kernel may write counters concurrently, which a copy
        // tolerates (each field is read whole on 64-bit machines).
        let copy = unsafe { std::ptr::read_volatile(self.slot(index)) };
        (self.state(index).load(Ordering::Acquire) == SLOT_VALID).then_some(copy)
    }

    /// Turns a valid slot empty; false if it was no longer valid. Needs a writable mapping.
    fn free(&self, index: usize) -> bool {
        self.state(index).compare_exchange(SLOT_VALID, SLOT_EMPTY, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}
