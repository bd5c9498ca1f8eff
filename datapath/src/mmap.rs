//! BPF arrays created with `BPF_F_MMAPABLE`, mapped into this process as typed memory.

use std::{
    io,
    marker::PhantomData,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use aya::maps::MapData;

/// A mapping of a BPF array of `T`. Elements are read and written with volatile accesses: the kernel reads the
/// same memory concurrently.
///
/// The whole mapping counts in the process's RSS from `mmap` until drop: the kernel inserts every page up front
/// (`remap_vmalloc_range`) and cannot take one back (no fault handler; `MADV_DONTNEED` turns the next access into
/// a SIGBUS). Keep a large array mapped only while it is being written.
#[derive(Debug)]
pub struct MappedArray<T> {
    base: NonNull<T>,
    len: usize,
    bytes: usize,
    _t: PhantomData<T>,
}

// SAFETY: shared memory accessed only through volatile reads and writes; valid until Drop unmaps it.
unsafe impl<T: Send> Send for MappedArray<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for MappedArray<T> {}

impl<T: Copy> MappedArray<T> {
    /// Maps `map`, which must be an mmap-able array whose values are `T` (checked).
    pub fn map(map: &MapData, writable: bool) -> io::Result<Self> {
        let info = map.info().map_err(io::Error::other)?;
        if info.value_size() as usize != size_of::<T>() {
            return Err(io::Error::other(format!(
                "map {:?} holds {}-byte values, this build expects {} (another dae-rs version?)",
                info.name_as_str(),
                info.value_size(),
                size_of::<T>()
            )));
        }
        // BPF arrays lay values out at a stride of the value size rounded up to 8 bytes; only types whose size is
        // already a multiple of 8 map onto a plain Rust array.
        if !size_of::<T>().is_multiple_of(8) {
            return Err(io::Error::other(format!("{}-byte values are padded to 8 in BPF arrays", size_of::<T>())));
        }
        let len = info.max_entries() as usize;
        let stride = size_of::<T>();
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let bytes = (len * stride).div_ceil(page) * page;
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: mapping an mmap-able BPF array from its fd; the kernel checks length and protection.
        let addr =
            unsafe { libc::mmap(std::ptr::null_mut(), bytes, prot, libc::MAP_SHARED, map.fd().as_fd().as_raw_fd(), 0) };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(addr.cast::<T>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, len, bytes, _t: PhantomData })
    }

    /// Elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i`.
    pub fn get(&self, i: usize) -> T {
        assert!(i < self.len, "index {i} out of {}", self.len);
        // SAFETY: i < len, inside the mapping.
        unsafe { std::ptr::read_volatile(self.base.as_ptr().add(i)) }
    }

    /// Writes element `i` (needs a writable mapping).
    pub fn set(&self, i: usize, value: T) {
        assert!(i < self.len, "index {i} out of {}", self.len);
        // SAFETY: i < len, inside the mapping, which was mapped writable by the daemon.
        unsafe { std::ptr::write_volatile(self.base.as_ptr().add(i), value) }
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}
