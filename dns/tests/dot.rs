//! DNS over TLS upstreams (root; lab namespaces): a rustls server in the server namespace with a certificate
//! from a throw-away authority made by `openssl`; the forwarder verifies it, pipelines over the session, and
//! answers SERVFAIL when the certificate is not trusted.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bench_lab::topology::Topology;
use common::{Forwarder, Scratch, short, skip};
use hickory_proto::op::Message;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};

fn serve_dot(listener: TcpListener, config: Arc<rustls::ServerConfig>, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        let Ok((stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let config = config.clone();
        std::thread::spawn(move || {
            let Ok(session) = rustls::ServerConnection::new(config) else { return };
            let mut tls = rustls::StreamOwned::new(session, stream);
            let mut length = [0u8; 2];
            while tls.read_exact(&mut length).is_ok() {
                let mut message = vec![0u8; usize::from(u16::from_be_bytes(length))];
                if tls.read_exact(&mut message).is_err() {
                    return;
                }
                let query = Message::from_vec(&message).unwrap();
                let mut response = Message::response(query.metadata.id, query.metadata.op_code);
                response.add_query(query.queries[0].clone());
                let name = query.queries[0].name().clone();
                response.add_answer(Record::from_rdata(name, 60, RData::A(A(Ipv4Addr::new(10, 5, 5, 5)))));
                let bytes = response.to_vec().unwrap();
                let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&bytes);
                if tls.write_all(&framed).is_err() {
                    return;
                }
            }
        });
    }
}

#[test]
fn dot_upstream_answers_through_a_verified_session_and_an_untrusted_one_gets_servfail() {
    if skip("dot_upstream_answers_through_a_verified_session_and_an_untrusted_one_gets_servfail", &["openssl", "kdig"])
    {
        return;
    }
    let topo = Topology::with_lans(1).unwrap();
    let server_ip = topo.server_v4;
    let certs = Scratch::new();
    let server_config = common::server_tls(&certs, &server_ip.to_string(), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let server_stop = stop.clone();
    let config = Arc::new(server_config);
    let server =
        topo.server.spawn_in(move || serve_dot(TcpListener::bind((server_ip, 853)).unwrap(), config, server_stop));
    let dns = format!(
        "global {{}}\ndns {{ bind: '0.0.0.0:53'\n upstream {{ dot: 'tls://{server_ip}:853' }}\n routing {{ request {{ fallback: dot }} }} }}"
    );
    let ca = certs.0.join("ca.pem").display().to_string();
    let lan = topo.lan();
    let gateway = lan.gateway_v4.to_string();
    {
        let mut forwarder = Forwarder::start(&topo.gateway, &dns, &["--workers", "1", "--tls-roots", &ca]);
        for i in 0..5 {
            assert_eq!(short(&lan.client, &gateway, 53, &format!("n{i}.dot.test"), &[]), vec!["10.5.5.5"]);
        }
        let stats = forwarder.stats();
        assert_eq!(stats["tcp_opened"], 1, "one TLS session carried every query: {stats}");
    }
    // Trusting only the system authorities, the test certificate fails verification: SERVFAIL, no answer.
    let _untrusting = Forwarder::start(&topo.gateway, &dns, &["--workers", "1"]);
    let out = common::kdig(&lan.client, &gateway, 53, "x.dot.test", "A", &["+timeout=6", "+retry=0"]);
    assert!(out.contains("SERVFAIL"), "{out}");
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap().unwrap();
}
