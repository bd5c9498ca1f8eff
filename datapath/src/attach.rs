//! Attaching the programs to interfaces, and taking them off again.
//!
//! An [`Attacher`] owns the loaded object. Each interface gets XDP at ingress, tc ingress when it is a LAN
//! interface and tc egress when it is a WAN interface, in the variant its framing needs. tc uses TCX links on
//! kernels >= 6.6 and classic clsact filters below (or when asked). Links die with the process, so a crashed
//! daemon leaves no TCX or XDP attachment behind; clsact filters outlive it, which the admission lease covers
//! and the next start cleans up (filters carrying our program names are removed before we attach).

use std::{collections::HashMap, sync::Arc};

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSock, LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        tc::{NlOptions, SchedClassifierLinkId, TcAttachOptions, TcError, qdisc_add_clsact, qdisc_detach_program},
        xdp::XdpLinkId,
    },
    util::KernelVersion,
};
use datapath_abi::names::{
    PROG_CGROUP_SOCK_CREATE, PROG_TC_LAN_INGRESS_L2, PROG_TC_LAN_INGRESS_L3, PROG_TC_WAN_EGRESS_L2,
    PROG_TC_WAN_EGRESS_L3, PROG_XDP_L2, PROG_XDP_L3, PROG_XDP_LAN_L2, PROG_XDP_LAN_L3,
};
use tracing::{debug, info, warn};

use crate::links::{Framing, Link};

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid ones).
fn cgroup2_root() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == "cgroup2").then(|| std::path::PathBuf::from(point))
    })
}

/// Priority of our classic tc filters (netlink mode). Fixed so operators can find them (`tc filter show`).
const NETLINK_FILTER_PRIORITY: u16 = 0xDAE0;

/// How tc programs are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TcAttach {
    /// TCX on kernels >= 6.6, clsact filters below.
    Auto,
    /// TCX links.
    Tcx,
    /// Classic clsact qdisc + direct-action filters.
    Netlink,
}

/// How XDP is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpAttach {
    /// Native (driver) mode, generic mode where the driver has none.
    Auto,
    /// Native only.
    Native,
    /// Generic (skb) only.
    Generic,
    /// No XDP; tc parses every packet itself.
    Off,
}

/// What an interface is to the gateway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    /// A LAN interface: tc ingress tags forwarded client flows.
    pub lan: bool,
    /// A WAN interface: tc egress tags flows the gateway originates.
    pub wan: bool,
}

impl Roles {
    /// Neither role.
    pub fn is_empty(self) -> bool {
        !self.lan && !self.wan
    }
}

/// An attach or detach failure, naming the interface.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The object lacks a program.
    #[error("the eBPF object has no program {0}")]
    MissingProgram(&'static str),
    /// The kernel refused a program or attachment.
    #[error("{what} on {iface}: {source}")]
    Program {
        /// Which step.
        what: &'static str,
        /// Interface name.
        iface: String,
        /// Cause.
        source: ProgramError,
    },
    /// No cgroup v2 hierarchy is mounted.
    #[error("no cgroup v2 hierarchy is mounted (see /proc/self/mounts)")]
    NoCgroup2,
    /// The interface's framing has no program variant.
    #[error("{iface}: link type {link_type} is neither Ethernet nor a raw-IP link; not attached")]
    UnsupportedFraming {
        /// Interface name.
        iface: String,
        /// ARPHRD_* value.
        link_type: u16,
    },
}

/// One attached interface.
#[derive(Debug)]
pub struct Attachment {
    /// Interface index at attach time.
    pub ifindex: u32,
    /// Interface name at attach time.
    pub name: Arc<str>,
    /// Roles attached for.
    pub roles: Roles,
    /// Program variant.
    pub framing: Framing,
    /// XDP link and the mode it runs in.
    pub xdp: Option<(&'static str, XdpLinkId, XdpMode)>,
    /// tc ingress link (LAN).
    pub lan_tc: Option<(&'static str, SchedClassifierLinkId)>,
    /// tc egress link (WAN).
    pub wan_tc: Option<(&'static str, SchedClassifierLinkId)>,
    /// We added the clsact qdisc (netlink mode) and remove it on detach.
    pub created_clsact: bool,
}

/// What [`Attacher::detach`] took off.
#[derive(Debug, Clone)]
pub struct Detached {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name at attach time.
    pub name: Arc<str>,
    /// The loader added the clsact qdisc; the caller removes it if the interface still exists.
    pub created_clsact: bool,
}

/// Owns the loaded object and every attachment.
#[derive(Debug)]
pub struct Attacher {
    ebpf: Ebpf,
    use_tcx: bool,
    xdp: XdpAttach,
    prog_ids: HashMap<&'static str, u32>,
    attached: HashMap<u32, Attachment>,
}

impl Attacher {
    /// Takes over a loaded object (see [`crate::object::load`]).
    pub fn new(loaded: crate::object::Loaded, tc: TcAttach, xdp: XdpAttach) -> Self {
        let use_tcx = match tc {
            TcAttach::Tcx => true,
            TcAttach::Netlink => false,
            TcAttach::Auto => KernelVersion::current().map(|v| v >= KernelVersion::new(6, 6, 0)).unwrap_or(false),
        };
        Self { ebpf: loaded.ebpf, use_tcx, xdp, prog_ids: loaded.program_ids, attached: HashMap::new() }
    }

    /// The loaded object (for test runs such as the clock probe).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Attaches the socket-creation hook (`pname(...)` routing) to the cgroup v2 root, with other programs
    /// allowed beside it. Returns where cgroup v2 is mounted.
    pub fn attach_cgroup(&mut self) -> Result<std::path::PathBuf, AttachError> {
        let root = cgroup2_root().ok_or(AttachError::NoCgroup2)?;
        let dir = std::fs::File::open(&root).map_err(|e| AttachError::Program {
            what: "opening the cgroup v2 root",
            iface: root.display().to_string(),
            source: ProgramError::IOError(e),
        })?;
        let program: &mut CgroupSock = self
            .program(PROG_CGROUP_SOCK_CREATE)?
            .try_into()
            .map_err(|_| AttachError::MissingProgram(PROG_CGROUP_SOCK_CREATE))?;
        // A bpf link (what aya creates on this kernel) is always one of many on the cgroup; asking for
        // BPF_F_ALLOW_MULTI explicitly makes link_create fail with EINVAL.
        program.attach(dir, CgroupAttachMode::Single).map_err(|source| AttachError::Program {
            what: "attaching cgroup/sock_create",
            iface: root.display().to_string(),
            source,
        })?;
        Ok(root)
    }

    /// Whether tc programs go on TCX links.
    pub fn uses_tcx(&self) -> bool {
        self.use_tcx
    }

    /// The kernel id of a loaded program.
    pub fn program_id(&self, name: &str) -> Option<u32> {
        self.prog_ids.get(name).copied()
    }

    /// Current attachments by interface index.
    pub fn attachments(&self) -> impl Iterator<Item = &Attachment> {
        self.attached.values()
    }

    /// The attachment of `ifindex`.
    pub fn get(&self, ifindex: u32) -> Option<&Attachment> {
        self.attached.get(&ifindex)
    }

    /// Attaches to `link` for `roles`. On failure nothing stays attached to it.
    pub fn attach(&mut self, link: &Link, roles: Roles) -> Result<(), AttachError> {
        // LAN interfaces get the XDP variant that also drops what leading address-only rules block.
        let (xdp_prog, lan_prog, wan_prog) = match (link.framing, roles.lan) {
            (Framing::Ethernet, true) => (PROG_XDP_LAN_L2, PROG_TC_LAN_INGRESS_L2, PROG_TC_WAN_EGRESS_L2),
            (Framing::Ethernet, false) => (PROG_XDP_L2, PROG_TC_LAN_INGRESS_L2, PROG_TC_WAN_EGRESS_L2),
            (Framing::Raw, true) => (PROG_XDP_LAN_L3, PROG_TC_LAN_INGRESS_L3, PROG_TC_WAN_EGRESS_L3),
            (Framing::Raw, false) => (PROG_XDP_L3, PROG_TC_LAN_INGRESS_L3, PROG_TC_WAN_EGRESS_L3),
            (Framing::Unsupported(link_type), _) => {
                return Err(AttachError::UnsupportedFraming { iface: link.name.to_string(), link_type });
            }
        };
        let mut att = Attachment {
            ifindex: link.index,
            name: link.name.clone(),
            roles,
            framing: link.framing,
            xdp: None,
            lan_tc: None,
            wan_tc: None,
            created_clsact: false,
        };
        let result = self.attach_parts(link, &mut att, xdp_prog, lan_prog, wan_prog);
        match result {
            Ok(()) => {
                info!(
                    iface = %link.name, ifindex = link.index, lan = roles.lan, wan = roles.wan,
                    xdp = ?att.xdp.as_ref().map(|x| x.2), tcx = self.use_tcx, "attached"
                );
                self.attached.insert(link.index, att);
                Ok(())
            }
            Err(e) => {
                self.release(att);
                Err(e)
            }
        }
    }

    fn attach_parts(
        &mut self,
        link: &Link,
        att: &mut Attachment,
        xdp_prog: &'static str,
        lan_prog: &'static str,
        wan_prog: &'static str,
    ) -> Result<(), AttachError> {
        let iface = &*link.name;
        let modes: &[XdpMode] = match self.xdp {
            XdpAttach::Auto => &[XdpMode::Driver, XdpMode::Skb],
            XdpAttach::Native => &[XdpMode::Driver],
            XdpAttach::Generic => &[XdpMode::Skb],
            XdpAttach::Off => &[],
        };
        let mut last_err = None;
        for mode in modes {
            let xdp: &mut Xdp =
                self.program(xdp_prog)?.try_into().map_err(|_| AttachError::MissingProgram(xdp_prog))?;
            match xdp.attach_to_if_index(link.index, *mode) {
                Ok(id) => {
                    att.xdp = Some((xdp_prog, id, *mode));
                    break;
                }
                Err(e) => {
                    debug!(iface, ?mode, error = %e, "XDP attach mode refused");
                    last_err = Some(e);
                }
            }
        }
        if let (None, Some(source)) = (&att.xdp, last_err) {
            if self.xdp == XdpAttach::Auto {
                warn!(iface, error = %source, "XDP unavailable; tc parses packets itself");
            } else {
                return Err(AttachError::Program { what: "attaching XDP", iface: iface.into(), source });
            }
        }
        if !self.use_tcx && (att.roles.lan || att.roles.wan) {
            att.created_clsact = match qdisc_add_clsact(iface) {
                Ok(()) => true,
                Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => false,
                Err(e) => {
                    return Err(AttachError::Program { what: "adding clsact", iface: iface.into(), source: e.into() });
                }
            };
        }
        if att.roles.lan {
            att.lan_tc = Some((lan_prog, self.attach_tc(iface, lan_prog, TcAttachType::Ingress)?));
        }
        if att.roles.wan {
            att.wan_tc = Some((wan_prog, self.attach_tc(iface, wan_prog, TcAttachType::Egress)?));
        }
        Ok(())
    }

    fn attach_tc(
        &mut self,
        iface: &str,
        prog: &'static str,
        attach_type: TcAttachType,
    ) -> Result<SchedClassifierLinkId, AttachError> {
        let options = if self.use_tcx {
            TcAttachOptions::TcxOrder(LinkOrder::default())
        } else {
            // A filter left by a daemon that died without detaching carries the same program name.
            match qdisc_detach_program(iface, attach_type, prog) {
                Ok(()) => info!(iface, prog, "removed a filter left by an earlier daemon"),
                Err(e) => debug!(iface, prog, error = %e, "no leftover filter"),
            }
            TcAttachOptions::Netlink(NlOptions { priority: NETLINK_FILTER_PRIORITY, ..Default::default() })
        };
        let tc: &mut SchedClassifier = self.program(prog)?.try_into().map_err(|_| AttachError::MissingProgram(prog))?;
        tc.attach_with_options(iface, attach_type, options).map_err(|source| AttachError::Program {
            what: "attaching tc",
            iface: iface.into(),
            source,
        })
    }

    fn program(&mut self, name: &'static str) -> Result<&mut aya::programs::Program, AttachError> {
        self.ebpf.program_mut(name).ok_or(AttachError::MissingProgram(name))
    }

    /// Takes every program off `ifindex`. An interface that no longer exists has already lost its links; their
    /// detach errors are expected and only logged at debug level.
    pub fn detach(&mut self, ifindex: u32) -> Option<Detached> {
        let att = self.attached.remove(&ifindex)?;
        info!(iface = %att.name, ifindex, "detaching");
        let detached = Detached { ifindex, name: att.name.clone(), created_clsact: att.created_clsact };
        self.release(att);
        Some(detached)
    }

    /// Records a rename of an attached interface (links follow the index, not the name).
    pub fn renamed(&mut self, ifindex: u32, name: Arc<str>) {
        if let Some(att) = self.attached.get_mut(&ifindex) {
            att.name = name;
        }
    }

    fn release(&mut self, att: Attachment) {
        if let Some((prog, id, _)) = att.xdp
            && let Some(Ok(xdp)) = self.ebpf.program_mut(prog).map(<&mut Xdp>::try_from)
            && let Err(e) = xdp.detach(id)
        {
            debug!(iface = %att.name, error = %e, "XDP detach");
        }
        for (prog, id) in [att.lan_tc, att.wan_tc].into_iter().flatten() {
            if let Some(Ok(tc)) = self.ebpf.program_mut(prog).map(<&mut SchedClassifier>::try_from)
                && let Err(e) = tc.detach(id)
            {
                debug!(iface = %att.name, error = %e, "tc detach");
            }
        }
    }

    /// Whether the kernel still runs our programs on `link` (after a down/up flap some drivers drop them).
    /// XDP is checked from the link's own report; TCX by querying the interface; classic filters are trusted.
    pub fn still_attached(&self, link: &Link) -> bool {
        let Some(att) = self.attached.get(&link.index) else { return false };
        if let Some((prog, _, _)) = att.xdp
            && link.xdp_prog_id != self.program_id(prog)
        {
            return false;
        }
        if !self.use_tcx {
            return true;
        }
        let present = |prog: &str, attach_type| {
            let Some(want) = self.program_id(prog) else { return false };
            match SchedClassifier::query_tcx(&link.name, attach_type) {
                Ok((_, progs)) => progs.iter().any(|p| p.id() == want),
                Err(_) => false,
            }
        };
        att.lan_tc.as_ref().is_none_or(|(p, _)| present(p, TcAttachType::Ingress))
            && att.wan_tc.as_ref().is_none_or(|(p, _)| present(p, TcAttachType::Egress))
    }
}
