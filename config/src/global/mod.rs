//! The typed `global` section.
//!
//! Every key of dae's `global` section (dae v2.0.0, `config/config.go`) is recognised and its value
//! type-checked. Keys dae-rs already acts on are listed under "implemented" on [`Global`]; the others are
//! kept typed but produce a warning, so nothing the user wrote is dropped silently. Keys dae itself
//! deprecated are accepted with a warning and not stored.

mod decode;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::interface::{InterfacePattern, WanInterface};
use decode::KEYS;
pub(crate) use decode::decode_global;

/// Log verbosity, from least to most verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// `error`
    Error,
    /// `warn` (dae also reads `warning`)
    Warn,
    /// `info`
    Info,
    /// `debug`
    Debug,
    /// `trace`
    Trace,
}

/// How traffic sent through a proxy names its destination (`dial_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialMode {
    /// `ip`: dial the destination IP.
    Ip,
    /// `domain`: dial the sniffed domain when it is consistent with the IP the client resolved.
    Domain,
    /// `domain+`: dial the sniffed domain without checking it against the IP.
    DomainPlus,
    /// `domain++`: like `domain+`, and re-route by the sniffed domain.
    DomainPlusPlus,
}

/// Which TLS stack dials TLS proxies (`tls_implementation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsImplementation {
    /// `tls`: the standard library stack.
    Tls,
    /// `utls`: a stack that imitates a browser's ClientHello (see `utls_imitate`).
    Utls,
}

/// An inclusive range of whole numbers, written `min-max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NumberRange {
    /// Lower bound.
    pub min: u32,
    /// Upper bound, at least `min`.
    pub max: u32,
}

/// The `global` section. Defaults are dae's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    // ---- implemented ----
    /// `lan_interface`: interfaces whose clients are proxied. Default: none.
    pub lan_interface: Vec<InterfacePattern>,
    /// `wan_interface`: interfaces whose locally originated traffic is proxied; may contain `auto`.
    /// Default: none.
    pub wan_interface: Vec<WanInterface>,
    /// `log_level`. Default: `info`.
    pub log_level: LogLevel,
    /// `tproxy_port`: the port the datapath steers traffic to (not a SOCKS/HTTP port). Default: 12345.
    pub tproxy_port: u16,
    /// `so_mark_from_dae`: the fwmark set on dae's own sockets. `None` when not written (dae then chooses);
    /// `Some(0)` when explicitly zero.
    pub so_mark_from_dae: Option<u32>,
    /// `sniffing_timeout`: how long to wait for the first client bytes to sniff a domain. Default: 30 ms.
    pub sniffing_timeout: Duration,
    /// `dial_mode`. Default: `domain`.
    pub dial_mode: DialMode,
    /// `check_interval`: time between node health checks. Default: 30 s; must be more than zero.
    pub check_interval: Duration,
    /// `check_tolerance`: a group switches nodes only when the new latency is lower by more than this.
    /// Default: 0.
    pub check_tolerance: Duration,
    /// `bpf_conn_state_map_size`: capacity of the kernel connection-state map. Default: 262144.
    pub bpf_conn_state_map_size: u32,

    // ---- recognised, type-checked, not implemented yet (each use warns) ----
    /// `tproxy_port_protect`. Default: `true`.
    pub tproxy_port_protect: bool,
    /// `tcp_check_url`: an http(s) URL, then optional fixed IPs of its host. Default:
    /// `http://cp.cloudflare.com,1.1.1.1,2606:4700:4700::1111`.
    pub tcp_check_url: Vec<String>,
    /// `tcp_check_http_method`. Default: `HEAD`.
    pub tcp_check_http_method: String,
    /// `udp_check_dns`: `host:port`, then optional fixed IPs of the host. Default:
    /// `dns.google:53,8.8.8.8,2001:4860:4860::8888`.
    pub udp_check_dns: Vec<String>,
    /// `allow_insecure`. Default: `false`.
    pub allow_insecure: bool,
    /// `disable_waiting_network`. Default: `false`.
    pub disable_waiting_network: bool,
    /// `disable_thp`. Default: `true`.
    pub disable_thp: bool,
    /// `auto_config_kernel_parameter`. Default: `false`.
    pub auto_config_kernel_parameter: bool,
    /// `tls_implementation`. Default: `tls`.
    pub tls_implementation: TlsImplementation,
    /// `utls_imitate`. Default: `chrome_auto`.
    pub utls_imitate: String,
    /// `tls_fragment`. Default: `false`.
    pub tls_fragment: bool,
    /// `tls_fragment_length`, bytes. Default: `50-100`.
    pub tls_fragment_length: NumberRange,
    /// `tls_fragment_interval`, milliseconds. Default: `10-20`.
    pub tls_fragment_interval: NumberRange,
    /// `pprof_port`; 0 disables. Default: 0.
    pub pprof_port: u16,
    /// `mptcp`. Default: `false`.
    pub mptcp: bool,
    /// `bootstrap_resolver`: `ip:port`. Default: none (dae then uses 119.29.29.29:53 and 223.5.5.5:53).
    pub bootstrap_resolver: Option<SocketAddr>,
    /// `fallback_resolver`: `ip:port`. Default: 8.8.8.8:53.
    pub fallback_resolver: SocketAddr,
    /// `bandwidth_max_tx`, bits per second; 0 is unlimited. Default: 0.
    pub bandwidth_max_tx: u64,
    /// `bandwidth_max_rx`, bits per second; 0 is unlimited. Default: 0.
    pub bandwidth_max_rx: u64,
    /// `udphop_interval`. Default: 30 s.
    pub udphop_interval: Duration,
}

impl Default for Global {
    fn default() -> Self {
        Self {
            lan_interface: Vec::new(),
            wan_interface: Vec::new(),
            log_level: LogLevel::Info,
            tproxy_port: 12345,
            so_mark_from_dae: None,
            sniffing_timeout: Duration::from_millis(30),
            dial_mode: DialMode::Domain,
            check_interval: Duration::from_secs(30),
            check_tolerance: Duration::ZERO,
            bpf_conn_state_map_size: 262_144,
            tproxy_port_protect: true,
            tcp_check_url: ["http://cp.cloudflare.com", "1.1.1.1", "2606:4700:4700::1111"].map(String::from).to_vec(),
            tcp_check_http_method: "HEAD".to_owned(),
            udp_check_dns: ["dns.google:53", "8.8.8.8", "2001:4860:4860::8888"].map(String::from).to_vec(),
            allow_insecure: false,
            disable_waiting_network: false,
            disable_thp: true,
            auto_config_kernel_parameter: false,
            tls_implementation: TlsImplementation::Tls,
            utls_imitate: "chrome_auto".to_owned(),
            tls_fragment: false,
            tls_fragment_length: NumberRange { min: 50, max: 100 },
            tls_fragment_interval: NumberRange { min: 10, max: 20 },
            pprof_port: 0,
            mptcp: false,
            bootstrap_resolver: None,
            fallback_resolver: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)), 53),
            bandwidth_max_tx: 0,
            bandwidth_max_rx: 0,
            udphop_interval: Duration::from_secs(30),
        }
    }
}

/// Whether dae-rs acts on a `global` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySupport {
    /// Parsed and used.
    Implemented,
    /// Parsed and type-checked; using it warns that it has no effect yet.
    NotImplemented,
    /// Deprecated by dae itself; accepted with a warning and ignored.
    Deprecated,
}

/// Every key the `global` section accepts, with its support status, in dae's order.
pub fn global_keys() -> impl Iterator<Item = (&'static str, KeySupport)> {
    KEYS.iter().map(|key| (key.name, key.support))
}
