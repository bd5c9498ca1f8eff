//! The ifindex -> link cache (DESIGN.md invariant 4: interfaces are names, an ifindex is a cache).
//!
//! The control thread owns a [`LinkCache`] and applies netlink events to it; every change publishes a new
//! immutable [`LinkTable`] snapshot. Readers hold a [`LinkReader`] each: a lookup is one atomic load to see
//! whether a newer snapshot exists plus a hash probe, with no lock and no shared counter written, so readers
//! on different cores never contend (`perf`: `ifname_lookup_ratio_vs_rwlock`, `ifname_lookup_scaling_2t`).

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::Arc,
};

use arc_swap::{ArcSwap, Cache};

/// How frames on a link start, which decides the program variant attached to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// Ethernet header (`ARPHRD_ETHER`, loopback).
    Ethernet,
    /// No link-layer header: the IP header comes first (tun, WireGuard, PPP, IP tunnels).
    Raw,
    /// Another link type; not attached to.
    Unsupported(u16),
}

impl Framing {
    /// Framing of an `ARPHRD_*` link type.
    pub fn from_arphrd(link_type: u16) -> Self {
        const ARPHRD_ETHER: u16 = 1;
        const ARPHRD_PPP: u16 = 512;
        const ARPHRD_TUNNEL: u16 = 768;
        const ARPHRD_TUNNEL6: u16 = 769;
        const ARPHRD_IPGRE: u16 = 778;
        const ARPHRD_LOOPBACK: u16 = 772;
        const ARPHRD_RAWIP: u16 = 519;
        const ARPHRD_NONE: u16 = 0xFFFE;
        match link_type {
            ARPHRD_ETHER | ARPHRD_LOOPBACK => Framing::Ethernet,
            ARPHRD_NONE | ARPHRD_PPP | ARPHRD_TUNNEL | ARPHRD_TUNNEL6 | ARPHRD_IPGRE | ARPHRD_RAWIP => Framing::Raw,
            other => Framing::Unsupported(other),
        }
    }
}

/// What the datapath knows about one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Kernel interface index.
    pub index: u32,
    /// Interface name.
    pub name: Arc<str>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Frame layout.
    pub framing: Framing,
    /// Id of the XDP program attached to it, as the last RTM_NEWLINK reported (`IFLA_XDP_PROG_ID`).
    pub xdp_prog_id: Option<u32>,
}

/// Multiplicative hashing for interface indexes: small dense integers need no SipHash.
#[derive(Default, Clone, Copy, Debug)]
pub struct IfindexHasher(u64);

impl Hasher for IfindexHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IndexMap<V> = HashMap<u32, V, BuildHasherDefault<IfindexHasher>>;

/// Interface indexes below this are looked up by direct indexing; the kernel hands out small indexes first, so
/// almost every link on a gateway lands here (larger ones fall back to a hash map).
const DENSE_INDEXES: usize = 1024;

/// An immutable snapshot of the links of one network namespace.
#[derive(Clone, Debug, Default)]
pub struct LinkTable {
    by_index: IndexMap<Link>,
    /// `dense[i]` mirrors `by_index[i]` for `i < DENSE_INDEXES`, so the common lookup is one bounds check.
    dense: Vec<Option<Link>>,
}

impl LinkTable {
    /// The link with this index.
    #[inline]
    pub fn get(&self, index: u32) -> Option<&Link> {
        match self.dense.get(index as usize) {
            Some(slot) => slot.as_ref(),
            None if (index as usize) < DENSE_INDEXES => None,
            None => self.by_index.get(&index),
        }
    }

    fn insert(&mut self, link: Link) -> Option<Link> {
        let index = link.index as usize;
        if index < DENSE_INDEXES {
            if self.dense.len() <= index {
                self.dense.resize(index + 1, None);
            }
            self.dense[index] = Some(link.clone());
        }
        self.by_index.insert(link.index, link)
    }

    fn remove(&mut self, index: u32) -> Option<Link> {
        if let Some(slot) = self.dense.get_mut(index as usize) {
            *slot = None;
        }
        self.by_index.remove(&index)
    }

    /// The link with this name (names are unique within a namespace).
    pub fn by_name(&self, name: &str) -> Option<&Link> {
        self.by_index.values().find(|l| &*l.name == name)
    }

    /// Every link, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Link> {
        self.by_index.values()
    }

    /// Number of links.
    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    /// Whether there are no links.
    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }
}

/// What one applied event changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkChange {
    /// A new index appeared.
    Added(Link),
    /// A known index changed name, state, framing or XDP program.
    Updated {
        /// Before.
        old: Link,
        /// After.
        new: Link,
    },
    /// An index went away.
    Removed(Link),
    /// Nothing changed.
    Unchanged,
}

/// The writer side: owned by the control thread.
#[derive(Debug, Default)]
pub struct LinkCache {
    current: Arc<ArcSwap<LinkTable>>,
}

impl LinkCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// A reader for one thread.
    pub fn reader(&self) -> LinkReader {
        LinkReader { cache: Cache::new(Arc::clone(&self.current)) }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<LinkTable> {
        self.current.load_full()
    }

    /// Applies RTM_NEWLINK. A different index holding the same name is dropped: the name was re-created and
    /// its DELLINK was missed (the periodic reconcile would otherwise find it).
    pub fn upsert(&self, link: Link) -> Vec<LinkChange> {
        let mut table = LinkTable::clone(&self.current.load());
        let mut changes = Vec::new();
        let stale: Vec<u32> =
            table.by_index.values().filter(|l| l.name == link.name && l.index != link.index).map(|l| l.index).collect();
        for index in stale {
            if let Some(old) = table.remove(index) {
                changes.push(LinkChange::Removed(old));
            }
        }
        match table.insert(link.clone()) {
            None => changes.push(LinkChange::Added(link)),
            Some(old) if old != link => changes.push(LinkChange::Updated { old, new: link }),
            Some(_) => {}
        }
        if !changes.is_empty() {
            self.current.store(Arc::new(table));
        }
        changes
    }

    /// Applies RTM_DELLINK.
    pub fn remove(&self, index: u32) -> LinkChange {
        let mut table = LinkTable::clone(&self.current.load());
        match table.remove(index) {
            Some(old) => {
                self.current.store(Arc::new(table));
                LinkChange::Removed(old)
            }
            None => LinkChange::Unchanged,
        }
    }

    /// Replaces the whole table with a fresh dump; returns what differed (events that were missed).
    pub fn replace_all(&self, links: Vec<Link>) -> Vec<LinkChange> {
        let old = self.current.load_full();
        let mut table = LinkTable::default();
        for link in links {
            table.insert(link);
        }
        let mut changes = Vec::new();
        for link in table.by_index.values() {
            match old.get(link.index) {
                None => changes.push(LinkChange::Added(link.clone())),
                Some(prev) if prev != link => {
                    changes.push(LinkChange::Updated { old: prev.clone(), new: link.clone() })
                }
                Some(_) => {}
            }
        }
        for prev in old.iter() {
            if table.get(prev.index).is_none() {
                changes.push(LinkChange::Removed(prev.clone()));
            }
        }
        if !changes.is_empty() || old.is_empty() {
            self.current.store(Arc::new(table));
        }
        changes
    }
}

/// The reader side: one per thread, never locks.
#[derive(Clone)]
pub struct LinkReader {
    cache: Cache<Arc<ArcSwap<LinkTable>>, Arc<LinkTable>>,
}

impl std::fmt::Debug for LinkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkReader").finish_non_exhaustive()
    }
}

impl LinkReader {
    /// The name of interface `index`, borrowed from the current snapshot.
    #[inline]
    pub fn name(&mut self, index: u32) -> Option<&str> {
        self.cache.load().get(index).map(|l| &*l.name)
    }

    /// The current snapshot.
    #[inline]
    pub fn table(&mut self) -> &LinkTable {
        self.cache.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str) -> Link {
        Link { index, name: name.into(), up: true, framing: Framing::Ethernet, xdp_prog_id: None }
    }

    #[test]
    fn reader_sees_rename_without_relock() {
        let cache = LinkCache::new();
        let mut reader = cache.reader();
        cache.upsert(link(7, "lan0"));
        assert_eq!(reader.name(7), Some("lan0"));
        let changes = cache.upsert(link(7, "lan9"));
        assert!(
            matches!(&changes[..], [LinkChange::Updated { old, new }] if &*old.name == "lan0" && &*new.name == "lan9")
        );
        assert_eq!(reader.name(7), Some("lan9"));
    }

    #[test]
    fn recreated_name_with_new_index_replaces_the_stale_index() {
        let cache = LinkCache::new();
        cache.upsert(link(7, "lan0"));
        let changes = cache.upsert(link(9, "lan0"));
        assert_eq!(changes.len(), 2);
        assert!(matches!(&changes[0], LinkChange::Removed(l) if l.index == 7));
        assert!(matches!(&changes[1], LinkChange::Added(l) if l.index == 9));
        let mut reader = cache.reader();
        assert_eq!(reader.name(7), None);
        assert_eq!(reader.name(9), Some("lan0"));
    }

    #[test]
    fn replace_all_reports_missed_events() {
        let cache = LinkCache::new();
        cache.upsert(link(1, "lo"));
        cache.upsert(link(2, "gone"));
        cache.upsert(link(3, "old"));
        let mut changes = cache.replace_all(vec![link(1, "lo"), link(3, "new"), link(4, "added")]);
        changes.sort_by_key(|c| match c {
            LinkChange::Added(l) | LinkChange::Removed(l) | LinkChange::Updated { new: l, .. } => l.index,
            LinkChange::Unchanged => 0,
        });
        assert!(matches!(&changes[..], [
            LinkChange::Removed(a), LinkChange::Updated { new: b, .. }, LinkChange::Added(c)
        ] if a.index == 2 && &*b.name == "new" && c.index == 4));
    }

    #[test]
    fn large_indexes_use_the_sparse_map() {
        let cache = LinkCache::new();
        cache.upsert(link(70_000, "far0"));
        cache.upsert(link(3, "near0"));
        let mut reader = cache.reader();
        assert_eq!(reader.name(70_000), Some("far0"));
        assert_eq!(reader.name(3), Some("near0"));
        assert_eq!(reader.name(4), None);
        assert_eq!(reader.name(1023), None);
        cache.remove(70_000);
        assert_eq!(reader.name(70_000), None);
    }

    #[test]
    fn remove_of_unknown_index_changes_nothing() {
        let cache = LinkCache::new();
        assert_eq!(cache.remove(42), LinkChange::Unchanged);
    }

    #[test]
    fn framing_follows_link_type() {
        assert_eq!(Framing::from_arphrd(1), Framing::Ethernet);
        assert_eq!(Framing::from_arphrd(0xFFFE), Framing::Raw);
        assert_eq!(Framing::from_arphrd(512), Framing::Raw);
        assert_eq!(Framing::from_arphrd(801), Framing::Unsupported(801));
    }
}
