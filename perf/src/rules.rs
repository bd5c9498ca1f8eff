//! The userspace rule matcher ([`config::rules::Compiled`]) on the benchmark mix at 10, 100 and 1000 match
//! sets, with a packet no rule matches (every rule is tried; it takes the fallback), against the reference
//! evaluation on the same rules and packet; and parse + lower of the 1000-set configuration against parsing
//! alone.

use std::hint::black_box;
use std::time::{Duration, Instant};

use config::rules::{Assets, Compiled, RuleSet, bench_mix, bench_packet, lower, reference};

use crate::report::{Figure, median};

/// Rule-mix sizes, in match sets (dae's count: one per IP set, per port, per function).
const SIZES: [usize; 3] = [10, 100, 1000];
/// Rounds per figure; the median is reported.
const ROUNDS: usize = 5;
/// Each round runs for at least this long.
const ROUND_TIME: Duration = Duration::from_millis(200);

/// ns per call of `work`, over at least [`ROUND_TIME`] (the batch doubles until it is reached).
fn ns_per_call(mut work: impl FnMut()) -> f64 {
    let mut batch = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            work();
        }
        let elapsed = start.elapsed();
        if elapsed >= ROUND_TIME {
            return elapsed.as_nanos() as f64 / batch as f64;
        }
        batch *= 2;
    }
}

fn median_of(mut work: impl FnMut() -> f64) -> f64 {
    let mut samples: Vec<f64> = (0..ROUNDS).map(|_| work()).collect();
    median(&mut samples)
}

fn rule_set(text: &str) -> RuleSet {
    let loaded = config::load_str("bench.dae", text).expect("the benchmark mix loads");
    lower(&loaded.config, &Assets::none()).expect("the benchmark mix lowers").rules
}

/// `rules_match_ns_<n>` (compiled matcher, baseline the reference evaluation; lower ratio is better) and
/// `rules_parse_lower_ms_1000` (baseline parsing alone).
pub fn bench() -> Vec<Figure> {
    let packet = bench_packet();
    let mut figures = Vec::new();
    for size in SIZES {
        let rules = rule_set(&bench_mix(size));
        let compiled = Compiled::new(&rules);
        assert_eq!(compiled.route(&packet), reference::route(&rules, &packet), "engines agree on the bench packet");
        let ours = median_of(|| {
            ns_per_call(|| {
                black_box(compiled.decide(black_box(&packet)));
            })
        });
        let baseline = median_of(|| {
            ns_per_call(|| {
                black_box(reference::route(&rules, black_box(&packet)));
            })
        });
        figures.push(Figure {
            name: format!("rules_match_ns_{size}"),
            value: ours,
            unit: "ns",
            baseline,
            ratio: ours / baseline,
        });
    }
    let text = bench_mix(1000);
    let parse = median_of(|| {
        ns_per_call(|| {
            black_box(config::load_str("bench.dae", black_box(&text)).is_ok());
        })
    });
    let parse_lower = median_of(|| {
        ns_per_call(|| {
            black_box(rule_set(black_box(&text)));
        })
    });
    let ms = |ns: f64| ns / 1e6;
    figures.push(Figure {
        name: "rules_parse_lower_ms_1000".into(),
        value: ms(parse_lower),
        unit: "ms",
        baseline: ms(parse),
        ratio: parse_lower / parse,
    });
    let rules = rule_set(&text);
    let compile = median_of(|| {
        ns_per_call(|| {
            black_box(Compiled::new(black_box(&rules)));
        })
    });
    figures.push(Figure {
        name: "rules_compile_ms_1000".into(),
        value: ms(compile),
        unit: "ms",
        baseline: ms(parse_lower),
        ratio: compile / parse_lower,
    });
    figures
}
