//! Workers: transparent sockets in the steering sockmap, accepting proxied TCP connections and relaying them
//! through the node their flow's group picks (SOCKS5, HTTP CONNECT, or direct from the gateway), with the
//! original destination (the accepted socket's local address) as the target.
//!
//! A stepping stone, not the design's end state: each worker is a thread that accepts, and each connection is
//! relayed by two threads with `std::io::copy` (which splices socket to socket on Linux). Per-core io_uring
//! workers and UDP sessions replace it (issue 4).

use std::{
    io,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use datapath_abi::{FlowKey, flow::flow_hash, route::outbound};
use relay::outbound::{Node, Outbounds};
use socket2::{Domain, Socket, Type};
use tracing::{debug, warn};

use super::dns::{DNS_PORT, Intercept, serve_tcp};
use crate::{flow_table::FlowTable, links::LinkReader};

/// How long an outbound dial may take (dae: 8 s).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(8);
/// Pending connections a worker's listener queues.
const LISTEN_BACKLOG: i32 = 1024;

fn set_int(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: setsockopt with a valid fd and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(fd, level, name, (&raw const value).cast(), size_of::<libc::c_int>() as libc::socklen_t)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// A transparent TCP listener on an ephemeral port (`bpf_sk_assign` does not care which) for one family.
pub fn transparent_listener(ipv6: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(if ipv6 { Domain::IPV6 } else { Domain::IPV4 }, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if ipv6 {
        socket.set_only_v6(true)?;
        set_int(socket.as_raw_fd(), libc::SOL_IPV6, libc::IPV6_TRANSPARENT, 1)?;
    } else {
        set_int(socket.as_raw_fd(), libc::SOL_IP, libc::IP_TRANSPARENT, 1)?;
    }
    let any: SocketAddr = if ipv6 { "[::]:0".parse().expect("literal") } else { "0.0.0.0:0".parse().expect("literal") };
    socket.bind(&any.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// What relaying needs: the nodes and groups, the flow table (which group a flow was routed to) and counters.
#[derive(Debug)]
pub struct RelayContext {
    /// Nodes, groups and their health.
    pub outbounds: Arc<Outbounds>,
    /// The flow table, shared with the kernel.
    pub flows: Arc<FlowTable>,
    /// The seed the kernel hashes flow keys with.
    pub seed: u64,
    /// The mark of the daemon's own sockets (direct dials).
    pub daemon_mark: u32,
    /// Counters.
    pub counters: RelayCounters,
}

/// What the relay counts (`dae stats`).
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Connections relayed (dial succeeded).
    pub relayed: AtomicU64,
    /// Connections refused because their group had no alive node.
    pub no_alive_node: AtomicU64,
    /// Dials (direct or through a node) that failed.
    pub dial_failed: AtomicU64,
    /// Steered connections without a flow tag (relayed direct).
    pub untagged: AtomicU64,
}

/// Accepts steered connections forever, relaying each on its own threads; connections to port 53 go to the DNS
/// forwarder when it runs.
pub fn serve(listener: TcpListener, relay_cx: Arc<RelayContext>, dns: Option<Arc<Intercept>>, links: LinkReader) {
    let links = Arc::new(std::sync::Mutex::new(links));
    loop {
        match listener.accept() {
            Ok((client, peer)) => {
                let (dns, links, relay_cx) = (dns.clone(), Arc::clone(&links), Arc::clone(&relay_cx));
                std::thread::spawn(move || {
                    let to_dns = client.local_addr().is_ok_and(|a| a.port() == DNS_PORT);
                    let result = match dns {
                        Some(intercept) if to_dns => {
                            let mut reader = links.lock().unwrap_or_else(|e| e.into_inner()).clone();
                            serve_tcp(client, peer, &intercept, &mut reader)
                        }
                        _ => relay(client, peer, &relay_cx),
                    };
                    if let Err(e) = result {
                        debug!(%peer, error = %e, "relay ended");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "accept");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Refuses a client: an RST rather than a FIN, so it does not wait for data that will never come.
fn refuse(client: &TcpStream) {
    if let Ok(dup) = client.try_clone() {
        let _ = Socket::from(dup).set_linger(Some(Duration::ZERO));
    }
}

fn relay(client: TcpStream, peer: SocketAddr, cx: &RelayContext) -> io::Result<()> {
    // A transparent accept keeps the client's original destination as the local address.
    let target = client.local_addr()?;
    let key = FlowKey::new(peer.ip(), peer.port(), target.ip(), target.port(), libc::IPPROTO_TCP as u8);
    let group = match cx.flows.lookup(&key, cx.seed) {
        Some(tag) if (outbound::GROUP_BASE..=outbound::GROUP_MAX).contains(&tag.outbound) => {
            cx.outbounds.groups().get(usize::from(tag.outbound - outbound::GROUP_BASE))
        }
        _ => {
            cx.counters.untagged.fetch_add(1, Ordering::Relaxed);
            None
        }
    };
    let dialed = match group {
        Some(group) => match group.pick(cx.outbounds.health(), u64::from(flow_hash(&key, cx.seed))) {
            Ok(node) => {
                debug!(%peer, %target, group = %group.name, node = cx.outbounds.node_name(node), "relaying");
                cx.outbounds.dial(node, target, DIAL_TIMEOUT)
            }
            Err(e) => {
                cx.counters.no_alive_node.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, %target, group = %group.name, "{e}: connection refused");
                refuse(&client);
                return Ok(());
            }
        },
        // No tag (evicted, or steered before a reload): the gateway's own connection, as `direct` would.
        None => relay::outbound::dial(&Node::Direct, target, cx.daemon_mark, DIAL_TIMEOUT),
    };
    let upstream = match dialed {
        Ok(upstream) => upstream,
        Err(e) => {
            cx.counters.dial_failed.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, %target, error = %e, "dial failed");
            refuse(&client);
            return Err(e);
        }
    };
    cx.counters.relayed.fetch_add(1, Ordering::Relaxed);
    let (mut c_read, mut u_write) = (client.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || {
        let n = io::copy(&mut c_read, &mut u_write);
        // Half-close: the client finished sending; the server may still answer.
        let _ = u_write.shutdown(Shutdown::Write);
        n
    });
    let (mut u_read, mut c_write) = (upstream, client);
    let _ = io::copy(&mut u_read, &mut c_write);
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}
