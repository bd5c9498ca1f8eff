//! What a sniffed name changes: whether the flow is routed again with the domain, and whether the outbound
//! dials the domain or the original IP, under dae's `dial_mode`. Where dae's documentation and code disagree
//! (`domain` mode), we follow the code; `docs/sniffing.md` gives the reasons.
//!
//! | `dial_mode` | re-route with the name | TCP dials | UDP (QUIC) dials |
//! | --- | --- | --- | --- |
//! | `ip` | no (nothing is sniffed) | IP | IP |
//! | `domain`, name verified | yes | domain | IP |
//! | `domain`, name not verified | no | IP | IP |
//! | `domain+` | no | domain | IP |
//! | `domain++` | yes | domain | IP |
//!
//! "Verified" means the gateway's DNS knowledge maps the name to the original destination IP (dae's
//! "real domain" check); the caller decides it. An IP literal sniffed as a name (an HTTP `Host: 192.0.2.1`)
//! is not a domain and changes nothing.

use std::net::{IpAddr, SocketAddr};

pub use config::DialMode;

use super::tcp::port_excluded;

/// The transport of the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP: TLS or HTTP sniffing.
    Tcp,
    /// UDP: QUIC sniffing.
    Udp,
}

/// Where the outbound connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialTarget<'a> {
    /// The original destination address.
    Ip(SocketAddr),
    /// The sniffed domain, with the original destination port; the proxy resolves it.
    Domain {
        /// The sniffed name.
        name: &'a str,
        /// The original destination port.
        port: u16,
    },
}

/// The routing consequence of a sniffed name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDecision<'a> {
    /// `Some(name)`: evaluate the routing rules again with this domain (userspace matcher) and use that result.
    pub reroute: Option<&'a str>,
    /// What the outbound dials.
    pub dial: DialTarget<'a>,
}

/// The routing consequence of sniffing `name` (if any) on a `transport` flow to `original`, under `mode`;
/// `name_verified` says whether the gateway's DNS knowledge maps the name to `original`'s IP.
pub fn decide<'a>(
    mode: DialMode,
    transport: Transport,
    original: SocketAddr,
    name: Option<&'a str>,
    name_verified: bool,
) -> RouteDecision<'a> {
    let by_ip = RouteDecision { reroute: None, dial: DialTarget::Ip(original) };
    let Some(name) = name.filter(|n| n.parse::<IpAddr>().is_err()) else { return by_ip };
    let (reroute, dial_domain) = match mode {
        DialMode::Ip => return by_ip,
        DialMode::Domain if !name_verified => return by_ip,
        DialMode::Domain | DialMode::DomainPlusPlus => (true, true),
        DialMode::DomainPlus => (false, true),
    };
    // QUIC keeps the IP: the client's connection is bound to the address it chose (dae: "avoid QUIC session
    // issues"), and the proxy resolving the name again may pick another server that knows nothing of it.
    let dial = if dial_domain && transport == Transport::Tcp {
        DialTarget::Domain { name, port: original.port() }
    } else {
        DialTarget::Ip(original)
    };
    RouteDecision { reroute: reroute.then_some(name), dial }
}

/// Whether a new flow is sniffed at all: not when `dial_mode` is `ip` (a name would change nothing), not when
/// the first routing decision is `direct` or `block` (dae: a direct dial is by IP anyway), and for TCP not
/// when `sniffing_timeout` is zero or the port is in [`super::tcp::EXCLUDED_PORTS`]. UDP is sniffed on any
/// port (dae only on 443 and 8443): the QUIC pre-check costs nanoseconds and HTTP/3 runs on other ports too.
pub fn should_sniff(
    mode: DialMode,
    transport: Transport,
    dst_port: u16,
    direct_or_block: bool,
    sniffing_timeout: std::time::Duration,
) -> bool {
    if mode == DialMode::Ip || direct_or_block {
        return false;
    }
    match transport {
        Transport::Tcp => !sniffing_timeout.is_zero() && !port_excluded(dst_port),
        Transport::Udp => true,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DST: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)), 443);

    fn tcp(mode: DialMode, verified: bool) -> RouteDecision<'static> {
        decide(mode, Transport::Tcp, DST, Some("a.example"), verified)
    }

    #[test]
    fn domain_mode_follows_dae_code_rerouting_only_verified_names() {
        assert_eq!(
            tcp(DialMode::Domain, true),
            RouteDecision { reroute: Some("a.example"), dial: DialTarget::Domain { name: "a.example", port: 443 } }
        );
        assert_eq!(tcp(DialMode::Domain, false), RouteDecision { reroute: None, dial: DialTarget::Ip(DST) });
    }

    #[test]
    fn domain_plus_dials_the_name_without_rerouting_and_plus_plus_does_both() {
        for verified in [false, true] {
            assert_eq!(tcp(DialMode::DomainPlus, verified).reroute, None);
            assert!(matches!(tcp(DialMode::DomainPlus, verified).dial, DialTarget::Domain { .. }));
            assert_eq!(tcp(DialMode::DomainPlusPlus, verified).reroute, Some("a.example"));
            assert!(matches!(tcp(DialMode::DomainPlusPlus, verified).dial, DialTarget::Domain { .. }));
        }
    }

    #[test]
    fn ip_mode_and_missing_or_literal_names_change_nothing() {
        let by_ip = RouteDecision { reroute: None, dial: DialTarget::Ip(DST) };
        assert_eq!(tcp(DialMode::Ip, true), by_ip);
        assert_eq!(decide(DialMode::DomainPlusPlus, Transport::Tcp, DST, None, true), by_ip);
        assert_eq!(decide(DialMode::DomainPlusPlus, Transport::Tcp, DST, Some("192.0.2.9"), true), by_ip);
        assert_eq!(decide(DialMode::DomainPlusPlus, Transport::Tcp, DST, Some("2001:db8::1"), true), by_ip);
    }

    #[test]
    fn quic_reroutes_but_always_dials_the_original_ip() {
        for mode in [DialMode::Domain, DialMode::DomainPlus, DialMode::DomainPlusPlus] {
            let d = decide(mode, Transport::Udp, DST, Some("q.example"), true);
            assert_eq!(d.dial, DialTarget::Ip(DST), "{mode:?}");
        }
        assert_eq!(
            decide(DialMode::DomainPlusPlus, Transport::Udp, DST, Some("q.example"), false).reroute,
            Some("q.example")
        );
    }

    #[test]
    fn sniffing_is_skipped_for_ip_mode_direct_flows_excluded_ports_and_zero_timeout() {
        let t = Duration::from_millis(30);
        assert!(should_sniff(DialMode::Domain, Transport::Tcp, 443, false, t));
        assert!(!should_sniff(DialMode::Ip, Transport::Tcp, 443, false, t));
        assert!(!should_sniff(DialMode::Domain, Transport::Tcp, 443, true, t));
        assert!(!should_sniff(DialMode::Domain, Transport::Tcp, 22, false, t));
        assert!(!should_sniff(DialMode::Domain, Transport::Tcp, 443, false, Duration::ZERO));
        assert!(should_sniff(DialMode::Domain, Transport::Udp, 4433, false, Duration::ZERO));
    }
}
