//! `Compiled::decide` allocates nothing once warm: every golden packet and the benchmark packet are routed
//! under an allocator that counts allocations made by this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use config::rules::{Assets, Compiled, bench_mix, bench_packet, golden, lower};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only an atomic and a
// const-initialised thread-local without destructor, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(work: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.with(|counting| counting.set(true));
    work();
    COUNTING.with(|counting| counting.set(false));
    ALLOCATIONS.load(Ordering::Relaxed)
}

#[test]
fn deciding_a_packet_allocates_nothing() {
    let mut compiled = Vec::new();
    for case in golden::cases() {
        compiled.push((Compiled::new(&case.rule_set()), case));
    }
    let loaded = config::load_str("mix.dae", &bench_mix(100)).unwrap();
    let mix = Compiled::new(&lower(&loaded.config, &Assets::none()).unwrap().rules);
    let packet = bench_packet();
    let route_all = || {
        for (rules, case) in &compiled {
            for check in &case.checks {
                std::hint::black_box(rules.decide(&check.packet));
            }
        }
        std::hint::black_box(mix.decide(&packet));
    };
    // A regular expression allocates its matching cache on its first use (regex-lite keeps it for reuse);
    // from then on nothing is allocated.
    route_all();
    assert_eq!(allocations_during(route_all), 0);
    assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8]))) > 0, "the counter counts");
}
