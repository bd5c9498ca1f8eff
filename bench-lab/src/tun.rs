//! A tun device inside a namespace: a link without an Ethernet header whose "wire" is a file descriptor, so a
//! test can inject IP packets as if they arrived on it.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::fd::AsRawFd,
};

use crate::netns::Netns;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open tun device; the device goes away when this drops (it is not persistent).
#[derive(Debug)]
pub struct Tun {
    file: File,
    /// Interface name.
    pub name: String,
}

impl Tun {
    /// Creates tun device `name` inside `ns` (IFF_TUN, no packet information header).
    #[allow(unsafe_code)]
    pub fn create(ns: &Netns, name: &str) -> io::Result<Self> {
        let owned = name.to_string();
        let file = ns.run_in(move || -> io::Result<File> {
            let file = OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
            let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: IFF_TUN | IFF_NO_PI, _pad: [0; 22] };
            let bytes = owned.as_bytes();
            if bytes.len() >= libc::IFNAMSIZ {
                return Err(io::Error::other("tun name too long"));
            }
            req.name[..bytes.len()].copy_from_slice(bytes);
            // SAFETY: TUNSETIFF with a properly sized, initialised ifreq on a tun fd.
            if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(file)
        })??;
        Ok(Self { file, name: name.to_string() })
    }

    /// Injects one IP packet: the kernel receives it on the tun interface.
    pub fn inject(&mut self, packet: &[u8]) -> io::Result<()> {
        self.file.write_all(packet)
    }
}
