//! The forwarder against an upstream that misbehaves on purpose (root; lab namespaces): drops, delays past the
//! retry timeout, answers with a wrong ID or for a different question, truncates, and resets TCP connections in
//! the middle of a pipeline. Every client query must get the right answer or SERVFAIL within its timeout, no
//! upstream slot may leak, and the cache must never hold an answer to another question.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bench_lab::topology::Topology;
use common::{Forwarder, skip};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

const DELAY: Duration = Duration::from_millis(1_500);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(6);
const PER_KIND: u32 = 40;

/// The address the upstream gives `kind-n.*`.
fn address_of(n: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 7, (n / 250) as u8, (n % 250) as u8 + 1)
}

fn parse_label(name: &str) -> (String, u32) {
    let first = name.split('.').next().unwrap_or_default();
    let (kind, n) = first.rsplit_once('-').unwrap_or((first, "0"));
    (kind.to_owned(), n.parse().unwrap_or(0))
}

fn respond(query: &Message, name: &Name, ip: Ipv4Addr) -> Message {
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.authoritative = true;
    response.add_query(Query::query(name.clone(), RecordType::A));
    response.add_answer(Record::from_rdata(name.clone(), 300, RData::A(A(ip))));
    response
}

/// UDP behaviour by the first label of the name.
fn serve_udp(socket: UdpSocket, stop: Arc<AtomicBool>) {
    socket.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let mut delayed: Vec<(Instant, Vec<u8>, SocketAddr)> = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        delayed.retain(|(due, bytes, to)| {
            if *due <= now {
                let _ = socket.send_to(bytes, to);
                false
            } else {
                true
            }
        });
        let Ok((len, from)) = socket.recv_from(&mut buf) else { continue };
        let Ok(query) = Message::from_vec(&buf[..len]) else { continue };
        let Some(question) = query.queries.first() else { continue };
        let name = question.name().clone();
        let (kind, n) = parse_label(&name.to_ascii());
        let good = respond(&query, &name, address_of(n)).to_vec().unwrap();
        match kind.as_str() {
            "drop" => {}
            "delay" => delayed.push((now + DELAY, good, from)),
            "wrongid" => {
                let mut wrong = good.clone();
                wrong[..2].copy_from_slice(&query.metadata.id.wrapping_add(1).to_be_bytes());
                let _ = socket.send_to(&wrong, from);
                let _ = socket.send_to(&good, from);
            }
            "wrongq" => {
                let other = Name::from_ascii(format!("other-{n}.fault.test.")).unwrap();
                let lie = respond(&query, &other, Ipv4Addr::new(6, 6, 6, 6)).to_vec().unwrap();
                let _ = socket.send_to(&lie, from);
                delayed.push((now + Duration::from_millis(20), good, from));
            }
            "trunc" => {
                let mut truncated = Message::response(query.metadata.id, query.metadata.op_code);
                truncated.metadata.truncation = true;
                truncated.add_query(question.clone());
                let _ = socket.send_to(&truncated.to_vec().unwrap(), from);
            }
            _ => {
                let _ = socket.send_to(&good, from);
            }
        }
    }
}

/// TCP: answers in pipeline order, except that `drop-*` is never answered and `reset-*` resets the connection on the spot (RST, not FIN).
fn serve_tcp(listener: TcpListener, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let stop = stop.clone();
                std::thread::spawn(move || serve_conn(stream, &stop));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve_conn(mut stream: TcpStream, stop: &AtomicBool) {
    stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut pending = Vec::new();
    let mut buf = [0u8; 8192];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                continue;
            }
            Err(_) => return,
        }
        while pending.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
            if pending.len() < 2 + len {
                break;
            }
            let frame: Vec<u8> = pending.drain(..2 + len).skip(2).collect();
            let Ok(query) = Message::from_vec(&frame) else { return };
            let name = query.queries[0].name().clone();
            let (kind, n) = parse_label(&name.to_ascii());
            if kind == "drop" {
                continue;
            }
            if kind == "reset" {
                let socket = socket2::SockRef::from(&stream);
                let _ = socket.set_linger(Some(Duration::ZERO));
                return;
            }
            let good = respond(&query, &name, address_of(n)).to_vec().unwrap();
            let mut framed = (good.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&good);
            if stream.write_all(&framed).is_err() {
                return;
            }
        }
    }
}

struct Asked {
    name: String,
    answer: Option<Message>,
}

/// Sends every name at once from one socket and collects answers until all came or the timeout passed.
fn ask_all(server: SocketAddr, names: &[String]) -> Vec<Asked> {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect(server).unwrap();
    let mut asked: Vec<Asked> = names.iter().map(|name| Asked { name: name.clone(), answer: None }).collect();
    for (id, name) in names.iter().enumerate() {
        let mut query = Message::query();
        query.metadata.id = id as u16;
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        socket.send(&query.to_vec().unwrap()).unwrap();
    }
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut buf = [0u8; 4096];
    let mut open = names.len();
    while open > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left)).unwrap();
        let Ok(len) = socket.recv(&mut buf) else { break };
        let message = Message::from_vec(&buf[..len]).unwrap();
        let slot = &mut asked[usize::from(message.metadata.id)];
        if slot.answer.is_none() {
            open -= 1;
        }
        slot.answer = Some(message);
    }
    asked
}

#[test]
fn misbehaving_upstream_every_query_gets_its_own_answer_or_servfail_and_nothing_leaks() {
    if skip("misbehaving_upstream_every_query_gets_its_own_answer_or_servfail_and_nothing_leaks", &[]) {
        return;
    }
    let topo = Topology::with_lans(1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server_ip = topo.server_v4;
    let (udp_stop, tcp_stop) = (stop.clone(), stop.clone());
    let udp = topo.server.spawn_in(move || serve_udp(UdpSocket::bind((server_ip, 5353)).unwrap(), udp_stop));
    let tcp = topo.server.spawn_in(move || serve_tcp(TcpListener::bind((server_ip, 5353)).unwrap(), tcp_stop));
    let config = format!(
        "global {{}}\ndns {{ bind: '0.0.0.0:53'\n upstream {{ faulty: 'tcp+udp://{server_ip}:5353'\n tcp: 'tcp://{server_ip}:5353' }}\n \
         routing {{ request {{ qname(suffix: tcp.fault.test) -> tcp\n fallback: faulty }} }} }}"
    );
    let mut forwarder = Forwarder::start(&topo.gateway, &config, &["--workers", "1"]);
    let kinds = ["ok", "drop", "delay", "wrongid", "wrongq", "trunc"];
    let mut names: Vec<String> = Vec::new();
    for kind in kinds {
        names.extend((0..PER_KIND).map(|n| format!("{kind}-{n}.fault.test.")));
    }
    names.extend((0..PER_KIND).map(|n| format!("ok-{n}.tcp.fault.test.")));
    names.extend((0..PER_KIND / 4).map(|n| format!("reset-{n}.tcp.fault.test.")));
    let lan = topo.lan();
    let server = SocketAddr::from((lan.gateway_v4, 53));
    let names_for_client = names.clone();
    let asked = lan.client.run_in(move || ask_all(server, &names_for_client)).unwrap();
    let mut by_outcome: HashMap<String, u32> = HashMap::new();
    for asked in &asked {
        let answer =
            asked.answer.as_ref().unwrap_or_else(|| panic!("{} got no answer within {CLIENT_TIMEOUT:?}", asked.name));
        assert_eq!(answer.queries[0].name().to_ascii(), asked.name, "an answer to its own question");
        let (kind, n) = parse_label(&asked.name);
        let code = answer.metadata.response_code;
        *by_outcome.entry(format!("{kind}:{code:?}")).or_default() += 1;
        match code {
            ResponseCode::NoError => {
                assert!(kind != "drop" && kind != "reset", "{}: a dropped or reset query cannot succeed", asked.name);
                let ips: Vec<Ipv4Addr> = answer
                    .answers
                    .iter()
                    .filter_map(|r| if let RData::A(a) = &r.data { Some(a.0) } else { None })
                    .collect();
                assert_eq!(ips, vec![address_of(n)], "{}: its own address", asked.name);
            }
            // Queries that share pipelined connections with `reset-*` are bystanders: a break spends an attempt
            // of the oldest unanswered query only, so they are re-sent until answered.
            ResponseCode::ServFail => {
                assert!(["drop", "reset"].contains(&kind.as_str()), "{}: SERVFAIL where an answer was due", asked.name)
            }
            other => panic!("{}: unexpected {other:?}", asked.name),
        }
    }
    eprintln!("outcomes: {by_outcome:?}");
    // Every question the upstream lied about is cached under its own name with its own address.
    let wrongq: Vec<String> = (0..PER_KIND).map(|n| format!("wrongq-{n}.fault.test.")).collect();
    let again = lan.client.run_in(move || ask_all(server, &wrongq)).unwrap();
    for asked in again {
        let answer = asked.answer.expect("cached answer");
        assert_eq!(answer.queries[0].name().to_ascii(), asked.name);
        assert!(answer.answers.iter().all(|r| r.name.to_ascii() == asked.name), "no foreign record in {}", asked.name);
    }
    let stats = forwarder.settled_stats(Duration::from_secs(10));
    assert_eq!(stats["in_flight"], 0, "{stats}");
    assert_eq!(stats["upstream_pending"], 0, "no pending slot leaked: {stats}");
    assert!(stats["mismatched_datagrams"].as_u64().unwrap() >= u64::from(PER_KIND), "{stats}");
    // Discarded: each wrong question (mismatched), each wrong ID, and each delayed query's first answer (it
    // arrives after the 1.2 s attempt timeout: late). A wrong ID (the real one + 1) that happens to be pending
    // for another query counts as mismatched, and one that happens to be a recently retired, quarantined ID
    // counts as late (with ~300 random IDs in use, about one run in five), so the three counters are summed.
    let discarded = stats["unexpected_datagrams"].as_u64().unwrap()
        + stats["mismatched_datagrams"].as_u64().unwrap()
        + stats["late_datagrams"].as_u64().unwrap();
    assert!(discarded >= 3 * u64::from(PER_KIND), "every wrong ID, wrong question and late answer discarded: {stats}");
    assert!(stats["late_datagrams"].as_u64().unwrap() >= 1, "delayed answers arrived late: {stats}");
    assert!(
        stats["tcp_broken"].as_u64().unwrap() >= u64::from(PER_KIND / 4),
        "every reset broke a connection: {stats}"
    );
    assert!(stats["tcp_bystanders"].as_u64().unwrap() >= 1, "queries orphaned by resets were re-sent: {stats}");
    assert!(stats["tcp_fallbacks"].as_u64().unwrap() >= u64::from(PER_KIND), "{stats}");
    stop.store(true, Ordering::Relaxed);
    udp.join().unwrap().unwrap();
    tcp.join().unwrap().unwrap();
}
