//! Bounds and eviction of the cache.

use super::*;

fn entry(bytes: usize, lifetime: u64) -> NewEntry {
    let mut packed = vec![0u8; bytes.max(HEADER_LEN + 5)];
    packed[HEADER_LEN] = 0;
    NewEntry {
        packed: packed.into(),
        ttl_offsets: Box::default(),
        ttls: Box::default(),
        question_end: HEADER_LEN + 5,
        lifetime: Duration::from_secs(lifetime),
        domains: None,
    }
}

#[test]
fn entry_bound_evicts_unreferenced_entries_first() {
    let now = Instant::now();
    let mut cache = Cache::new(3, usize::MAX, Some(Duration::from_secs(60)), 1);
    for key in [b"a", b"b", b"c"] {
        cache.insert(key, entry(40, 60), now);
    }
    let mut out = Vec::new();
    let query = vec![0u8; HEADER_LEN + 5];
    assert_eq!(cache.lookup(b"a", now, &query, &mut out), Hit::Fresh);
    cache.insert(b"d", entry(40, 60), now);
    assert_eq!(cache.stats().entries, 3);
    assert!(cache.contains(b"a"), "referenced: second chance");
    assert!(!cache.contains(b"b"), "the first unreferenced entry went");
    assert_eq!(cache.stats().evicted, 1);
}

#[test]
fn byte_bound_holds_whatever_the_entry_count() {
    let now = Instant::now();
    let mut cache = Cache::new(1_000, 2_000, None, 1);
    for i in 0..100u32 {
        cache.insert(&i.to_le_bytes(), entry(300, 60), now);
        assert!(cache.stats().bytes <= 2_000);
    }
    assert!(cache.stats().entries >= 4);
}

#[test]
fn stale_entries_are_served_within_the_window_then_dropped() {
    let now = Instant::now();
    let mut cache = Cache::new(10, usize::MAX, Some(Duration::from_secs(5)), 1);
    cache.insert(b"k", entry(40, 10), now);
    let query = vec![0u8; HEADER_LEN + 5];
    let mut out = Vec::new();
    assert_eq!(cache.lookup(b"k", now + Duration::from_secs(12), &query, &mut out), Hit::Stale { refresh: true });
    assert_eq!(cache.lookup(b"k", now + Duration::from_secs(13), &query, &mut out), Hit::Stale { refresh: false });
    assert_eq!(cache.lookup(b"k", now + Duration::from_secs(16), &query, &mut out), Hit::Miss);
    assert!(!cache.contains(b"k"));
}

#[test]
fn zero_lifetime_is_not_stored() {
    let now = Instant::now();
    let mut cache = Cache::new(10, usize::MAX, None, 1);
    cache.insert(b"k", entry(40, 0), now);
    assert!(!cache.contains(b"k"));
}

#[test]
fn sweep_removes_entries_past_the_window_and_reports_their_domains() {
    let now = Instant::now();
    let mut cache = Cache::new(10, usize::MAX, Some(Duration::from_secs(1)), 1);
    let mut with_domains = entry(40, 1);
    with_domains.domains =
        Some(DomainFacts { addrs: vec![IpAddr::from([1, 2, 3, 4])].into(), names: vec![Box::from("a.b")].into() });
    cache.insert(b"k", with_domains, now);
    cache.sweep(now + Duration::from_secs(3), 100);
    assert!(!cache.contains(b"k"));
    assert_eq!(cache.take_removed().count(), 1);
}
