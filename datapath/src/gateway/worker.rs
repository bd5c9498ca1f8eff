//! Workers: transparent sockets in the steering sockmap, accepting proxied TCP connections and relaying them to
//! the original destination (the accepted socket's local address) from a socket carrying the daemon's mark.
//!
//! A stepping stone, not the design's end state: each worker is a thread that accepts, and each connection is
//! relayed by two threads with `std::io::copy` (which splices socket to socket on Linux). Per-core io_uring
//! workers, UDP sessions and proxy outbounds replace it (issue 4).

use std::{
    io,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::Duration,
};

use std::sync::Arc;

use socket2::{Domain, Socket, Type};
use tracing::{debug, warn};

use super::dns::{DNS_PORT, Intercept, serve_tcp};
use crate::links::LinkReader;

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

/// Accepts steered connections forever, relaying each on its own threads; connections to port 53 go to the DNS
/// forwarder when it runs.
pub fn serve(listener: TcpListener, daemon_mark: u32, dns: Option<Arc<Intercept>>, links: LinkReader) {
    let links = Arc::new(std::sync::Mutex::new(links));
    loop {
        match listener.accept() {
            Ok((client, peer)) => {
                let (dns, links) = (dns.clone(), Arc::clone(&links));
                std::thread::spawn(move || {
                    let to_dns = client.local_addr().is_ok_and(|a| a.port() == DNS_PORT);
                    let result = match dns {
                        Some(intercept) if to_dns => {
                            let mut reader = links.lock().unwrap_or_else(|e| e.into_inner()).clone();
                            serve_tcp(client, peer, &intercept, &mut reader)
                        }
                        _ => relay(client, peer, daemon_mark),
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

fn relay(client: TcpStream, peer: SocketAddr, daemon_mark: u32) -> io::Result<()> {
    // A transparent accept keeps the client's original destination as the local address.
    let target = client.local_addr()?;
    let socket = Socket::new(if target.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 }, Type::STREAM, None)?;
    set_int(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_MARK, daemon_mark as i32)?;
    socket.connect_timeout(&target.into(), DIAL_TIMEOUT)?;
    let upstream: TcpStream = socket.into();
    debug!(%peer, %target, "relaying");
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
