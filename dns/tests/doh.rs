//! DNS over HTTPS upstreams (root; lab namespaces): an HTTP/2 server (`h2` over tokio-rustls) in the server
//! namespace with a certificate from a throw-away authority; queries reach it as RFC 8484 POSTs with ID 0 and
//! come back with the client's ID, many over one session.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bench_lab::topology::Topology;
use bytes::Bytes;
use common::{Forwarder, Scratch, short, skip};
use hickory_proto::op::Message;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};

/// Serves DoH on `listener` until the runtime is dropped; counts requests whose DNS ID was 0.
async fn serve(listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>, zero_ids: Arc<AtomicUsize>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let acceptor = acceptor.clone();
        let zero_ids = zero_ids.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else { return };
            let Ok(mut connection) = h2::server::handshake(stream).await else { return };
            while let Some(Ok((request, mut respond))) = connection.accept().await {
                let zero_ids = zero_ids.clone();
                tokio::spawn(async move {
                    assert_eq!(request.method(), http::Method::POST);
                    assert_eq!(request.uri().path(), "/dns-query");
                    let mut body = request.into_body();
                    let mut query = Vec::new();
                    while let Some(Ok(chunk)) = body.data().await {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        query.extend_from_slice(&chunk);
                    }
                    let query = Message::from_vec(&query).unwrap();
                    if query.metadata.id == 0 {
                        zero_ids.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
                    response.add_query(query.queries[0].clone());
                    let name = query.queries[0].name().clone();
                    response.add_answer(Record::from_rdata(name, 60, RData::A(A(Ipv4Addr::new(10, 6, 6, 6)))));
                    let reply = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/dns-message")
                        .body(())
                        .unwrap();
                    let Ok(mut stream) = respond.send_response(reply, false) else { return };
                    let _ = stream.send_data(Bytes::from(response.to_vec().unwrap()), true);
                });
            }
        });
    }
}

#[test]
fn doh_upstream_carries_queries_as_http2_posts_with_id_zero_on_one_session() {
    if skip("doh_upstream_carries_queries_as_http2_posts_with_id_zero_on_one_session", &["openssl", "kdig"]) {
        return;
    }
    let topo = Topology::with_lans(1).unwrap();
    let server_ip = topo.server_v4;
    let certs = Scratch::new();
    let tls = Arc::new(common::server_tls(&certs, &server_ip.to_string(), &[b"h2"]));
    let zero_ids = Arc::new(AtomicUsize::new(0));
    let counter = zero_ids.clone();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let server = topo.server.spawn_in(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind((server_ip, 443)).await.unwrap();
            let serving = tokio::spawn(serve(listener, tls, counter));
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            serving.abort();
        });
    });
    // The session must leave with the daemon's mark: nothing else reaches the server.
    common::only_marked_sockets_reach_the_server(&topo);
    let dns = format!(
        "global {{ so_mark_from_dae: {} }}\ndns {{ bind: '0.0.0.0:53'\n upstream {{ doh: 'https://{server_ip}/dns-query' }}\n routing {{ request {{ fallback: doh }} }} }}",
        common::TEST_MARK
    );
    let ca = certs.0.join("ca.pem").display().to_string();
    let lan = topo.lan();
    let gateway = lan.gateway_v4.to_string();
    let mut forwarder = Forwarder::start(&topo.gateway, &dns, &["--workers", "1", "--tls-roots", &ca]);
    for i in 0..5 {
        assert_eq!(short(&lan.client, &gateway, 53, &format!("n{i}.doh.test"), &[]), vec!["10.6.6.6"]);
    }
    let stats = forwarder.stats();
    assert_eq!(stats["tcp_opened"], 1, "one HTTP/2 session carried every query: {stats}");
    assert_eq!(zero_ids.load(Ordering::Relaxed), 5, "every request went with DNS ID 0 (RFC 8484 section 4.1)");
    drop(forwarder);
    stop_tx.send(()).unwrap();
    server.join().unwrap().unwrap();
}
