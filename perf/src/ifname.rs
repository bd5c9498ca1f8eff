//! ifindex -> name lookups: the lock-free [`LinkCache`] reader against `RwLock<HashMap>`, both while a writer
//! applies 1,000 updates per second, in the same run.

use std::{
    collections::HashMap,
    hint::black_box,
    sync::{
        Arc, Barrier, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use datapath::links::{Framing, Link, LinkCache, LinkReader};

use crate::report::{Figure, median};

/// Links in the table (a large gateway).
const LINKS: u32 = 64;
/// Lookups per reader per round.
const LOOKUPS: u32 = 5_000_000;
/// Rounds; the median is reported.
const ROUNDS: usize = 5;
/// Writer pace: one update per millisecond.
const WRITE_EVERY: Duration = Duration::from_millis(1);

fn link(index: u32, generation: u32) -> Link {
    Link {
        index,
        name: format!("lan{index}g{generation}").into(),
        up: true,
        framing: Framing::Ethernet,
        xdp_prog_id: None,
    }
}

type Locked = RwLock<HashMap<u32, Arc<str>>>;

/// One contender: a per-thread reader, a lookup, an update. A trait (not function pointers) so each lookup is
/// inlined into the measuring loop and the harness adds no indirect call to either side.
trait Contender: Send + Sync + 'static {
    type Reader;
    fn reader(&self) -> Self::Reader;
    fn lookup(&self, reader: &mut Self::Reader, index: u32) -> usize;
    fn update(&self, index: u32, generation: u32);
}

impl Contender for LinkCache {
    type Reader = LinkReader;
    fn reader(&self) -> LinkReader {
        LinkCache::reader(self)
    }
    #[inline]
    fn lookup(&self, reader: &mut LinkReader, index: u32) -> usize {
        reader.name(index).map_or(0, str::len)
    }
    fn update(&self, index: u32, generation: u32) {
        self.upsert(link(index, generation));
    }
}

impl Contender for Locked {
    type Reader = ();
    fn reader(&self) {}
    #[inline]
    fn lookup(&self, _: &mut (), index: u32) -> usize {
        self.read().unwrap_or_else(|e| e.into_inner()).get(&index).map_or(0, |n| n.len())
    }
    fn update(&self, index: u32, generation: u32) {
        self.write().unwrap_or_else(|e| e.into_inner()).insert(index, link(index, generation).name);
    }
}

/// ns per lookup for each of `threads` concurrent readers (the slowest thread's time over its lookups).
fn measure<T: Contender>(table: &Arc<T>, threads: usize) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (table, stop) = (Arc::clone(table), Arc::clone(&stop));
        thread::spawn(move || {
            let mut next = Instant::now();
            let mut generation = 0u32;
            while !stop.load(Ordering::Relaxed) {
                generation = generation.wrapping_add(1);
                table.update(1 + generation % LINKS, generation);
                next += WRITE_EVERY;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
            }
        })
    };
    let barrier = Arc::new(Barrier::new(threads));
    let readers: Vec<_> = (0..threads)
        .map(|_| {
            let (table, barrier) = (Arc::clone(table), Arc::clone(&barrier));
            thread::spawn(move || {
                let mut reader = table.reader();
                barrier.wait();
                let start = Instant::now();
                let mut sum = 0usize;
                for i in 0..LOOKUPS {
                    sum = sum.wrapping_add(table.lookup(&mut reader, 1 + i % LINKS));
                }
                black_box(sum);
                start.elapsed()
            })
        })
        .collect();
    let slowest = readers.into_iter().map(|r| r.join().unwrap_or_default()).max().unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    slowest.as_nanos() as f64 / f64::from(LOOKUPS)
}

/// The figures `ifname_lookup_ns`, `ifname_lookup_ratio_vs_rwlock`, `ifname_lookup_scaling_2t`.
pub fn bench() -> Vec<Figure> {
    let cache = Arc::new(LinkCache::new());
    let locked: Arc<Locked> = Arc::new(RwLock::new(HashMap::new()));
    for i in 1..=LINKS {
        cache.update(i, 0);
        locked.update(i, 0);
    }
    let (mut ours1, mut ours2, mut lock1, mut lock2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours1.push(measure(&cache, 1));
        lock1.push(measure(&locked, 1));
        ours2.push(measure(&cache, 2));
        lock2.push(measure(&locked, 2));
    }
    let (ours1, ours2, lock1, lock2) = (median(&mut ours1), median(&mut ours2), median(&mut lock1), median(&mut lock2));
    // Throughput with two readers over one: each reader's ns/op is its own, so 2 threads give 2/ns2 lookups/ns.
    let scaling = |one: f64, two: f64| (2.0 / two) / (1.0 / one);
    vec![
        Figure { name: "ifname_lookup_ns".into(), value: ours1, unit: "ns", baseline: lock1, ratio: ours1 / lock1 },
        Figure {
            name: "ifname_lookup_ratio_vs_rwlock".into(),
            value: lock1 / ours1,
            unit: "x",
            baseline: 1.0,
            ratio: lock1 / ours1,
        },
        Figure {
            name: "ifname_lookup_scaling_2t".into(),
            value: scaling(ours1, ours2),
            unit: "x",
            baseline: scaling(lock1, lock2),
            ratio: scaling(ours1, ours2) / scaling(lock1, lock2),
        },
    ]
}
