//! Policy routing for steered packets: `fwmark <tproxy_mark> lookup 2023` plus a `local default` route in table
//! 2023, IPv4 and IPv6, so a packet tc marked is delivered to the local socket it was assigned to even though its
//! destination is not one of ours. Installed at start (replacing leftovers of a dead daemon), removed at exit.

use std::net::{Ipv4Addr, Ipv6Addr};

use netlink_packet_route::{
    route::{RouteMessage, RouteScope, RouteType},
    rule::{RuleAction, RuleAttribute, RuleMessage},
};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::netlink::NetlinkError;

/// Priority of our rules: before the main table (32766), well after `local` (0).
const RULE_PRIORITY: u32 = 9_000;

fn err(what: &'static str) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    move |source| NetlinkError::Request { what, source }
}

fn local_routes(table: u32, lo: u32) -> [RouteMessage; 2] {
    let v4 = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .table_id(table)
        .output_interface(lo)
        .build();
    let v6 = RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .table_id(table)
        .output_interface(lo)
        .build();
    [v4, v6]
}

/// Installs the rules and routes (idempotently: an existing identical rule is deleted first).
pub async fn install(handle: &Handle, mark: u32, table: u32, lo: u32) -> Result<(), NetlinkError> {
    remove(handle, mark, table, lo).await;
    for route in local_routes(table, lo) {
        handle.route().add(route).replace().execute().await.map_err(err("adding the tproxy local route"))?;
    }
    let mut v4 =
        handle.rule().add().v4().fw_mark(mark).table_id(table).priority(RULE_PRIORITY).action(RuleAction::ToTable);
    v4.message_mut().attributes.push(RuleAttribute::FwMask(mark));
    v4.execute().await.map_err(err("adding the IPv4 fwmark rule"))?;
    let mut v6 =
        handle.rule().add().v6().fw_mark(mark).table_id(table).priority(RULE_PRIORITY).action(RuleAction::ToTable);
    v6.message_mut().attributes.push(RuleAttribute::FwMask(mark));
    v6.execute().await.map_err(err("adding the IPv6 fwmark rule"))?;
    Ok(())
}

/// Removes what [`install`] added; missing pieces are fine.
pub async fn remove(handle: &Handle, mark: u32, table: u32, lo: u32) {
    use futures::TryStreamExt;
    for version in [rtnetlink::IpVersion::V4, rtnetlink::IpVersion::V6] {
        let rules: Vec<RuleMessage> = handle.rule().get(version).execute().try_collect().await.unwrap_or_default();
        for rule in rules {
            let ours = rule.attributes.contains(&RuleAttribute::FwMark(mark))
                && rule.attributes.iter().any(|a| matches!(a, RuleAttribute::Table(t) if *t == table));
            if ours {
                let _ = handle.rule().del(rule).execute().await;
            }
        }
    }
    for route in local_routes(table, lo) {
        let _ = handle.route().del(route).execute().await;
    }
}
