//! The bootstrap resolver: upstreams written as host names (`tls://dns.google`) get their address by asking the
//! bootstrap server (plain UDP, hickory-proto for the messages), and again when the answer's TTL runs out;
//! failures retry lazily every [`RETRY`]. Until a name resolves its upstream answers SERVFAIL.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

use super::Control;

/// Wait before asking again after a failure.
const RETRY: Duration = Duration::from_secs(5);
/// One lookup's timeout.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Re-resolve at least this often, at most this rarely, whatever the TTL says.
const MIN_REFRESH: Duration = Duration::from_secs(60);
const MAX_REFRESH: Duration = Duration::from_secs(3600);

pub(super) fn run(
    names: Vec<(usize, String, u16)>,
    server: SocketAddr,
    workers: Vec<Sender<Control>>,
    mark: u32,
    stop: &AtomicBool,
) {
    let mut due: Vec<Instant> = vec![Instant::now(); names.len()];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for (index, (id, name, port)) in names.iter().enumerate() {
            if due[index] > now {
                continue;
            }
            match resolve(server, name, mark) {
                Ok((ip, ttl)) => {
                    for worker in &workers {
                        let _ = worker.send(Control::SetUpstream(*id, Some(SocketAddr::new(ip, *port))));
                    }
                    due[index] = now + Duration::from_secs(u64::from(ttl)).clamp(MIN_REFRESH, MAX_REFRESH);
                }
                Err(error) => {
                    eprintln!("dns: bootstrap lookup of {name} via {server} failed: {error}; retrying in {RETRY:?}");
                    due[index] = now + RETRY;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The first address of `name` (A, then AAAA) and its TTL, asked from a socket with SO_MARK `mark` (unless 0).
pub fn resolve(server: SocketAddr, name: &str, mark: u32) -> std::io::Result<(IpAddr, u32)> {
    let fqdn = Name::from_ascii(format!("{name}.")).map_err(std::io::Error::other)?;
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.expect("literal");
    let socket = socket2::Socket::new(socket2::Domain::for_address(server), socket2::Type::DGRAM, None)?;
    if mark != 0 {
        socket.set_mark(mark)?;
    }
    socket.bind(&bind.into())?;
    let socket: UdpSocket = socket.into();
    socket.connect(server)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    for record_type in [RecordType::A, RecordType::AAAA] {
        let mut query = Message::query();
        let id = (crate::rng::os_seed() >> 48) as u16;
        query.metadata.id = id;
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(fqdn.clone(), record_type));
        socket.send(&query.to_vec().map_err(std::io::Error::other)?)?;
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            let len = socket.recv(&mut buf)?;
            let Ok(answer) = Message::from_vec(&buf[..len]) else { continue };
            if answer.metadata.id != id {
                continue;
            }
            for record in &answer.answers {
                match &record.data {
                    RData::A(a) => return Ok((IpAddr::V4(a.0), record.ttl)),
                    RData::AAAA(aaaa) => return Ok((IpAddr::V6(aaaa.0), record.ttl)),
                    _ => {}
                }
            }
            break;
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("no A or AAAA record for {name}")))
}
