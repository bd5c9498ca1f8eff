//! rtnetlink plumbing: link dumps, the RTM_NEWLINK/RTM_DELLINK stream, default routes, clsact removal.
//!
//! Everything here runs on the control thread's runtime. Events can be lost (a full multicast socket buffer
//! answers ENOBUFS), which is why the daemon also reconciles from a full dump periodically.

use std::net::{Ipv4Addr, Ipv6Addr};

use futures::{StreamExt, TryStreamExt, channel::mpsc::UnboundedReceiver};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkMessage, LinkXdp},
    route::{RouteAttribute, RouteHeader, RouteMessage},
};
use rtnetlink::{
    Handle, MulticastGroup, RouteMessageBuilder, new_connection, new_multicast_connection,
    packet_core::{NetlinkMessage, NetlinkPayload},
    sys::SocketAddr,
};

use crate::links::{Framing, Link};

/// A netlink failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// Opening a netlink socket failed.
    #[error("opening a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    /// A request failed.
    #[error("{what}: {source}")]
    Request {
        /// The request.
        what: &'static str,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
}

/// A link event from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// RTM_NEWLINK: created, renamed, up/down, XDP change.
    New(Link),
    /// RTM_DELLINK.
    Del(u32),
}

/// Decodes a link message into what the cache keeps.
pub fn link_from_message(msg: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut xdp_prog_id = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.as_str()),
            LinkAttribute::Xdp(xdp) => {
                xdp_prog_id = xdp
                    .iter()
                    .find_map(|x| match x {
                        LinkXdp::ProgId(id) => Some(*id),
                        _ => None,
                    })
                    .filter(|id| *id != 0);
            }
            _ => {}
        }
    }
    Some(Link {
        index: msg.header.index,
        name: name?.into(),
        up: msg.header.flags.contains(LinkFlags::Up),
        framing: Framing::from_arphrd(msg.header.link_layer_type.into()),
        xdp_prog_id,
    })
}

/// A request connection on the current runtime.
pub fn connect() -> Result<Handle, NetlinkError> {
    let (conn, handle, _) = new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Every link of the namespace.
pub async fn dump_links(handle: &Handle) -> Result<Vec<Link>, NetlinkError> {
    let messages: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|source| NetlinkError::Request { what: "dumping links", source })?;
    Ok(messages.iter().filter_map(link_from_message).collect())
}

/// Indexes of the links that own a default route (IPv4 or IPv6, main table): `wan_interface: auto`.
pub async fn default_route_links(handle: &Handle) -> Result<Vec<u32>, NetlinkError> {
    let mut out = Vec::new();
    let requests = [RouteMessageBuilder::<Ipv4Addr>::new().build(), RouteMessageBuilder::<Ipv6Addr>::new().build()];
    for request in requests {
        let routes: Vec<RouteMessage> = handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Request { what: "dumping routes", source })?;
        for route in routes.iter().filter(|r| is_main_default(r)) {
            for attr in &route.attributes {
                match attr {
                    RouteAttribute::Oif(index) => out.push(*index),
                    RouteAttribute::MultiPath(hops) => out.extend(hops.iter().map(|h| h.interface_index)),
                    _ => {}
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn is_main_default(route: &RouteMessage) -> bool {
    let table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table));
    route.header.destination_prefix_length == 0 && table == u32::from(RouteHeader::RT_TABLE_MAIN)
}

/// Deletes the clsact qdisc of `ifindex` (only ever one the loader created itself).
pub async fn delete_clsact(handle: &Handle, ifindex: u32) -> Result<(), NetlinkError> {
    const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
    const CLSACT_HANDLE: u32 = 0xFFFF_0000;
    let mut request = handle.clone().qdisc().del(ifindex as i32);
    request.message_mut().header.parent = TC_H_CLSACT.into();
    request.message_mut().header.handle = CLSACT_HANDLE.into();
    request.execute().await.map_err(|source| NetlinkError::Request { what: "deleting clsact", source })
}

/// The RTM_NEWLINK/RTM_DELLINK stream.
#[derive(Debug)]
pub struct LinkMonitor {
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
}

impl LinkMonitor {
    /// Subscribes to link events on the current runtime. Subscribe before dumping so nothing falls in between.
    pub fn subscribe() -> Result<Self, NetlinkError> {
        let (conn, _handle, messages) = new_multicast_connection(&[MulticastGroup::Link])?;
        tokio::spawn(conn);
        Ok(Self { messages })
    }

    /// The next link event; `None` when the socket closed.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        loop {
            let (msg, _) = self.messages.next().await?;
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    if let Some(link) = link_from_message(&link) {
                        return Some(LinkEvent::New(link));
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    return Some(LinkEvent::Del(link.header.index));
                }
                _ => {}
            }
        }
    }
}
