//! The core driven in memory: an upstream that answers, drops, delays, lies about IDs and questions, truncates
//! and resets; clients that arrive together, from different interfaces, beyond the admission bound.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use config::rules::Assets;
use hickory_proto::op::{Edns, Message, MessageType, Query as HQuery, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::*;

const LAN_A: &str = "lan0";
const LAN_B: &str = "lan1";

fn dns_config(body: &str) -> DnsConfig {
    let text = format!("global {{ lan_interface: lan0, lan1 }}\ndns {{\n{body}\n}}\n");
    let loaded = config::load_str("t.dae", &text).unwrap();
    config::dns::lower(&loaded.config, &Assets::none()).unwrap().dns
}

const TWO_UPSTREAMS: &str = "upstream { a: 'udp://10.0.0.1:53'
                                  b: 'udp://10.0.0.2:53'
                                  t: 'tcp://10.0.0.3:53'
                                  both: 'tcp+udp://10.0.0.4:53' }
     routing { request { qname(suffix: tcp.test) -> t
                         qname(suffix: both.test) -> both
                         qname(suffix: reject.test) -> reject
                         interface(lan: lan1) -> b
                         fallback: a } }";

fn query_bytes(name: &str, qtype: RecordType, id: u16) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(HQuery::query(Name::from_ascii(name).unwrap(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    message.set_edns(edns);
    message.to_vec().unwrap()
}

/// An authoritative answer to `query`: A records 192.0.2.x (x from the name's length) with `ttl`.
fn answer(query: &[u8], ttl: u32) -> Vec<u8> {
    let request = Message::from_vec(query).unwrap();
    let question = request.queries[0].clone();
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(question.clone());
    if question.query_type() == RecordType::A {
        let last = question.name().to_ascii().len() as u8;
        response.add_answer(Record::from_rdata(
            question.name().clone(),
            ttl,
            RData::A(A(Ipv4Addr::new(192, 0, 2, last))),
        ));
    }
    response.to_vec().unwrap()
}

fn nxdomain(query: &[u8], soa_ttl: u32, minimum: u32) -> Vec<u8> {
    let request = Message::from_vec(query).unwrap();
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.response_code = ResponseCode::NXDomain;
    response.add_query(request.queries[0].clone());
    let zone = Name::from_ascii("test.").unwrap();
    let soa = SOA::new(
        Name::from_ascii("ns.test.").unwrap(),
        Name::from_ascii("admin.test.").unwrap(),
        1,
        3600,
        600,
        86400,
        minimum,
    );
    response.add_authority(Record::from_rdata(zone, soa_ttl, RData::SOA(soa)));
    response.to_vec().unwrap()
}

struct Harness {
    core: Core,
    now: Instant,
    answers: Vec<(ClientAddr, Vec<u8>)>,
    udp: Vec<(SocketId, Vec<u8>)>,
    udp_open: HashMap<SocketId, SocketAddr>,
    udp_closed: Vec<SocketId>,
    tcp_connects: Vec<(ConnId, SocketAddr)>,
    tcp_sent: Vec<(ConnId, Vec<u8>)>,
}

fn client(port: u16) -> ClientAddr {
    ClientAddr { peer: SocketAddr::from(([192, 168, 1, 10], port)), local: None, ifindex: 0, listener: 0, tcp: None }
}

impl Harness {
    fn new(body: &str, settings: Settings) -> Self {
        let dns = Arc::new(dns_config(body));
        let router = Arc::new(DnsRouter::new(&dns));
        let now = Instant::now();
        Self {
            core: Core::new(dns, router, settings, 7, now),
            now,
            answers: Vec::new(),
            udp: Vec::new(),
            udp_open: HashMap::new(),
            udp_closed: Vec::new(),
            tcp_connects: Vec::new(),
            tcp_sent: Vec::new(),
        }
    }

    fn default() -> Self {
        Self::new(TWO_UPSTREAMS, Settings::default())
    }

    fn ask_on(&mut self, name: &str, id: u16, port: u16, interface: Option<&str>) -> Option<Vec<u8>> {
        let message = query_bytes(name, RecordType::A, id);
        let cx = QueryContext {
            client: client(port),
            direction: interface.map(|_| PacketDirection::LanIn),
            interface,
            original_dst: None,
        };
        let mut reply = Vec::new();
        let handled = self.core.handle_query(self.now, &message, &cx, &mut reply);
        self.drain();
        (handled == Handled::Answered).then_some(reply)
    }

    fn ask(&mut self, name: &str, id: u16) -> Option<Vec<u8>> {
        self.ask_on(name, id, 40_000 + id, None)
    }

    fn drain(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Answer { client, payload } => self.answers.push((client, payload)),
                Output::UdpOpen { socket, remote } => {
                    self.udp_open.insert(socket, remote);
                }
                Output::UdpSend { socket, payload } => self.udp.push((socket, payload)),
                Output::UdpClose { socket } => self.udp_closed.push(socket),
                Output::TcpConnect { conn, remote, .. } => self.tcp_connects.push((conn, remote)),
                Output::TcpSend { conn, payload } => self.tcp_sent.push((conn, payload)),
                Output::TcpClose { .. } => {}
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.core.handle_timeout(self.now);
        self.drain();
    }

    /// Answers every UDP query sent so far with `respond`.
    fn upstream_answers(&mut self, respond: impl Fn(&[u8]) -> Option<Vec<u8>>) {
        let sent = std::mem::take(&mut self.udp);
        for (socket, query) in sent {
            if let Some(response) = respond(&query) {
                self.core.handle_udp(self.now, socket, &response);
            }
        }
        self.drain();
    }

    fn rcode_of_answer(&self, index: usize) -> ResponseCode {
        Message::from_vec(&self.answers[index].1).unwrap().metadata.response_code
    }

    fn assert_no_leaks(&self) {
        assert_eq!(self.core.stats().in_flight, 0, "every client query was answered");
        assert_eq!(self.core.flights(), 0, "no flight left behind");
        assert_eq!(self.core.upstream_pending(), 0, "no pending upstream slot leaked");
    }
}

fn answered_a(message: &[u8]) -> Vec<Ipv4Addr> {
    Message::from_vec(message)
        .unwrap()
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[test]
fn miss_goes_upstream_once_and_the_next_query_is_a_cache_hit_with_its_own_id() {
    let mut h = Harness::default();
    assert!(h.ask("www.example.com.", 100).is_none());
    assert_eq!(h.udp.len(), 1);
    let upstream_id = wire::id(&h.udp[0].1);
    assert_ne!(upstream_id, 100, "the upstream sees a fresh random ID");
    h.upstream_answers(|q| Some(answer(q, 60)));
    assert_eq!(h.answers.len(), 1);
    assert_eq!(wire::id(&h.answers[0].1), 100);
    let hit = h.ask("WWW.Example.COM.", 101).expect("cache hit answers at once");
    assert_eq!(wire::id(&hit), 101);
    let parsed = Message::from_vec(&hit).unwrap();
    assert_eq!(parsed.queries[0].name().to_ascii(), "WWW.Example.COM.", "the client's case comes back");
    assert_eq!(answered_a(&hit), vec![Ipv4Addr::new(192, 0, 2, 16)]);
    assert_eq!(h.core.stats().upstream_sent, 1);
    h.assert_no_leaks();
}

#[test]
fn cached_ttls_count_down_and_expire() {
    let mut h = Harness::default();
    h.ask("ttl.example.", 1);
    h.upstream_answers(|q| Some(answer(q, 60)));
    h.advance(Duration::from_secs(25));
    let hit = h.ask("ttl.example.", 2).unwrap();
    assert_eq!(Message::from_vec(&hit).unwrap().answers[0].ttl, 35);
    h.advance(Duration::from_secs(40));
    let stale = h.ask("ttl.example.", 3).expect("served stale within the 60 s window");
    assert_eq!(Message::from_vec(&stale).unwrap().answers[0].ttl, crate::cache::STALE_ANSWER_TTL);
    assert_eq!(h.core.stats().stale_hits, 1);
}

#[test]
fn stale_answers_start_exactly_one_refresh_and_a_failed_refresh_rearms() {
    let mut h = Harness::default();
    h.ask("stale.example.", 1);
    h.upstream_answers(|q| Some(answer(q, 10)));
    h.advance(Duration::from_secs(11));
    for id in 2..6 {
        assert!(h.ask("stale.example.", id).is_some(), "stale answers are immediate");
    }
    assert_eq!(h.udp.len(), 1, "four stale hits, one refresh");
    // The refresh is lost: every attempt times out.
    h.udp.clear();
    for _ in 0..10 {
        h.advance(Duration::from_secs(1));
        h.udp.clear();
    }
    assert_eq!(h.core.stats().refresh_failures, 1);
    h.ask("stale.example.", 9).expect("still stale, still served");
    assert_eq!(h.udp.len(), 1, "the failed refresh re-armed: the next stale hit refreshes again");
    h.upstream_answers(|q| Some(answer(q, 300)));
    let fresh = h.ask("stale.example.", 10).unwrap();
    assert_eq!(Message::from_vec(&fresh).unwrap().answers[0].ttl, 300);
    h.assert_no_leaks();
}

#[test]
fn concurrent_misses_share_one_upstream_query() {
    let mut h = Harness::default();
    for id in 0..50 {
        assert!(h.ask("flight.example.", id).is_none());
    }
    assert_eq!(h.udp.len(), 1);
    assert_eq!(h.core.stats().joined, 49);
    h.upstream_answers(|q| Some(answer(q, 60)));
    assert_eq!(h.answers.len(), 50);
    let mut ids: Vec<u16> = h.answers.iter().map(|(_, a)| wire::id(a)).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..50).collect::<Vec<_>>(), "each client gets its own ID back");
    h.assert_no_leaks();
}

#[test]
fn interfaces_with_different_rules_neither_share_flights_nor_cache() {
    let mut h = Harness::default();
    h.ask_on("scoped.example.", 1, 1000, Some(LAN_A));
    h.ask_on("scoped.example.", 2, 1001, Some(LAN_B));
    assert_eq!(h.udp.len(), 2, "one query per scope");
    let remotes: Vec<SocketAddr> = h.udp.iter().map(|(s, _)| h.udp_open[s]).collect();
    assert_eq!(remotes, vec!["10.0.0.1:53".parse().unwrap(), "10.0.0.2:53".parse().unwrap()]);
    let by_remote = h.udp_open.clone();
    // Answer each with a distinct address so a cross-served answer would show.
    for (socket, query) in std::mem::take(&mut h.udp) {
        let mut response = Message::from_vec(&answer(&query, 60)).unwrap();
        let last = if by_remote[&socket].ip() == IpAddr::from([10, 0, 0, 1]) { 1 } else { 2 };
        response.answers[0].data = RData::A(A(Ipv4Addr::new(198, 51, 100, last)));
        h.core.handle_udp(h.now, socket, &response.to_vec().unwrap());
    }
    h.drain();
    let a = h.ask_on("scoped.example.", 3, 1002, Some(LAN_A)).unwrap();
    let b = h.ask_on("scoped.example.", 4, 1003, Some(LAN_B)).unwrap();
    assert_eq!(answered_a(&a), vec![Ipv4Addr::new(198, 51, 100, 1)]);
    assert_eq!(answered_a(&b), vec![Ipv4Addr::new(198, 51, 100, 2)]);
}

#[test]
fn wrong_id_and_wrong_question_are_discarded_and_counted_and_the_real_answer_still_lands() {
    let mut h = Harness::default();
    h.ask("real.example.", 1);
    let (socket, query) = h.udp[0].clone();
    let mut wrong_id = answer(&query, 60);
    wire::set_id(&mut wrong_id, wire::id(&query).wrapping_add(1));
    h.core.handle_udp(h.now, socket, &wrong_id);
    let mut other = answer(&query_bytes("other.example.", RecordType::A, 0), 60);
    wire::set_id(&mut other, wire::id(&query));
    h.core.handle_udp(h.now, socket, &other);
    h.drain();
    assert!(h.answers.is_empty(), "nothing was accepted");
    let stats = h.core.stats();
    assert_eq!((stats.unexpected_datagrams, stats.mismatched_datagrams), (1, 1));
    h.upstream_answers(|q| Some(answer(q, 60)));
    assert_eq!(answered_a(&h.answers[0].1), vec![Ipv4Addr::new(192, 0, 2, 13)]);
    let cached = h.ask("other.example.", 5);
    assert!(cached.is_none(), "the mismatched answer was never cached under another question");
    h.assert_no_leaks_after_timeouts();
}

impl Harness {
    fn assert_no_leaks_after_timeouts(&mut self) {
        for _ in 0..10 {
            self.advance(Duration::from_secs(1));
            self.udp.clear();
        }
        self.assert_no_leaks();
    }
}

#[test]
fn dropped_queries_are_retried_then_answered_servfail_within_the_timeout() {
    let mut h = Harness::default();
    h.ask("dropped.example.", 7);
    let mut sends = 1;
    let start = h.now;
    while h.answers.is_empty() {
        h.udp.clear();
        h.advance(Duration::from_millis(100));
        sends += h.udp.len();
    }
    assert!(h.now - start <= Settings::default().query_timeout, "answered within the query timeout");
    assert_eq!(h.rcode_of_answer(0), ResponseCode::ServFail);
    assert_eq!(wire::id(&h.answers[0].1), 7);
    assert_eq!(sends, usize::from(Settings::default().max_attempts));
    h.assert_no_leaks();
}

#[test]
fn late_answers_after_a_retry_are_recognised_by_quarantine() {
    let mut h = Harness::default();
    h.ask("late.example.", 1);
    let first = h.udp.remove(0);
    h.advance(Settings::default().udp_attempt_timeout);
    assert_eq!(h.udp.len(), 1, "retried");
    h.core.handle_udp(h.now, first.0, &answer(&first.1, 60));
    assert_eq!(h.core.stats().late_datagrams, 1);
    h.upstream_answers(|q| Some(answer(q, 60)));
    assert_eq!(h.answers.len(), 1);
    h.assert_no_leaks();
}

#[test]
fn truncated_udp_answer_is_retried_over_tcp_for_tcp_udp_upstreams() {
    let mut h = Harness::default();
    h.ask("big.both.test.", 3);
    h.upstream_answers(|q| {
        let mut r = answer(q, 60);
        let flags = wire::flags_of(&r) | wire::flags::TC;
        r[2..4].copy_from_slice(&flags.to_be_bytes());
        Some(r)
    });
    assert_eq!(h.tcp_connects.len(), 1);
    let (conn, _) = h.tcp_connects[0];
    h.core.tcp_connected(h.now, conn);
    h.drain();
    let framed = h.tcp_sent.remove(0).1;
    let response = tcp::frame(&answer(&framed[2..], 60));
    h.core.tcp_received(h.now, conn, &response);
    h.drain();
    assert_eq!(h.answers.len(), 1);
    assert_eq!(h.core.stats().tcp_fallbacks, 1);
    assert!(!Message::from_vec(&h.answers[0].1).unwrap().metadata.truncation);
    h.assert_no_leaks();
}

#[test]
fn tcp_pipeline_answers_out_of_order_and_a_reset_retries_exactly_its_own_queries() {
    let mut h = Harness::default();
    for id in 0..3 {
        h.ask(&format!("q{id}.tcp.test."), id);
    }
    assert_eq!(h.tcp_connects.len(), 1, "one connection carries the pipeline");
    let (conn, _) = h.tcp_connects[0];
    h.core.tcp_connected(h.now, conn);
    h.drain();
    let frames = split_frames(&h.tcp_sent.remove(0).1);
    assert_eq!(frames.len(), 3);
    // Answer the third first, split across two reads, then reset before the others are answered.
    let third = tcp::frame(&answer(&frames[2], 60));
    h.core.tcp_received(h.now, conn, &third[..5]);
    h.core.tcp_received(h.now, conn, &third[5..]);
    h.drain();
    assert_eq!(h.answers.len(), 1);
    assert_eq!(wire::id(&h.answers[0].1), 2);
    h.core.tcp_closed(h.now, conn);
    h.drain();
    assert_eq!(h.core.stats().tcp_broken, 1);
    assert_eq!(h.tcp_connects.len(), 2, "the two orphans went to a new connection");
    let (conn2, _) = h.tcp_connects[1];
    h.core.tcp_connected(h.now, conn2);
    h.drain();
    let written = h.tcp_sent.remove(0).1;
    assert_eq!(written.len(), frames[0].len() + frames[1].len() + 4, "exactly the two unanswered queries");
    for frame in split_frames(&written) {
        h.core.tcp_received(h.now, conn2, &tcp::frame(&answer(&frame, 60)));
    }
    h.drain();
    assert_eq!(h.answers.len(), 3);
    h.assert_no_leaks();
}

/// The frames written on one connection, each a DNS message.
fn split_frames(written: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < written.len() {
        let len = usize::from(u16::from_be_bytes([written[at], written[at + 1]]));
        frames.push(written[at + 2..at + 2 + len].to_vec());
        at += 2 + len;
    }
    frames
}

fn qname_of(message: &[u8]) -> String {
    Message::from_vec(message).unwrap().queries[0].name().to_ascii()
}

#[test]
fn a_break_spends_an_attempt_of_the_oldest_query_only_so_bystanders_outlive_many_breaks() {
    let mut h = Harness::default();
    // An in-order server that answers each query until it reaches a `kill*` one, then resets the connection.
    let names = ["kill1.tcp.test.", "kill2.tcp.test.", "kill3.tcp.test.", "kill4.tcp.test.", "a.tcp.test."];
    for (id, name) in names.iter().enumerate() {
        h.ask(name, id as u16);
    }
    // Sends: written on a connection. Reached: processed by the server before it died.
    let mut sends: HashMap<String, usize> = HashMap::new();
    let mut reached: HashMap<String, usize> = HashMap::new();
    let mut connections = 0;
    while let Some(&(conn, _)) = h.tcp_connects.get(connections) {
        connections += 1;
        assert!(connections < 50, "breaks must end");
        h.core.tcp_connected(h.now, conn);
        h.drain();
        let written: Vec<u8> = h.tcp_sent.drain(..).flat_map(|(_, bytes)| bytes).collect();
        let frames = split_frames(&written);
        for frame in &frames {
            *sends.entry(qname_of(frame)).or_default() += 1;
        }
        for frame in &frames {
            let name = qname_of(frame);
            *reached.entry(name.clone()).or_default() += 1;
            if name.starts_with("kill") {
                break;
            }
            h.core.tcp_received(h.now, conn, &tcp::frame(&answer(frame, 60)));
        }
        h.core.tcp_closed(h.now, conn);
        h.drain();
    }
    let answered: HashMap<String, ResponseCode> = h
        .answers
        .iter()
        .map(|(_, m)| {
            let m = Message::from_vec(m).unwrap();
            (m.queries[0].name().to_ascii(), m.metadata.response_code)
        })
        .collect();
    let max = usize::from(Settings::default().max_attempts);
    assert_eq!(answered["a.tcp.test."], ResponseCode::NoError, "{answered:?}");
    assert!(sends["a.tcp.test."] > max, "the bystander lived through more breaks than its attempts: {sends:?}");
    for kill in &names[..4] {
        assert_eq!(answered[*kill], ResponseCode::ServFail, "{answered:?}");
        assert_eq!(reached[*kill], max, "{kill} broke exactly as many connections as it has attempts: {reached:?}");
    }
    assert!(h.core.stats().tcp_bystanders > 0);
    h.assert_no_leaks();
}

#[test]
fn tcp_pool_grows_under_load_and_a_slow_dial_does_not_hold_queries_on_open_connections() {
    let mut h = Harness::default();
    h.ask("first.tcp.test.", 0);
    let (conn, _) = h.tcp_connects[0];
    h.core.tcp_connected(h.now, conn);
    h.drain();
    for id in 1..=Settings::default().tcp_scale_up_pending as u16 + 10 {
        h.ask(&format!("n{id}.tcp.test."), id);
    }
    assert_eq!(h.tcp_connects.len(), 2, "a second connection is dialled at 64 pending");
    let sent_on_first: usize = h.tcp_sent.iter().filter(|(c, _)| *c == conn).count();
    assert!(sent_on_first >= 70, "queries kept flowing on the open connection while the second dials");
}

#[test]
fn admission_beyond_the_bound_answers_refused_without_touching_upstreams() {
    let settings = Settings { max_in_flight: 3, ..Settings::default() };
    let mut h = Harness::new(TWO_UPSTREAMS, settings);
    for id in 0..3 {
        assert!(h.ask(&format!("n{id}.example."), id).is_none());
    }
    let refused = h.ask("n9.example.", 9).expect("answered at once");
    let parsed = Message::from_vec(&refused).unwrap();
    assert_eq!(parsed.metadata.response_code, ResponseCode::Refused);
    assert!(parsed.metadata.recursion_available);
    assert!(parsed.answers.is_empty());
    assert_eq!(h.core.stats().refused_overload, 1);
    assert_eq!(h.udp.len(), 3);
}

#[test]
fn reject_rules_answer_empty_noerror() {
    let mut h = Harness::default();
    let reply = h.ask("ads.reject.test.", 4).unwrap();
    let parsed = Message::from_vec(&reply).unwrap();
    assert_eq!(parsed.metadata.response_code, ResponseCode::NoError);
    assert!(parsed.answers.is_empty());
    assert_eq!(parsed.metadata.message_type, MessageType::Response);
    assert!(h.udp.is_empty());
}

#[test]
fn nxdomain_is_cached_for_the_soa_negative_ttl() {
    let mut h = Harness::default();
    h.ask("missing.test.", 1);
    h.upstream_answers(|q| Some(nxdomain(q, 3600, 30)));
    assert_eq!(h.rcode_of_answer(0), ResponseCode::NXDomain);
    h.advance(Duration::from_secs(29));
    assert!(h.ask("missing.test.", 2).is_some(), "cached negatively");
    h.advance(Duration::from_secs(2));
    let stale = h.ask("missing.test.", 3);
    assert!(stale.is_some(), "stale-served after 30 s");
    assert_eq!(h.udp.len(), 1, "and refreshed");
}

#[test]
fn response_rules_requery_another_upstream_at_most_three_deep() {
    let body = "upstream { a: 'udp://10.0.0.1:53'  b: 'udp://10.0.0.2:53' }
                routing { request { fallback: a }
                          response { upstream(a) && ip(192.0.2.0/24) -> b
                                     upstream(b) && ip(192.0.2.0/24) -> a
                                     fallback: accept } }";
    let mut h = Harness::new(body, Settings::default());
    h.ask("loop.example.", 1);
    for _ in 0..3 {
        h.upstream_answers(|q| Some(answer(q, 60)));
    }
    assert_eq!(h.answers.len(), 1);
    assert_eq!(h.rcode_of_answer(0), ResponseCode::ServFail, "a loop ends in SERVFAIL, as in dae");
    assert_eq!(h.core.stats().requeries, 2);
    h.assert_no_leaks();
}

#[test]
fn answers_publish_addresses_with_the_cname_chain_and_withdraw_them_on_eviction() {
    let body = "upstream { a: 'udp://10.0.0.1:53' }\n max_cache_size: 1\n routing { request { fallback: a } }";
    let mut h = Harness::new(body, Settings::default());
    h.ask("alias.example.", 1);
    h.upstream_answers(|q| {
        let request = Message::from_vec(q).unwrap();
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.add_query(request.queries[0].clone());
        let alias = Name::from_ascii("alias.example.").unwrap();
        let target = Name::from_ascii("Target.Example.").unwrap();
        response.add_answer(Record::from_rdata(alias, 60, RData::CNAME(CNAME(target.clone()))));
        response.add_answer(Record::from_rdata(target, 60, RData::A(A(Ipv4Addr::new(203, 0, 113, 7)))));
        Some(response.to_vec().unwrap())
    });
    let added = h.core.poll_domain_update().expect("published");
    let DomainUpdate::Add { addr, names } = added else { panic!("{added:?}") };
    assert_eq!(addr, IpAddr::from([203, 0, 113, 7]));
    let names: Vec<&str> = names.iter().map(|n| &**n).collect();
    assert_eq!(names, vec!["alias.example", "target.example"]);
    h.ask("other.example.", 2);
    h.upstream_answers(|q| Some(answer(q, 60)));
    let mut removed = false;
    while let Some(update) = h.core.poll_domain_update() {
        if let DomainUpdate::Remove { addr, .. } = update {
            removed |= addr == IpAddr::from([203, 0, 113, 7]);
        }
    }
    assert!(removed, "evicting the entry withdraws its address");
}

#[test]
fn a_socket_flooded_with_unexpected_datagrams_is_retired_and_replaced() {
    let settings = Settings { max_suspicious_datagrams: 4, ..Settings::default() };
    let mut h = Harness::new(TWO_UPSTREAMS, settings);
    h.ask("one.example.", 1);
    let (socket, query) = h.udp[0].clone();
    for n in 0..5u16 {
        let mut junk = answer(&query, 60);
        wire::set_id(&mut junk, wire::id(&query) ^ (0x5a5a + n));
        h.core.handle_udp(h.now, socket, &junk);
    }
    h.drain();
    assert_eq!(h.core.stats().sockets_retired, 1);
    h.ask("two.example.", 2);
    let new_socket = h.udp.last().unwrap().0;
    assert_ne!(new_socket, socket, "new queries use a new socket");
    h.upstream_answers(|q| Some(answer(q, 60)));
    assert_eq!(h.answers.len(), 2, "the retired socket's pending query still got its answer");
    assert!(h.udp_closed.contains(&socket), "and then it closed");
    h.assert_no_leaks();
}

#[test]
fn ten_thousand_queries_in_flight_use_at_most_four_udp_sockets() {
    let mut h = Harness::default();
    for id in 0..10_000u16 {
        h.ask(&format!("n{id}.example."), id);
    }
    assert_eq!(h.core.stats().in_flight, 10_000);
    assert!(h.udp_open.len() <= 4, "{} sockets", h.udp_open.len());
    h.upstream_answers(|q| Some(answer(q, 60)));
    assert_eq!(h.answers.len(), 10_000);
    h.assert_no_leaks();
}

fn qtype_of(message: &[u8]) -> RecordType {
    Message::from_vec(message).unwrap().queries[0].query_type()
}

const PREFER_V4: &str =
    "ipversion_prefer: 4\n upstream { a: 'udp://10.0.0.1:53' }\n routing { request { fallback: a } }";

impl Harness {
    fn ask_type(&mut self, name: &str, qtype: RecordType, id: u16) -> Option<Vec<u8>> {
        let message = query_bytes(name, qtype, id);
        let cx = QueryContext { client: client(id), direction: None, interface: None, original_dst: None };
        let mut reply = Vec::new();
        let handled = self.core.handle_query(self.now, &message, &cx, &mut reply);
        self.drain();
        (handled == Handled::Answered).then_some(reply)
    }
}

#[test]
fn prefer_v4_answers_aaaa_empty_when_the_name_has_a_records() {
    let mut h = Harness::new(PREFER_V4, Settings::default());
    assert!(h.ask_type("dual.example.", RecordType::AAAA, 1).is_none());
    assert_eq!(h.udp.len(), 1);
    assert_eq!(qtype_of(&h.udp[0].1), RecordType::A, "the preferred family is asked first");
    h.upstream_answers(|q| Some(answer(q, 60)));
    let parsed = Message::from_vec(&h.answers[0].1).unwrap();
    assert_eq!(parsed.queries[0].query_type(), RecordType::AAAA);
    assert_eq!(parsed.metadata.response_code, ResponseCode::NoError);
    assert!(parsed.answers.is_empty(), "AAAA suppressed while A has addresses");
    assert!(h.udp.is_empty(), "AAAA never went upstream");
    let again = h.ask_type("dual.example.", RecordType::AAAA, 2).expect("answered from the cached A at once");
    assert!(Message::from_vec(&again).unwrap().answers.is_empty());
    h.assert_no_leaks();
}

#[test]
fn prefer_v4_forwards_aaaa_when_the_name_has_no_a_records() {
    let mut h = Harness::new(PREFER_V4, Settings::default());
    h.ask_type("v6only.example.", RecordType::AAAA, 1);
    // The name has no A record: the A flight comes back NOERROR without answers.
    h.upstream_answers(|q| {
        let request = Message::from_vec(q).unwrap();
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.add_query(request.queries[0].clone());
        Some(response.to_vec().unwrap())
    });
    assert_eq!(h.udp.len(), 1, "then the AAAA question goes upstream as asked");
    assert_eq!(qtype_of(&h.udp[0].1), RecordType::AAAA);
    h.upstream_answers(|q| Some(answer(q, 60)));
    assert_eq!(h.answers.len(), 1);
    assert_eq!(qtype_of(&h.answers[0].1), RecordType::AAAA);
    h.assert_no_leaks();
}

#[test]
fn prefer_v4_warms_aaaa_alongside_an_a_query() {
    let mut h = Harness::new(PREFER_V4, Settings::default());
    h.ask_type("warm.example.", RecordType::A, 1);
    let mut types: Vec<RecordType> = h.udp.iter().map(|(_, q)| qtype_of(q)).collect();
    types.sort_by_key(|t| u16::from(*t));
    assert_eq!(types, vec![RecordType::A, RecordType::AAAA]);
    h.upstream_answers(|q| Some(answer(q, 60)));
    assert_eq!(h.answers.len(), 1, "only the client's own question is answered");
    h.assert_no_leaks();
}

#[test]
fn timers_fire_in_time_order_whichever_queue_holds_them() {
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let attempt = |n: u32| Timer::Attempt(FlightRef { slot: n, generation: 0 }, n);
    let mut timers = Timers::default();
    timers.push_in_order(at(100), attempt(1));
    timers.push_in_order(at(300), attempt(3));
    // Earlier than the last in-order timer: must still fire in its turn (it goes to the heap).
    timers.push_in_order(at(200), attempt(2));
    timers.push(at(50), attempt(0));
    timers.push(at(400), Timer::Housekeeping);
    assert_eq!(timers.next_at(), Some(at(50)));
    assert_eq!(timers.pop_due(at(10)), None, "nothing is due yet");
    let mut fired = Vec::new();
    while let Some(timer) = timers.pop_due(at(1_000)) {
        fired.push(timer);
    }
    assert_eq!(fired, vec![attempt(0), attempt(1), attempt(2), attempt(3), Timer::Housekeeping]);
    assert_eq!(timers.next_at(), None);
}
