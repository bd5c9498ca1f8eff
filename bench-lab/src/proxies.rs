//! Real proxy servers for the gateway's outbounds, started inside a lab namespace: microsocks (SOCKS5),
//! danted (SOCKS5 with UDP ASSOCIATE) and tinyproxy (HTTP CONNECT). Each is killed on drop; a start waits (bounded) until the proxy accepts
//! connections.

use std::{
    io,
    net::{IpAddr, SocketAddr, TcpStream},
    process::Stdio,
    time::{Duration, Instant},
};

use crate::{
    dns::Scratch,
    netns::{ChildGuard, Netns},
};

/// How long a proxy may take to listen.
const STARTUP: Duration = Duration::from_secs(5);

/// A proxy process inside a namespace; killed on drop.
#[derive(Debug)]
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    _child: ChildGuard,
    _scratch: Scratch,
}

fn start(ns: &Netns, program: &str, args: &[&str], addr: SocketAddr, scratch: Scratch) -> io::Result<Proxy> {
    let mut cmd = ns.command(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = ns.spawn(&mut cmd)?;
    let listening = ns.run_in(move || {
        let until = Instant::now() + STARTUP;
        while Instant::now() < until {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    })?;
    if !listening {
        let status = child.child().try_wait();
        return Err(io::Error::other(format!("{program} is not listening on {addr} after {STARTUP:?} ({status:?})")));
    }
    Ok(Proxy { addr, _child: child, _scratch: scratch })
}

/// microsocks (SOCKS5, no authentication) on `ip:port` inside `ns`.
pub fn microsocks(ns: &Netns, ip: IpAddr, port: u16) -> io::Result<Proxy> {
    start(
        ns,
        "microsocks",
        &["-i", &ip.to_string(), "-p", &port.to_string()],
        SocketAddr::new(ip, port),
        Scratch::new(),
    )
}

/// tinyproxy (HTTP CONNECT to any port, from any client) on `ip:port` inside `ns`.
pub fn tinyproxy(ns: &Netns, ip: IpAddr, port: u16) -> io::Result<Proxy> {
    let scratch = Scratch::new();
    let dir = scratch.0.display().to_string();
    let conf = format!(
        "Port {port}\nListen {ip}\nAllow 0.0.0.0/0\nAllow ::/0\nTimeout 60\nMaxClients 256\n\
         PidFile \"{dir}/tinyproxy.pid\"\nLogFile \"{dir}/tinyproxy.log\"\n"
    );
    let path = scratch.write("tinyproxy.conf", &conf, 0o644);
    let path = path.display().to_string();
    start(ns, "tinyproxy", &["-d", "-c", &path], SocketAddr::new(ip, port), scratch)
}

/// danted (SOCKS5 with CONNECT and UDP ASSOCIATE, no authentication) on `ip:port` inside `ns`, relaying from
/// the `external` addresses (one per family it should reach).
pub fn danted(ns: &Netns, ip: IpAddr, port: u16, external: &[IpAddr]) -> io::Result<Proxy> {
    let scratch = Scratch::new();
    let dir = scratch.0.display().to_string();
    let external: String = external.iter().map(|e| format!("external: {e}\n")).collect();
    let conf = format!(
        "logoutput: {dir}/danted.log\ninternal: {ip} port = {port}\n{external}\
         clientmethod: none\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n\
         client pass {{ from: 0/0 to: 0/0 }}\n\
         socks pass {{ from: 0/0 to: 0/0 command: connect udpassociate udpreply }}\n"
    );
    let path = scratch.write("danted.conf", &conf, 0o644).display().to_string();
    let pid = format!("{dir}/danted.pid");
    start(ns, "danted", &["-f", &path, "-N", "1", "-p", &pid], SocketAddr::new(ip, port), scratch)
}
