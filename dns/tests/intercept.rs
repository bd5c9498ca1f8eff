//! The service as `dae run` uses it, without root: DNS the datapath intercepted goes in through
//! `Handle::submit` with its flow's interface and direction, answers come out through the answer sink, and the
//! domain hook sees the answer's addresses. Upstreams are UDP sockets on loopback that this test answers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use config::dns::PacketDirection;
use config::rules::Assets;
use dns::service::{INTERCEPTED, Options};
use dns::{ClientAddr, Hooks, Intercepted, Service};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

const WAIT: Duration = Duration::from_secs(5);

/// Answers every query on `socket` with `ip` until the socket's peer goes away (read timeout ends the thread).
fn upstream(ip: Ipv4Addr) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let addr = socket.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            let query = Message::from_vec(&buf[..len]).unwrap();
            let mut response = Message::response(query.metadata.id, query.metadata.op_code);
            response.add_query(query.queries[0].clone());
            let name = query.queries[0].name().clone();
            response.add_answer(Record::from_rdata(name, 60, RData::A(A(ip))));
            socket.send_to(&response.to_vec().unwrap(), from).unwrap();
        }
    });
    (addr, thread)
}

fn query(name: &str, id: u16) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    message.to_vec().unwrap()
}

fn address_of(answer: &[u8]) -> Ipv4Addr {
    let message = Message::from_vec(answer).unwrap();
    match &message.answers[0].data {
        RData::A(a) => a.0,
        other => panic!("{other:?}"),
    }
}

#[test]
fn intercepted_queries_follow_their_interface_rules_and_publish_domains() {
    let (a, a_thread) = upstream(Ipv4Addr::new(10, 1, 1, 1));
    let (b, b_thread) = upstream(Ipv4Addr::new(10, 2, 2, 2));
    let text = format!(
        "global {{ lan_interface: lan0, lan1 }}
         dns {{ upstream {{ a: 'udp://{a}'  b: 'udp://{b}' }}
               routing {{ request {{ interface(lan: lan0) -> a
                                     interface(lan: lan1) -> b
                                     fallback: reject }} }} }}"
    );
    let loaded = config::load_str("t.dae", &text).unwrap();
    let dns_config = config::dns::lower(&loaded.config, &Assets::none()).unwrap().dns;
    let (answer_tx, answers) = channel::<(ClientAddr, Vec<u8>)>();
    let answer_tx = Mutex::new(answer_tx);
    let (domain_tx, domains) = channel::<(IpAddr, Vec<String>)>();
    let domain_tx: Mutex<Sender<(IpAddr, Vec<String>)>> = Mutex::new(domain_tx);
    let hooks = Hooks {
        domains: Some(Arc::new(move |addr, names: &[String]| {
            let _ = domain_tx.lock().unwrap().send((addr, names.to_vec()));
        })),
        answers: Some(Arc::new(move |client, message: &[u8]| {
            let _ = answer_tx.lock().unwrap().send((client, message.to_vec()));
        })),
    };
    let options = Options { workers: 2, ..Options::for_config(&loaded.config) };
    let handle = Service::start_with(dns_config, options, hooks).unwrap();
    for (port, interface, expected) in [(1000, "lan0", [10, 1, 1, 1]), (1001, "lan1", [10, 2, 2, 2])] {
        let client = ClientAddr {
            peer: SocketAddr::from(([192, 168, 1, 9], port)),
            local: None,
            ifindex: 7,
            listener: 0,
            tcp: None,
        };
        let submitted = handle.submit(Intercepted {
            message: query("www.example.test.", port),
            client,
            direction: Some(PacketDirection::LanIn),
            interface: Some(interface.into()),
            original_dst: Some("192.0.2.53:53".parse().unwrap()),
        });
        assert!(submitted.is_ok());
        let (to, message) = answers.recv_timeout(WAIT).expect("answered");
        assert_eq!(to.peer, client.peer);
        assert_eq!(to.listener, INTERCEPTED);
        assert_eq!(Message::from_vec(&message).unwrap().metadata.id, port);
        assert_eq!(address_of(&message), Ipv4Addr::from(expected), "{interface} routes to its own upstream");
        let (addr, names) = domains.recv_timeout(WAIT).expect("published");
        assert_eq!(addr, IpAddr::from(expected));
        assert_eq!(names, vec!["www.example.test".to_owned()]);
    }
    handle.stop();
    a_thread.join().unwrap();
    b_thread.join().unwrap();
}
