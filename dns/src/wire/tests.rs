//! The views held to hickory-proto's decoder: same fields for generated queries, TTL offsets that rewrite the
//! TTLs hickory reads, and no panic on any bytes.

use hickory_proto::op::{Edns, Message, Query as HQuery};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use proptest::prelude::*;

use super::*;

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9-]{0,20}"
}

fn name() -> impl Strategy<Value = String> {
    proptest::collection::vec(label(), 1..5).prop_map(|labels| format!("{}.", labels.join(".")))
}

fn build_query(name: &str, qtype: u16, id: u16, edns: Option<(u16, bool)>, cd: bool) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.metadata.checking_disabled = cd;
    message.add_query(HQuery::query(Name::from_ascii(name).unwrap(), RecordType::from(qtype)));
    if let Some((payload, dnssec_ok)) = edns {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        edns.set_dnssec_ok(dnssec_ok);
        message.set_edns(edns);
    }
    message.to_vec().unwrap()
}

proptest! {
    #[test]
    fn query_view_agrees_with_hickory(
        name in name(),
        qtype in prop_oneof![Just(1u16), Just(28), Just(65), Just(16), 1u16..300],
        id in any::<u16>(),
        edns in proptest::option::of((512u16..4096, any::<bool>())),
        cd in any::<bool>(),
    ) {
        let bytes = build_query(&name, qtype, id, edns, cd);
        let mut parsed_name = String::new();
        let query = Query::parse(&bytes, &mut parsed_name).unwrap();
        prop_assert_eq!(query.id, id);
        prop_assert_eq!(query.qtype, qtype);
        prop_assert_eq!(query.qclass, 1);
        prop_assert_eq!(parsed_name, name.trim_end_matches('.').to_ascii_lowercase());
        prop_assert_eq!(query.has_edns, edns.is_some());
        prop_assert_eq!(query.dnssec_ok, edns.is_some_and(|(_, d)| d));
        prop_assert_eq!(query.udp_payload, edns.map_or(CLASSIC_UDP_PAYLOAD, |(p, _)| p));
        prop_assert_eq!(query.checking_disabled(), cd);
        prop_assert_eq!(&bytes[query.question_end() - 4..query.question_end()], &[(qtype >> 8) as u8, qtype as u8, 0, 1]);
    }

    #[test]
    fn ttl_offsets_rewrite_the_ttls_hickory_reads(name in name(), ttls in proptest::collection::vec(0u32..1_000_000, 2..6), new_ttl in any::<u32>()) {
        let owner = Name::from_ascii(&name).unwrap();
        let mut message = Message::response(9, hickory_proto::op::OpCode::Query);
        message.add_query(HQuery::query(owner.clone(), RecordType::A));
        let target = Name::from_ascii("target.example.").unwrap();
        message.add_answer(Record::from_rdata(owner.clone(), ttls[0], RData::CNAME(CNAME(target.clone()))));
        for (i, ttl) in ttls.iter().enumerate().skip(1) {
            message.add_answer(Record::from_rdata(target.clone(), *ttl, RData::A(A::new(10, 0, 0, i as u8))));
        }
        let mut bytes = message.to_vec().unwrap();
        let mut qname = String::new();
        let view = walk_response(&bytes, &mut qname).unwrap();
        prop_assert_eq!(view.records.len(), ttls.len());
        for (i, (_, record)) in view.records.iter().enumerate() {
            prop_assert_eq!(record.ttl, ttls[i]);
            bytes[record.ttl_at..record.ttl_at + 4].copy_from_slice(&new_ttl.to_be_bytes());
        }
        let reparsed = Message::from_vec(&bytes).unwrap();
        prop_assert!(reparsed.answers.iter().all(|r| r.ttl == new_ttl));
        let mut owner_name = String::new();
        read_name(&bytes, view.records[1].1.name_at, &mut owner_name).unwrap();
        prop_assert_eq!(owner_name, "target.example");
    }

    #[test]
    fn any_bytes_parse_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut name = String::new();
        let _ = Query::parse(&bytes, &mut name);
        let _ = walk_response(&bytes, &mut name);
        let _ = read_name(&bytes, HEADER_LEN, &mut name);
    }
}

#[test]
fn compression_loops_are_refused() {
    let mut message = vec![0u8; HEADER_LEN];
    message.extend_from_slice(&[0xc0, 12]);
    let mut name = String::new();
    assert_eq!(read_name(&message, HEADER_LEN, &mut name), Err(WireError::BadName));
}

#[test]
fn empty_response_echoes_the_question_and_edns() {
    let bytes = build_query("Example.COM.", 28, 77, Some((1232, true)), false);
    let mut name = String::new();
    let query = Query::parse(&bytes, &mut name).unwrap();
    let mut out = Vec::new();
    empty_response(&bytes, &query, rcode::REFUSED, &mut out);
    let parsed = Message::from_vec(&out).unwrap();
    assert_eq!(parsed.metadata.id, 77);
    assert_eq!(u16::from(parsed.metadata.response_code), 5);
    assert!(parsed.metadata.recursion_available && parsed.metadata.recursion_desired);
    assert_eq!(parsed.queries[0].name().to_ascii(), "Example.COM.");
    assert!(parsed.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok));
}

#[test]
fn same_question_ignores_name_case_but_not_type() {
    let a = build_query("www.example.com.", 65, 1, None, false);
    let b = build_query("WWW.example.COM.", 65, 2, None, false);
    let c = build_query("www.example.com.", 97, 3, None, false);
    let end = |m: &[u8]| skip_name(m, HEADER_LEN).unwrap() + 4;
    assert!(same_question(&a, end(&a), &b, end(&b)));
    assert!(!same_question(&a, end(&a), &c, end(&c)), "0x41 and 0x61 are different types, not cases");
}

#[test]
fn refused_echoes_id_and_question_and_refuses_what_is_not_a_query() {
    let mut query = Message::query();
    query.metadata.id = 0x4242;
    query.metadata.recursion_desired = true;
    query.add_query(hickory_proto::op::Query::query(Name::from_ascii("example.org.").unwrap(), RecordType::AAAA));
    let bytes = query.to_vec().unwrap();
    let mut out = Vec::new();
    assert!(refused(&bytes, &mut out));
    let answer = Message::from_vec(&out).unwrap();
    assert_eq!(answer.metadata.id, 0x4242);
    assert_eq!(answer.metadata.response_code, hickory_proto::op::ResponseCode::Refused);
    assert!(
        answer.metadata.recursion_desired && answer.metadata.message_type == hickory_proto::op::MessageType::Response
    );
    assert_eq!(answer.queries, query.queries);
    assert!(answer.answers.is_empty());
    for garbage in [&bytes[..5], &[0xffu8; 40][..], &out[..]] {
        let mut untouched = vec![1, 2, 3];
        assert!(!refused(garbage, &mut untouched), "{garbage:?}");
        assert_eq!(untouched, [1, 2, 3]);
    }
}
