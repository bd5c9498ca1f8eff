//! The local steering device: how proxied flows the gateway itself originates reach the workers.
//!
//! `bpf_sk_assign` works at tc ingress only, and a local process's packets meet our programs at WAN egress. So
//! WAN egress redirects them (`bpf_redirect` with `BPF_F_INGRESS`) to the receive path of a veth pair the daemon
//! owns, `daers<hash>s` / `daers<hash>p` (named after the instance, so two daemons never share one); its
//! ingress program assigns the first packet of a flow to the worker socket the WAN program chose and leaves the
//! tproxy mark for policy routing, exactly as LAN steering does. The packets carry a local source address,
//! so the device accepts local sources (`accept_local`) and does no reverse-path check. Replies from the
//! worker's transparent socket go to a local address and are delivered over `lo`.
//!
//! The pair is created at start (a leftover of a killed daemon is deleted first) and deleted at exit.

use std::hash::{Hash, Hasher};

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType,
    tc::{SchedClassifierLinkId, TcAttachOptions},
};
use datapath_abi::names::PROG_TC_LOCAL_INGRESS;
use futures::TryStreamExt;
use rtnetlink::{Handle, LinkUnspec, LinkVeth};
use tracing::{debug, info, warn};

/// The device pair of `instance`: (the end whose ingress receives redirected packets, its peer).
pub fn device_names(instance: &str) -> (String, String) {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    instance.hash(&mut hasher);
    let tag = format!("{:08x}", hasher.finish() as u32);
    (format!("daers{tag}s"), format!("daers{tag}p"))
}

/// The device, up and attached.
#[derive(Debug)]
pub struct LocalSteering {
    /// The receiving end's name.
    pub name: String,
    /// Its ifindex (what WAN egress redirects to).
    pub ifindex: u32,
    link: Option<SchedClassifierLinkId>,
}

async fn index_of(handle: &Handle, name: &str) -> Option<u32> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    links.try_next().await.ok().flatten().map(|message| message.header.index)
}

fn sysctl(path: &str, value: &str) {
    if let Err(e) = std::fs::write(path, value) {
        warn!(path, error = %e, "setting a sysctl for the local steering device");
    }
}

impl LocalSteering {
    /// Creates the pair (deleting a leftover of the same name), sets its sysctls and attaches the ingress
    /// program with `tcx` (else a clsact filter).
    pub async fn create(
        handle: &Handle,
        ebpf: &mut aya::Ebpf,
        instance: &str,
        tcx: bool,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let (name, peer) = device_names(instance);
        if let Some(index) = index_of(handle, &name).await {
            info!(device = %name, "removing the local steering device an earlier daemon left");
            handle.link().del(index).execute().await?;
        }
        handle.link().add(LinkVeth::new(&name, &peer).up().build()).execute().await?;
        handle.link().set(LinkUnspec::new_with_name(&peer).up().build()).execute().await?;
        let ifindex = index_of(handle, &name).await.ok_or("the local steering device vanished")?;
        sysctl(&format!("/proc/sys/net/ipv4/conf/{name}/accept_local"), "1");
        sysctl(&format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "0");
        let all = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter").unwrap_or_default();
        if all.trim() != "0" {
            warn!(
                rp_filter = all.trim(),
                "net.ipv4.conf.all.rp_filter is on: gateway-originated IPv4 flows routed to a group may be dropped \
                 by the reverse-path check (set it to 0 to proxy them)"
            );
        }
        let program: &mut SchedClassifier =
            ebpf.program_mut(PROG_TC_LOCAL_INGRESS).ok_or("tc_local_ingress missing from the object")?.try_into()?;
        let options = if tcx {
            TcAttachOptions::TcxOrder(LinkOrder::default())
        } else {
            let _ = aya::programs::tc::qdisc_add_clsact(&name);
            TcAttachOptions::Netlink(Default::default())
        };
        let link = program.attach_with_options(&name, TcAttachType::Ingress, options)?;
        info!(device = %name, ifindex, "gateway-originated proxied flows steer through the local device");
        Ok(Self { name, ifindex, link: Some(link) })
    }

    /// Detaches the program and deletes the pair.
    pub async fn remove(&mut self, handle: &Handle, ebpf: &mut aya::Ebpf) {
        if let (Some(link), Some(program)) = (self.link.take(), ebpf.program_mut(PROG_TC_LOCAL_INGRESS)) {
            let program: Result<&mut SchedClassifier, _> = program.try_into();
            if let Ok(program) = program {
                let _ = program.detach(link);
            }
        }
        if let Err(e) = handle.link().del(self.ifindex).execute().await {
            debug!(device = %self.name, error = %e, "deleting the local steering device");
        }
    }
}
