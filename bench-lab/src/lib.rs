//! The reproducible lab of dae-rs.
//!
//! - [`netns`]: a network namespace as an owned value (deleted on drop, also while unwinding from a panic), with
//!   helpers to run commands inside it.
//! - [`topology`]: the client -> gateway -> server topology (veth pairs, IPv4 and IPv6, routing) every
//!   privileged test and lab scenario starts from.
//! - [`dns`]: `nsd` serving a zone in a namespace, `kdig`, a scratch folder.
//! - [`daemon`]: a `dae` process started inside a namespace, with its log, readiness and `dae flows`/`dae stats`.
//!
//! - [`traffic`]: UDP and TCP echo servers and clients that run inside a namespace (real sockets).
//! - [`tun`]: a tun device inside a namespace, for links without an Ethernet header.
//! - [`proxies`]: microsocks (SOCKS5) and tinyproxy (HTTP CONNECT) inside a namespace.
//! - [`packet`]: crafted frames for BPF_PROG_TEST_RUN.
//!
//! Every name this crate creates starts with `daers` and carries the creating process id, so
//! [`netns::sweep_stale`] can remove what a killed test run left behind without touching anything else.
#![deny(unsafe_code)]

pub mod daemon;
pub mod dns;
pub mod netns;
pub mod packet;
pub mod proxies;
pub mod topology;
pub mod traffic;
pub mod tun;

/// Whether this process may create namespaces and load eBPF (root). Privileged tests print a skip line otherwise.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// Prints why a privileged test is skipped and returns true when it must be.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("SKIP {test}: needs root (network namespaces, eBPF); CI runs it as root");
    true
}
