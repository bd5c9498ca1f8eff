//! The worker's batching on loopback, without root: interrupt moderation (`Options::coalesce`) makes paced
//! queries share wake-ups while no query waits much past the bound, and runs of answers to one client leave as
//! UDP GSO sends that still arrive as separate, intact answers. Queries are answered by a `reject` rule (an
//! empty NOERROR at once), so no upstream is needed.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use config::rules::Assets;
use dns::Service;
use dns::service::{Handle, Options, STATS_EVERY, WorkerStats};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

const WAIT: Duration = Duration::from_secs(5);

/// The tests measure wake-ups and latencies: one at a time, so they do not take each other's cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn start(coalesce: Duration, gso: bool) -> (Handle, SocketAddr) {
    let text = "global {} dns { routing { request { fallback: reject } } }";
    let loaded = config::load_str("t.dae", text).unwrap();
    let dns_config = config::dns::lower(&loaded.config, &Assets::none()).unwrap().dns;
    let bind = config::dns::Bind { addr: "127.0.0.1:0".parse().unwrap(), udp: true, tcp: false };
    let options = Options { workers: 1, coalesce, gso, extra_binds: vec![bind], ..Options::for_config(&loaded.config) };
    let handle = Service::start(dns_config, options, None).unwrap();
    let addr = handle.local_addrs().iter().find(|(_, proto)| *proto == "udp").unwrap().0;
    (handle, addr)
}

/// A query for `q{id:05}.batch.test` (every name the same length, so every answer the same size).
fn query(id: u16) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(format!("q{id:05}.batch.test.")).unwrap(), RecordType::A));
    message.to_vec().unwrap()
}

/// Counters once the worker has published everything up to now.
fn settled(handle: &Handle) -> WorkerStats {
    std::thread::sleep(STATS_EVERY * 2);
    handle.worker_stats()[0]
}

/// Sends `count` queries `gap` apart from one socket while another thread reads the answers; the latency of
/// each query by ID.
fn paced(server: SocketAddr, count: u16, gap: Duration) -> HashMap<u16, Duration> {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(server).unwrap();
    client.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let sent_at: Arc<Mutex<HashMap<u16, Instant>>> = Arc::default();
    let reader = {
        let client = client.try_clone().unwrap();
        let sent_at = sent_at.clone();
        std::thread::spawn(move || {
            let mut latencies = HashMap::new();
            let mut buf = [0u8; 512];
            while latencies.len() < usize::from(count) {
                let Ok(len) = client.recv(&mut buf) else { break };
                let at = Instant::now();
                let message = Message::from_vec(&buf[..len]).unwrap();
                assert_eq!(message.metadata.response_code, ResponseCode::NoError);
                let id = message.metadata.id;
                let sent = sent_at.lock().unwrap()[&id];
                latencies.insert(id, at - sent);
            }
            latencies
        })
    };
    let start = Instant::now();
    for id in 0..count {
        // Pace by the clock, not by sleeps (a sleep overruns by the timer slack).
        let due = start + gap * u32::from(id);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        sent_at.lock().unwrap().insert(id, Instant::now());
        client.send(&query(id)).unwrap();
    }
    reader.join().unwrap()
}

fn percentile(latencies: &HashMap<u16, Duration>, p: f64) -> Duration {
    let mut sorted: Vec<Duration> = latencies.values().copied().collect();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// Paced queries (10k/s, above the 5k/s threshold) through a worker with moderation `bound`: (wake-ups,
/// median latency).
fn paced_run(bound: Duration, count: u16) -> (u64, Duration) {
    let (handle, server) = start(bound, true);
    let latencies = paced(server, count, Duration::from_micros(100));
    let stats = settled(&handle);
    handle.stop();
    assert_eq!(latencies.len(), usize::from(count), "every query answered");
    assert_eq!(stats.answers_out, u64::from(count));
    (stats.wakeups, percentile(&latencies, 0.5))
}

#[test]
fn moderation_makes_paced_queries_share_wakeups_within_the_bound() {
    let _serial = serial();
    const COUNT: u16 = 4_000;
    const BOUND: Duration = Duration::from_millis(2);
    // The same load without moderation is the baseline, measured in the same test.
    let (alone, alone_p50) = paced_run(Duration::ZERO, COUNT);
    let (moderated, p50) = paced_run(BOUND, COUNT);
    eprintln!(
        "wake-ups for {COUNT} queries: {alone} without moderation (p50 {alone_p50:?}), {moderated} with (p50 {p50:?})"
    );
    // A pause aims at 8 queries (800 µs at this rate, under the bound).
    assert!(moderated * 4 < u64::from(COUNT), "{moderated} wake-ups for {COUNT} queries");
    assert!(moderated * 2 < alone, "{moderated} wake-ups with moderation, {alone} without");
    // The median query waits at most one pause (plus the sleep's timer slack and scheduling on a shared machine).
    assert!(p50 <= BOUND + Duration::from_millis(1), "p50 {p50:?} within the bound");
}

#[test]
fn a_lone_query_is_never_held_even_with_a_long_bound() {
    let _serial = serial();
    // A bound far longer than a query's round trip: holding a lone query would show.
    let (handle, server) = start(Duration::from_millis(200), true);
    let latencies = paced(server, 20, Duration::from_millis(20));
    handle.stop();
    assert_eq!(latencies.len(), 20);
    let worst = percentile(&latencies, 1.0);
    assert!(worst < Duration::from_millis(100), "worst {worst:?}: an idle worker does not pause");
}

#[test]
fn bursts_to_one_client_leave_as_gso_runs_and_arrive_whole() {
    let _serial = serial();
    let (handle, server) = start(Duration::ZERO, true);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(server).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    const BURSTS: u16 = 20;
    const PER_BURST: u16 = 32;
    let mut buf = [0u8; 512];
    for burst in 0..BURSTS {
        let ids = burst * PER_BURST..(burst + 1) * PER_BURST;
        for id in ids.clone() {
            client.send(&query(id)).unwrap();
        }
        let mut answered = Vec::new();
        for _ in ids.clone() {
            let len = client.recv(&mut buf).unwrap();
            let message = Message::from_vec(&buf[..len]).expect("a whole DNS message per datagram");
            assert_eq!(message.queries[0].name().to_ascii(), format!("q{:05}.batch.test.", message.metadata.id));
            answered.push(message.metadata.id);
        }
        // One client's answers leave in the order their queries came.
        assert_eq!(answered, ids.collect::<Vec<_>>());
    }
    let stats = settled(&handle);
    handle.stop();
    let total = u64::from(BURSTS * PER_BURST);
    assert_eq!(stats.answers_out, total);
    // How many queries a wake-up finds depends on scheduling; some turns find several (without GSO every answer
    // is its own message).
    assert!(stats.answer_messages_out < total, "{} messages for {total} answers", stats.answer_messages_out);
}
