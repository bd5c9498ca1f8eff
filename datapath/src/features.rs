//! Device features `dae run` turns on for the gateway's own receive path, and puts back as it found them.
//!
//! Forwarded UDP is merged by a device's GRO only with `rx-udp-gro-forwarding` (off by default): a datagram
//! that tc steers to a worker's tproxy socket is, at GRO time, addressed to a remote host, so GRO finds no local
//! socket asking for merged receives and, without the feature, leaves every datagram by itself. With it (and
//! `rx-gro`), a NIC's poll merges a train of one flow's datagrams and the worker reads the run in one receive
//! (`udp_steer_gro_receives`). [`LanGro`] turns both on for every LAN link it is given, remembers what it
//! changed, and restores exactly that when the link is detached or the daemon stops. A daemon killed with
//! SIGKILL leaves the features on: the device forwards as before, only merging UDP trains (the kernel segments
//! a merged run again wherever it leaves unmerged).
//!
//! The features are read and written through the `SIOCETHTOOL` ioctl (`ETHTOOL_GFEATURES`/`SFEATURES`, the
//! names from the `ETH_SS_FEATURES` string set), as `ethtool -k`/`-K` does on kernels without the netlink API.

use std::{collections::HashMap, io, os::fd::AsRawFd, sync::Arc};

use tracing::{info, warn};

/// The features [`LanGro`] turns on, in the order the kernel needs them (`rx-udp-gro-forwarding` merges only
/// where GRO runs at all).
pub const LAN_GRO_FEATURES: [&str; 2] = ["rx-gro", "rx-udp-gro-forwarding"];

const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;
const IFNAMSIZ: usize = 16;

/// `struct ifreq` with `ifr_data` (40 bytes on 64-bit: the union is 24).
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// One device's features as `ETHTOOL_GFEATURES` reports them.
#[derive(Debug, Clone)]
pub struct Features {
    names: Vec<String>,
    /// Per 32-feature block: available (changeable), requested, active, never changed.
    blocks: Vec<[u32; 4]>,
}

/// A feature's state on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureState {
    /// The driver lets it be changed.
    pub changeable: bool,
    /// What was asked for (what `ethtool -K` sets).
    pub requested: bool,
    /// What the device does now.
    pub active: bool,
}

impl Features {
    /// Reads the features of `ifname` (in the calling thread's network namespace).
    pub fn read(ifname: &str) -> io::Result<Self> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        let fd = socket.as_raw_fd();
        let count = feature_count(fd, ifname)?;
        let names = feature_names(fd, ifname, count)?;
        let size = count.div_ceil(32);
        let mut buf = vec![0u32; 2 + 4 * size];
        buf[0] = ETHTOOL_GFEATURES;
        buf[1] = size as u32;
        ethtool(fd, ifname, buf.as_mut_ptr().cast())?;
        let blocks = buf[2..].chunks_exact(4).map(|b| [b[0], b[1], b[2], b[3]]).collect();
        Ok(Self { names, blocks })
    }

    fn bit(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The state of feature `name`, or `None` if the kernel has no such feature.
    pub fn get(&self, name: &str) -> Option<FeatureState> {
        let bit = self.bit(name)?;
        let [available, requested, active, _] = self.blocks[bit / 32];
        let mask = 1u32 << (bit % 32);
        Some(FeatureState {
            changeable: available & mask != 0,
            requested: requested & mask != 0,
            active: active & mask != 0,
        })
    }
}

/// Asks for `wanted` on `ifname` (each feature to its value), leaving every other feature as it is.
pub fn request(ifname: &str, wanted: &[(&str, bool)]) -> io::Result<()> {
    let features = Features::read(ifname)?;
    let mut buf = vec![0u32; 2 + 2 * features.blocks.len()];
    buf[0] = ETHTOOL_SFEATURES;
    buf[1] = features.blocks.len() as u32;
    for &(name, on) in wanted {
        let bit = features
            .bit(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, format!("this kernel has no feature {name}")))?;
        let mask = 1u32 << (bit % 32);
        let block = 2 + 2 * (bit / 32);
        buf[block] |= mask;
        if on {
            buf[block + 1] |= mask;
        }
    }
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // A positive return says some request could not be met (ETHTOOL_F_*); the caller reads back what holds.
    ethtool(socket.as_raw_fd(), ifname, buf.as_mut_ptr().cast())?;
    Ok(())
}

fn feature_count(fd: i32, ifname: &str) -> io::Result<usize> {
    // struct ethtool_sset_info: cmd, reserved, sset_mask (u64), then one u32 per set in the mask.
    let mut buf = [0u32; 5];
    buf[0] = ETHTOOL_GSSET_INFO;
    buf[2] = 1 << ETH_SS_FEATURES;
    ethtool(fd, ifname, buf.as_mut_ptr().cast())?;
    if buf[2] & (1 << ETH_SS_FEATURES) == 0 {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "no ETH_SS_FEATURES string set"));
    }
    Ok(buf[4] as usize)
}

fn feature_names(fd: i32, ifname: &str, count: usize) -> io::Result<Vec<String>> {
    // struct ethtool_gstrings: cmd, string_set, len, then len names of ETH_GSTRING_LEN bytes.
    let words = 3 + (count * ETH_GSTRING_LEN).div_ceil(4);
    let mut buf = vec![0u32; words];
    buf[0] = ETHTOOL_GSTRINGS;
    buf[1] = ETH_SS_FEATURES;
    buf[2] = count as u32;
    ethtool(fd, ifname, buf.as_mut_ptr().cast())?;
    let len = (buf[2] as usize).min(count);
    // SAFETY: the buffer holds `words` u32s; the names start after the 12-byte header and fill len * 32 bytes
    // of it.
    let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().add(3).cast::<u8>(), len * ETH_GSTRING_LEN) };
    Ok(bytes
        .chunks_exact(ETH_GSTRING_LEN)
        .map(|name| {
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            String::from_utf8_lossy(&name[..end]).into_owned()
        })
        .collect())
}

/// One `SIOCETHTOOL` call on `ifname` with the command block at `data`.
fn ethtool(fd: i32, ifname: &str, data: *mut libc::c_void) -> io::Result<i32> {
    if ifname.len() >= IFNAMSIZ || ifname.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not an interface name: {ifname:?}")));
    }
    let mut req = IfReq { name: [0; IFNAMSIZ], data, _pad: [0; 16] };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: `req` is a valid ifreq whose data pointer points at a command block the caller sized for the
    // command it names; the kernel writes only within it.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut req) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// Whether `dae run` turns on GRO forwarding on its LAN links (`--lan-gro-forwarding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LanGroForwarding {
    /// Turn `rx-gro` and `rx-udp-gro-forwarding` on while attached; put them back on detach and exit.
    On,
    /// Leave the devices' features as they are.
    Off,
}

/// What [`LanGro`] changed on one link: each feature with the value it had asked for before.
#[derive(Debug)]
struct Changed {
    name: Arc<str>,
    before: Vec<(&'static str, bool)>,
}

/// Turns GRO forwarding on for LAN links and restores it (see the module docs).
#[derive(Debug, Default)]
pub struct LanGro {
    changed: HashMap<u32, Changed>,
}

impl LanGro {
    /// Turns [`LAN_GRO_FEATURES`] on for link `ifindex` (`name`), remembering what it changes. A feature the
    /// driver does not let change, or a failure, is logged and leaves the link as it was.
    pub fn enable(&mut self, ifindex: u32, name: &Arc<str>) {
        let features = match Features::read(name) {
            Ok(features) => features,
            Err(e) => {
                warn!(iface = %name, error = %e, "reading device features: GRO forwarding stays as it is");
                return;
            }
        };
        let mut wanted = Vec::new();
        for feature in LAN_GRO_FEATURES {
            match features.get(feature) {
                Some(state) if state.requested => {}
                Some(state) if state.changeable => wanted.push((feature, state.requested)),
                Some(_) => {
                    info!(iface = %name, feature, "fixed off by the driver: forwarded UDP is not merged here");
                    return;
                }
                None => {
                    info!(iface = %name, feature, "this kernel has no such feature: forwarded UDP is not merged");
                    return;
                }
            }
        }
        if wanted.is_empty() {
            return;
        }
        let on: Vec<(&str, bool)> = wanted.iter().map(|&(feature, _)| (feature, true)).collect();
        if let Err(e) = request(name, &on) {
            warn!(iface = %name, error = %e, "turning GRO forwarding on");
            return;
        }
        let entry = self.changed.entry(ifindex).or_insert_with(|| Changed { name: name.clone(), before: Vec::new() });
        entry.name = name.clone();
        for (feature, before) in wanted {
            if !entry.before.iter().any(|(f, _)| *f == feature) {
                entry.before.push((feature, before));
            }
        }
        info!(iface = %name, features = ?on.iter().map(|(f, _)| *f).collect::<Vec<_>>(), "GRO forwarding on (restored on exit)");
    }

    /// Link `ifindex` is now called `name`.
    pub fn renamed(&mut self, ifindex: u32, name: &Arc<str>) {
        if let Some(changed) = self.changed.get_mut(&ifindex) {
            changed.name = name.clone();
        }
    }

    /// Puts back what [`enable`](Self::enable) changed on `ifindex`, if the link still exists (`present`).
    pub fn restore(&mut self, ifindex: u32, present: bool) {
        let Some(changed) = self.changed.remove(&ifindex) else { return };
        if !present {
            return;
        }
        // Reverse order: rx-udp-gro-forwarding goes off before rx-gro.
        let wanted: Vec<(&str, bool)> = changed.before.iter().rev().copied().collect();
        match request(&changed.name, &wanted) {
            Ok(()) => info!(iface = %changed.name, restored = ?wanted, "device features restored"),
            Err(e) => warn!(iface = %changed.name, error = %e, "restoring device features"),
        }
    }

    /// Links with features to restore.
    pub fn links(&self) -> Vec<u32> {
        self.changed.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_features_read_and_name_gro() {
        // Every device has the generic features; loopback is in every namespace, and reading needs no privilege.
        let features = Features::read("lo").unwrap();
        assert!(features.get("rx-gro").is_some(), "{features:?}");
        assert!(features.get("rx-udp-gro-forwarding").is_some(), "{features:?}");
        assert!(features.get("no-such-feature").is_none());
    }

    #[test]
    fn a_missing_device_is_an_error() {
        let err = Features::read("daersnosuchif").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");
        assert!(Features::read("a-name-longer-than-ifnamsiz").is_err());
    }
}
