//! Node health: a lock-free table the data path reads, the TCP check that fills it, and the [`Checker`]
//! thread that runs the check periodically.
//!
//! Each node's state is one `AtomicU64`, so a reader sees a whole state (never a latency of one check paired
//! with the liveness of another) with a single relaxed load: no lock, no seqlock retry.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::dial::{Deadline, connect_endpoint, resolve};
use super::link::{Endpoint, LinkError, Node, parse_endpoint};
use super::{NodeId, dial};

/// dae's default `check_interval`.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// How long one check may take before the node counts as dead; dae uses the same bound.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Encoding of a node state in one word: alive with unknown latency (no check has finished yet).
const STATE_UNKNOWN: u64 = 0;
/// The last check failed.
const STATE_DEAD: u64 = u64::MAX;
// Any other value: alive, with latency in microseconds + 1 (so a 0 µs latency stays distinct from unknown).

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Connected through the node in this time.
    Alive(Duration),
    /// The connection or handshake failed or timed out.
    Dead,
    /// The check could not run (its target does not resolve: no network at all); the node's state is kept.
    Skipped,
}

/// A node's state as the data path sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Usable; latency of the last check, or `None` before any check finished.
    Alive(Option<Duration>),
    /// The last check failed.
    Dead,
}

/// The state of every node, indexed by [`NodeId`]. Shared (`Arc`) between the checker, which writes, and the
/// workers, which read without blocking.
pub struct HealthTable {
    states: Box<[AtomicU64]>,
}

impl HealthTable {
    /// A table for `nodes` nodes, all alive with unknown latency.
    pub fn new(nodes: usize) -> Self {
        Self { states: (0..nodes).map(|_| AtomicU64::new(STATE_UNKNOWN)).collect() }
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// True for a table of no nodes.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The state of `node`: one relaxed atomic load. Panics on an id from another table.
    pub fn state(&self, node: NodeId) -> NodeState {
        match self.states[node.index()].load(Ordering::Relaxed) {
            STATE_UNKNOWN => NodeState::Alive(None),
            STATE_DEAD => NodeState::Dead,
            micros_plus_one => NodeState::Alive(Some(Duration::from_micros(micros_plus_one - 1))),
        }
    }

    /// Applies a check outcome; [`CheckOutcome::Skipped`] changes nothing.
    pub fn record(&self, node: NodeId, outcome: CheckOutcome) {
        let state = match outcome {
            CheckOutcome::Skipped => return,
            CheckOutcome::Dead => STATE_DEAD,
            CheckOutcome::Alive(latency) => {
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                micros.saturating_add(1).min(STATE_DEAD - 1)
            }
        };
        self.states[node.index()].store(state, Ordering::Relaxed);
    }
}

impl fmt::Debug for HealthTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries((0..self.len()).map(|i| self.state(NodeId(i as u32)))).finish()
    }
}

/// Where a check connects through the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckTarget {
    /// No target: the check is a TCP connect to the proxy server itself (no handshake).
    ProxyItself,
    /// A full proxy handshake to this endpoint. `fixed` addresses (dae's `tcp_check_url: 'url', ip, ...`) are
    /// used instead of resolving a name.
    Remote {
        /// The host and port.
        endpoint: Endpoint,
        /// Addresses of the host given in the configuration.
        fixed: Vec<IpAddr>,
    },
}

/// Why a `tcp_check_url` was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckTargetError {
    /// A URL scheme other than http/https.
    #[error("`{0}` is not http:// or https://; write `http://host[:port]/...` or `host:port`")]
    Scheme(String),
    /// A bad host or port.
    #[error("{0}")]
    Endpoint(#[from] LinkError),
}

impl CheckTarget {
    /// Parses dae's `tcp_check_url`: `http://host[:port]/...` (port 80), `https://host[:port]/...` (port 443) or
    /// `host:port`, then optional fixed IPs of the host.
    pub fn parse(url: &str, fixed: Vec<IpAddr>) -> Result<Self, CheckTargetError> {
        let (default_port, rest) = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (Some(80), rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (Some(443), rest),
            Some((scheme, _)) => return Err(CheckTargetError::Scheme(scheme.to_owned())),
            None => (None, url),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let endpoint = match (parse_endpoint(authority), default_port) {
            (Ok(endpoint), _) => endpoint,
            (Err(LinkError::MissingPort), Some(port)) => parse_endpoint(&format!("{authority}:{port}"))?,
            (Err(error), _) => return Err(error.into()),
        };
        Ok(CheckTarget::Remote { endpoint, fixed })
    }

    /// The address to connect to; `None` when it cannot be resolved.
    fn resolve(&self) -> Option<Option<SocketAddr>> {
        match self {
            CheckTarget::ProxyItself => Some(None),
            CheckTarget::Remote { endpoint, fixed } => match fixed.first() {
                Some(ip) => Some(Some(SocketAddr::new(*ip, endpoint.port))),
                None => resolve(endpoint).ok().and_then(|addrs| addrs.first().copied()).map(Some),
            },
        }
    }
}

/// Checks `node` once: a full dial through it to `target` (or a TCP connect to the proxy for
/// [`CheckTarget::ProxyItself`]), timed. `direct` and `block` nodes are not checked ([`CheckOutcome::Skipped`]).
pub fn check(node: &Node, target: &CheckTarget, mark: u32, timeout: Duration) -> CheckOutcome {
    let Node::Proxy(proxy) = node else { return CheckOutcome::Skipped };
    let Some(address) = target.resolve() else { return CheckOutcome::Skipped };
    let started = Instant::now();
    let connected = match address {
        Some(address) => dial(node, address, mark, timeout).map(drop),
        None => match resolve(&proxy.server) {
            Ok(_) => connect_endpoint(&proxy.server, mark, &Deadline::after(timeout)).map(drop),
            Err(_) => return CheckOutcome::Skipped,
        },
    };
    match connected {
        Ok(()) => CheckOutcome::Alive(started.elapsed()),
        Err(_) => CheckOutcome::Dead,
    }
}

/// How the [`Checker`] checks.
#[derive(Debug, Clone)]
pub struct CheckSettings {
    /// Pause between rounds (`check_interval`).
    pub interval: Duration,
    /// Bound on one check.
    pub timeout: Duration,
    /// What a check connects to.
    pub target: CheckTarget,
    /// SO_MARK of check sockets (0: unset), so the gateway's own rules do not loop them.
    pub mark: u32,
}

impl Default for CheckSettings {
    fn default() -> Self {
        Self {
            interval: DEFAULT_CHECK_INTERVAL,
            timeout: DEFAULT_CHECK_TIMEOUT,
            target: CheckTarget::ProxyItself,
            mark: 0,
        }
    }
}

/// A background thread that checks every node once per interval (the first round at once) and records the
/// outcomes in a shared [`HealthTable`]. Nodes are checked one after another, so a round takes at most
/// `nodes × timeout`. Dropping the checker stops the thread (promptly, also mid-pause) and joins it.
#[derive(Debug)]
pub struct Checker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checker {
    /// Starts checking `nodes` (indexed like `health`).
    pub fn spawn(nodes: Arc<[Node]>, health: Arc<HealthTable>, settings: CheckSettings) -> io::Result<Self> {
        assert_eq!(nodes.len(), health.len(), "one health entry per node");
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("health-check".into()).spawn(move || {
            loop {
                for (index, node) in nodes.iter().enumerate() {
                    let outcome = check(node, &settings.target, settings.mark, settings.timeout);
                    health.record(NodeId(index as u32), outcome);
                }
                match stopped.recv_timeout(settings.interval) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        })?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_start_alive_with_unknown_latency() {
        let table = HealthTable::new(2);
        assert_eq!(table.state(NodeId(1)), NodeState::Alive(None));
    }

    #[test]
    fn skipped_check_changes_neither_liveness_nor_latency() {
        let table = HealthTable::new(2);
        table.record(NodeId(0), CheckOutcome::Alive(Duration::from_millis(12)));
        table.record(NodeId(1), CheckOutcome::Dead);
        table.record(NodeId(0), CheckOutcome::Skipped);
        table.record(NodeId(1), CheckOutcome::Skipped);
        assert_eq!(table.state(NodeId(0)), NodeState::Alive(Some(Duration::from_millis(12))));
        assert_eq!(table.state(NodeId(1)), NodeState::Dead);
        let fresh = HealthTable::new(1);
        fresh.record(NodeId(0), CheckOutcome::Skipped);
        assert_eq!(fresh.state(NodeId(0)), NodeState::Alive(None));
    }

    #[test]
    fn zero_latency_is_measured_not_unknown_and_dead_recovers() {
        let table = HealthTable::new(1);
        table.record(NodeId(0), CheckOutcome::Dead);
        table.record(NodeId(0), CheckOutcome::Alive(Duration::ZERO));
        assert_eq!(table.state(NodeId(0)), NodeState::Alive(Some(Duration::ZERO)));
    }

    #[test]
    fn check_url_forms() {
        let target = CheckTarget::parse("http://cp.cloudflare.com/generate_204", vec![]).unwrap();
        let CheckTarget::Remote { endpoint, .. } = target else { panic!() };
        assert_eq!(endpoint.to_string(), "cp.cloudflare.com:80");
        let target = CheckTarget::parse("https://[2001:db8::1]/", vec![]).unwrap();
        let CheckTarget::Remote { endpoint, .. } = target else { panic!() };
        assert_eq!(endpoint.to_string(), "[2001:db8::1]:443");
        let target = CheckTarget::parse("127.0.0.1:8080", vec![]).unwrap();
        let CheckTarget::Remote { endpoint, .. } = target else { panic!() };
        assert_eq!(endpoint.to_string(), "127.0.0.1:8080");
        assert!(matches!(CheckTarget::parse("ftp://h/", vec![]), Err(CheckTargetError::Scheme(_))));
        assert!(CheckTarget::parse("no-port", vec![]).is_err());
    }

    #[test]
    fn fixed_addresses_need_no_resolver() {
        let target = CheckTarget::parse("http://name.invalid/", vec!["192.0.2.1".parse().unwrap()]).unwrap();
        assert_eq!(target.resolve(), Some(Some("192.0.2.1:80".parse().unwrap())));
    }

    #[test]
    fn direct_and_block_are_not_checked() {
        let target = CheckTarget::ProxyItself;
        assert_eq!(check(&Node::Direct, &target, 0, Duration::from_millis(10)), CheckOutcome::Skipped);
        assert_eq!(check(&Node::Block, &target, 0, Duration::from_millis(10)), CheckOutcome::Skipped);
    }
}
