//! Interrupt moderation for a worker's loop: when load is high enough that queries keep coming but each
//! wake-up finds only a few, a short pause after answering them lets the next few queue, so one
//! `recvmmsg`/`sendmmsg` pair (and one wake-up of each client) carries a batch, and answers to one client leave
//! as one GSO send. Most of the CPU per cached query at 50k qps is per wake-up and per datagram in the kernel
//! (docs/dns.md); the pause trades a bounded latency for fewer of both.
//!
//! Sans-IO: [`Moderation::after_turn`] takes the time and the datagrams a turn brought and says how long to
//! pause; the worker sleeps.

use std::time::{Duration, Instant};

/// The batch a pause aims for: recvmmsg/sendmmsg costs flatten out around 8 (honk measured vlen 8 -> 16 as
/// +1.8%), and at 50k qps 8 queries queue in 160 µs.
pub const TARGET_BATCH: u64 = 8;
/// Below this arrival rate (datagrams per second) a worker never pauses: a lone query is never held.
pub const MIN_RATE: f64 = 5_000.0;
/// After a turn that left no query waiting on an upstream, the batch aimed for and the bound are this many times
/// larger.
pub const IDLE_UPSTREAM_SCALE: u32 = 3;
/// After a turn that left queries waiting on an upstream, the bound is this many times larger (the batch aimed for
/// stays [`TARGET_BATCH`]): those queries' answers come back within the pause only from an upstream a few tens of
/// µs away; from a real one (milliseconds) the pause holds only the queries that follow, and a miss already waits
/// far longer than it. At 10k misses a second it cut CPU per miss by about a quarter (24.4 against 32.0 µs) for
/// about 180 µs more median latency in the lab (docs/dns.md).
pub const IN_FLIGHT_SCALE: u32 = 2;
/// The arrival rate is measured over windows of this length.
pub const RATE_WINDOW: Duration = Duration::from_millis(10);

/// The pause policy of one worker.
#[derive(Debug, Clone)]
pub struct Moderation {
    bound: Duration,
    window_start: Instant,
    window_count: u64,
    /// Datagrams per second over the last full window.
    rate: f64,
}

impl Moderation {
    /// A policy whose pauses never exceed `bound` (zero: never pause).
    pub fn new(bound: Duration, now: Instant) -> Self {
        Self { bound, window_start: now, window_count: 0, rate: 0.0 }
    }

    /// A loop turn at `now` read `arrived` client datagrams (and answered what it could): how long to pause
    /// before the next wait. A pause happens only when the turn brought a few datagrams (some, but fewer than
    /// [`TARGET_BATCH`]) while the measured rate is at least [`MIN_RATE`]; it lasts about the time
    /// [`TARGET_BATCH`] more take to arrive, and never longer than [`IN_FLIGHT_SCALE`] times the bound. When
    /// `upstream_idle` (no query waits on an upstream answer, so the pause holds only the next queries, most of
    /// them answered from the cache, and never an upstream's answer) the batch aimed for and the bound are both
    /// [`IDLE_UPSTREAM_SCALE`] times larger. An idle worker and a worker whose turns already bring full batches
    /// never pause.
    pub fn after_turn(&mut self, now: Instant, arrived: u64, upstream_idle: bool) -> Option<Duration> {
        self.window_count += arrived;
        let window = now.saturating_duration_since(self.window_start);
        if window >= RATE_WINDOW {
            self.rate = self.window_count as f64 / window.as_secs_f64();
            self.window_start = now;
            self.window_count = 0;
        }
        if self.bound.is_zero() || arrived == 0 || arrived >= TARGET_BATCH || self.rate < MIN_RATE {
            return None;
        }
        // Nothing waits on an upstream: only answers from the cache are held, and they may be held longer.
        let (bound, target) = if upstream_idle {
            (self.bound * IDLE_UPSTREAM_SCALE, TARGET_BATCH * u64::from(IDLE_UPSTREAM_SCALE))
        } else {
            (self.bound * IN_FLIGHT_SCALE, TARGET_BATCH)
        };
        let pause = Duration::from_secs_f64(target as f64 / self.rate).min(bound);
        (!pause.is_zero()).then_some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_micros(100);

    /// Feeds `turns` turns of `per_turn` datagrams, `gap` apart; the pauses asked for.
    fn drive(
        moderation: &mut Moderation,
        start: Instant,
        turns: u32,
        gap: Duration,
        per_turn: u64,
    ) -> Vec<Option<Duration>> {
        (1..=turns).map(|i| moderation.after_turn(start + gap * i, per_turn, false)).collect()
    }

    #[test]
    fn an_idle_worker_never_pauses_a_lone_query() {
        let start = Instant::now();
        let mut moderation = Moderation::new(Duration::from_millis(50), start);
        // One query every 10 ms: 100/s, far below the threshold.
        assert!(drive(&mut moderation, start, 100, Duration::from_millis(10), 1).iter().all(Option::is_none));
    }

    #[test]
    fn under_load_small_turns_pause_within_the_bound() {
        let start = Instant::now();
        let in_flight_bound = BOUND * IN_FLIGHT_SCALE;
        let mut moderation = Moderation::new(BOUND, start);
        // Two datagrams every 80 µs: 25k/s, a miss in flight after each turn.
        let pauses = drive(&mut moderation, start, 1_000, Duration::from_micros(80), 2);
        let paused: Vec<Duration> = pauses.iter().flatten().copied().collect();
        // Every turn from the end of the first rate window (10 ms = 125 turns) on pauses.
        assert_eq!(paused.len(), 876, "pauses once the rate is known");
        assert!(paused.iter().all(|p| *p <= in_flight_bound), "never past the bound");
        // 8 datagrams at 25k/s take 320 µs: the bound (twice BOUND with misses in flight) governs.
        assert_eq!(paused.last(), Some(&in_flight_bound));
        // Two every 40 µs (50k/s): 8 take 160 µs, within it: the pause is the time TARGET_BATCH take to arrive.
        let mut faster = Moderation::new(BOUND, start);
        let last = drive(&mut faster, start, 1_000, Duration::from_micros(40), 2).last().copied().flatten().unwrap();
        assert!((150..=170).contains(&last.as_micros()), "{last:?}");
    }

    #[test]
    fn with_nothing_waiting_upstream_pauses_three_times_longer() {
        let start = Instant::now();
        // Two datagrams every 80 µs (25k/s): 8 more take 320 µs, past twice the 100 µs bound (a miss in flight);
        // 24 take 960 µs, past three times it (none).
        let gap = Duration::from_micros(80);
        let mut moderation = Moderation::new(BOUND, start);
        drive(&mut moderation, start, 500, gap, 2);
        let in_flight = moderation.after_turn(start + gap * 501, 2, false);
        assert_eq!(in_flight, Some(BOUND * IN_FLIGHT_SCALE), "a miss in flight: twice the bound");
        assert_eq!(moderation.after_turn(start + gap * 502, 2, true), Some(BOUND * IDLE_UPSTREAM_SCALE));
        // Two every 20 µs (100k/s): 8 take 80 µs, 24 take 240 µs, both within their bounds.
        let gap = Duration::from_micros(20);
        let mut moderation = Moderation::new(BOUND, start);
        drive(&mut moderation, start, 1_000, gap, 2);
        let busy = moderation.after_turn(start + gap * 1_001, 2, false).unwrap();
        let idle = moderation.after_turn(start + gap * 1_002, 2, true).unwrap();
        assert!((75..=85).contains(&busy.as_micros()), "{busy:?}");
        assert!((230..=250).contains(&idle.as_micros()), "{idle:?}");
    }

    #[test]
    fn full_batches_and_a_zero_bound_never_pause() {
        let start = Instant::now();
        let mut moderation = Moderation::new(BOUND, start);
        assert!(
            drive(&mut moderation, start, 1_000, Duration::from_micros(100), TARGET_BATCH).iter().all(Option::is_none)
        );
        let mut off = Moderation::new(Duration::ZERO, start);
        assert!(drive(&mut off, start, 1_000, Duration::from_micros(40), 2).iter().all(Option::is_none));
    }

    #[test]
    fn a_turn_without_client_datagrams_never_pauses() {
        let start = Instant::now();
        let mut moderation = Moderation::new(BOUND, start);
        drive(&mut moderation, start, 1_000, Duration::from_micros(40), 2);
        // An upstream answer or a timer woke the worker: nothing to batch with.
        assert_eq!(moderation.after_turn(start + Duration::from_millis(41), 0, false), None);
    }
}
