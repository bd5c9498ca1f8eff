//! The client -> gateway -> server topology.
//!
//! ```text
//!  client[i]                 gateway                         server
//!  daers<id>c<i> ---- veth ---- daers<id>l<i>   daers<id>w ---- veth ---- daers<id>s
//!  10.77.(10+i).2/24            10.77.(10+i).1  10.77.200.1                10.77.200.2/24
//!  fd77:(10+i)::2/64            fd77:(10+i)::1  fd77:200::1                fd77:200::2/64
//! ```
//! The gateway forwards (IPv4 and IPv6) without NAT; clients and the server route through it. Everything lives in
//! namespaces this process created, so traffic never leaves the machine.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::netns::{Netns, PREFIX, unique_id};

/// One LAN segment: a client namespace and its veth pair into the gateway.
#[derive(Debug)]
pub struct Lan {
    /// The client namespace.
    pub client: Netns,
    /// Interface name inside the client.
    pub client_if: String,
    /// Interface name on the gateway (the LAN interface).
    pub gateway_if: String,
    /// Client IPv4 address.
    pub client_v4: Ipv4Addr,
    /// Client IPv6 address.
    pub client_v6: Ipv6Addr,
    /// Gateway IPv4 address on this LAN.
    pub gateway_v4: Ipv4Addr,
    /// Gateway IPv6 address on this LAN.
    pub gateway_v6: Ipv6Addr,
}

/// The whole topology; dropping it deletes every namespace (and with them every veth).
#[derive(Debug)]
pub struct Topology {
    /// The 6-hex-digit id in every name.
    pub id: String,
    /// LAN segments, at least one.
    pub lans: Vec<Lan>,
    /// The gateway namespace (where `dae run` runs).
    pub gateway: Netns,
    /// The server namespace.
    pub server: Netns,
    /// The gateway's WAN interface.
    pub wan_if: String,
    /// Interface name inside the server.
    pub server_if: String,
    /// Gateway WAN IPv4 address.
    pub gateway_wan_v4: Ipv4Addr,
    /// Gateway WAN IPv6 address.
    pub gateway_wan_v6: Ipv6Addr,
    /// Server IPv4 address.
    pub server_v4: Ipv4Addr,
    /// Server IPv6 address.
    pub server_v6: Ipv6Addr,
}

const WAN_NET: u8 = 200;
const FIRST_LAN_NET: u8 = 10;

impl Topology {
    /// One client, the gateway, the server.
    pub fn client_gateway_server() -> io::Result<Self> {
        Self::with_lans(1)
    }

    /// `lans` clients, each on its own LAN interface of the gateway, plus the server.
    pub fn with_lans(lans: usize) -> io::Result<Self> {
        assert!((1..=9).contains(&lans), "1 to 9 LAN segments");
        let id = unique_id();
        let gateway = Netns::create(&id, "gw")?;
        let server = Netns::create(&id, "srv")?;
        let wan_if = format!("{PREFIX}{id}w");
        let server_if = format!("{PREFIX}{id}s");
        let mut topo = Self {
            lans: Vec::new(),
            gateway,
            server,
            wan_if,
            server_if,
            gateway_wan_v4: Ipv4Addr::new(10, 77, WAN_NET, 1),
            gateway_wan_v6: v6(WAN_NET, 1),
            server_v4: Ipv4Addr::new(10, 77, WAN_NET, 2),
            server_v6: v6(WAN_NET, 2),
            id,
        };
        veth(&topo.gateway, &topo.wan_if, &topo.server, &topo.server_if)?;
        address(&topo.gateway, &topo.wan_if, topo.gateway_wan_v4.into(), topo.gateway_wan_v6.into())?;
        address(&topo.server, &topo.server_if, topo.server_v4.into(), topo.server_v6.into())?;
        topo.server.ip(&["route", "add", "default", "via", &topo.gateway_wan_v4.to_string()])?;
        topo.server.ip(&["-6", "route", "add", "default", "via", &topo.gateway_wan_v6.to_string()])?;
        for i in 0..lans {
            let lan = topo.add_lan(i)?;
            topo.lans.push(lan);
        }
        topo.gateway.sysctl("net.ipv4.ip_forward", "1")?;
        topo.gateway.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        Ok(topo)
    }

    fn add_lan(&self, i: usize) -> io::Result<Lan> {
        let net = FIRST_LAN_NET + i as u8;
        let client = Netns::create(&self.id, &format!("cl{i}"))?;
        let lan = Lan {
            client_if: format!("{PREFIX}{}c{i}", self.id),
            gateway_if: format!("{PREFIX}{}l{i}", self.id),
            client_v4: Ipv4Addr::new(10, 77, net, 2),
            client_v6: v6(net, 2),
            gateway_v4: Ipv4Addr::new(10, 77, net, 1),
            gateway_v6: v6(net, 1),
            client,
        };
        veth(&lan.client, &lan.client_if, &self.gateway, &lan.gateway_if)?;
        address(&lan.client, &lan.client_if, lan.client_v4.into(), lan.client_v6.into())?;
        address(&self.gateway, &lan.gateway_if, lan.gateway_v4.into(), lan.gateway_v6.into())?;
        lan.client.ip(&["route", "add", "default", "via", &lan.gateway_v4.to_string()])?;
        lan.client.ip(&["-6", "route", "add", "default", "via", &lan.gateway_v6.to_string()])?;
        Ok(lan)
    }

    /// The first LAN.
    pub fn lan(&self) -> &Lan {
        &self.lans[0]
    }

    /// Deletes LAN `i`'s veth pair (both ends go).
    pub fn delete_lan_link(&self, i: usize) -> io::Result<()> {
        self.gateway.ip(&["link", "del", &self.lans[i].gateway_if]).map(|_| ())
    }

    /// Re-creates LAN `i`'s veth pair with its addresses and the client's routes (new ifindexes).
    pub fn recreate_lan_link(&self, i: usize) -> io::Result<()> {
        let lan = &self.lans[i];
        veth(&lan.client, &lan.client_if, &self.gateway, &lan.gateway_if)?;
        address(&lan.client, &lan.client_if, lan.client_v4.into(), lan.client_v6.into())?;
        address(&self.gateway, &lan.gateway_if, lan.gateway_v4.into(), lan.gateway_v6.into())?;
        lan.client.ip(&["route", "replace", "default", "via", &lan.gateway_v4.to_string()])?;
        lan.client.ip(&["-6", "route", "replace", "default", "via", &lan.gateway_v6.to_string()])?;
        Ok(())
    }

    /// The index of `ifname` inside the gateway namespace.
    pub fn gateway_ifindex(&self, ifname: &str) -> io::Result<u32> {
        ifindex(&self.gateway, ifname)
    }
}

/// The index of `ifname` inside `ns`.
pub fn ifindex(ns: &Netns, ifname: &str) -> io::Result<u32> {
    let out = ns.ip(&["-o", "link", "show", "dev", ifname])?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no index in {text:?}")))
}

fn v6(net: u8, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd77, u16::from(net), 0, 0, 0, 0, 0, host)
}

/// Creates a veth pair with one end in each namespace, both up. Created directly in the target namespaces, so
/// the names never appear in the caller's namespace.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> io::Result<()> {
    crate::netns::run_ok(std::process::Command::new("ip").args([
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]))?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// Makes the link from `sender_if` (in `sender`) into `receiver_if` (in `receiver`) deliver a sender's single
/// datagrams as a NIC under load does: the sender's side leaves checksum offload off, so datagrams arrive with
/// their checksum filled in (GRO does not merge the checksum-pending datagrams of a local sender); the
/// receiver's side has GRO on and polls with `gro_flush_timeout` = `coalesce_ns` and `napi_defer_hard_irqs` = 2,
/// so its NAPI takes what arrived in that time at once (interrupt coalescing). With 0 every datagram is polled
/// by itself, as a veth's NAPI runs in its sender's context.
pub fn coalesce_like_a_nic(
    sender: &Netns,
    sender_if: &str,
    receiver: &Netns,
    receiver_if: &str,
    coalesce_ns: u32,
) -> io::Result<()> {
    sender.run("ethtool", &["-K", sender_if, "tx", "off"])?;
    receiver.run("ethtool", &["-K", receiver_if, "gro", "on"])?;
    // `ip netns exec` mounts the namespace's own sysfs, where these per-device knobs live (`nsenter --net`
    // keeps the caller's).
    let knobs = format!(
        "echo {coalesce_ns} > /sys/class/net/{receiver_if}/gro_flush_timeout && \
         echo 2 > /sys/class/net/{receiver_if}/napi_defer_hard_irqs"
    );
    crate::netns::run_ok(std::process::Command::new("ip").args(["netns", "exec", receiver.name(), "sh", "-c", &knobs]))
        .map(|_| ())
}

/// `(rx-gro, rx-udp-gro-forwarding)` of `ifname` in `ns`, as `ethtool -k` reports them (it calls rx-gro
/// `generic-receive-offload`).
pub fn gro_features(ns: &Netns, ifname: &str) -> io::Result<(bool, bool)> {
    let out = ns.run("ethtool", &["-k", ifname])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let on = |feature: &str| -> io::Result<bool> {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{feature}:")))
            .ok_or_else(|| io::Error::other(format!("ethtool -k {ifname} has no {feature}: {text}")))?;
        Ok(line.split_whitespace().nth(1) == Some("on"))
    };
    Ok((on("generic-receive-offload")?, on("rx-udp-gro-forwarding")?))
}

fn address(ns: &Netns, ifname: &str, v4: IpAddr, v6: IpAddr) -> io::Result<()> {
    ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname])?;
    ns.ip(&["-6", "addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"])?;
    Ok(())
}
