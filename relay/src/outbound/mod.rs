//! Outbounds: proxy nodes, groups of them, their health, and dialing through them.
//!
//! Blocking std code (the worker calls it from its own thread): [`dial`] opens a TCP connection to a target
//! through a [`Node`] — directly, or through a SOCKS5 or HTTP CONNECT proxy — with SO_MARK set and the whole
//! connect-and-handshake bounded by one timeout. The handshakes are sans-IO encoders and decoders
//! ([`socks5`], [`http`]) with a thin blocking driver on top.
//!
//! [`Outbounds::from_config`] builds the node table and the groups from the `node` and `group` sections. A
//! [`Group`] picks a node per flow from the lock-free [`HealthTable`] that a [`Checker`] thread keeps up to
//! date:
//!
//! ```no_run
//! # fn demo(config: &config::Config, flow_hash: u64, target: std::net::SocketAddr) -> std::io::Result<()> {
//! use relay::outbound::Outbounds;
//! let outbounds = Outbounds::from_config(config)
//!     .map_err(|errors| std::io::Error::other(errors[0].render(&config.sources)))?;
//! let _checker = outbounds.spawn_checker()?; // stops when dropped
//! let group = outbounds.group("proxy").expect("defined in the config");
//! match group.pick(outbounds.health(), flow_hash) {
//!     Ok(node) => {
//!         let _stream = outbounds.dial(node, target, std::time::Duration::from_secs(5))?;
//!     }
//!     Err(no_alive_node) => eprintln!("{no_alive_node}"), // log and count, drop the flow
//! }
//! # Ok(()) }
//! ```
//!
//! Not built yet: subscriptions, node protocols other than SOCKS5 and HTTP CONNECT, per-group check settings,
//! latency averages (the `min_*` policies rank by the last latency).

mod build;
mod dial;
mod exchange;
mod group;
mod health;
pub mod http;
mod link;
pub mod socks5;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

pub use exchange::{Dialing, Exchange, Progress};
pub use group::{Group, NoAliveNode, Policy};
pub use health::{
    CheckOutcome, CheckSettings, CheckTarget, CheckTargetError, Checker, DEFAULT_CHECK_INTERVAL, DEFAULT_CHECK_TIMEOUT,
    HealthTable, NodeState, check,
};
pub use link::{
    Credentials, Endpoint, Host, LinkError, MAX_CREDENTIAL_LEN, Node, ParsedLink, Protocol, Proxy, parse_link,
};
pub use socks5::{UdpAssociation, associate};

/// The index of a node in its [`Outbounds`] table (and [`HealthTable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The index as `usize`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What a dial asks the outbound to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// An address.
    Addr(SocketAddr),
    /// A domain name and port, for a proxy to resolve (`dial_mode: domain`); `addr` is the original destination,
    /// which a direct dial uses.
    Domain {
        /// The name.
        name: &'a str,
        /// The port.
        port: u16,
        /// The original destination.
        addr: SocketAddr,
    },
}

/// Opens a TCP connection to `target` through `node`: the socket gets SO_MARK `mark` (0: left unset; setting
/// it needs CAP_NET_ADMIN), connects to the proxy and completes the proxy handshake, all within `timeout`.
/// The returned stream is blocking with no timeouts set, positioned at the first byte from the target.
///
/// A proxy host given by name is resolved first, with the system resolver, outside the timeout. Errors keep
/// meaningful kinds: `TimedOut`, `ConnectionRefused` (also when the proxy reports the target refused),
/// `PermissionDenied` (authentication failed, ruleset, `block`), `HostUnreachable`, ...
pub fn dial(node: &Node, target: SocketAddr, mark: u32, timeout: Duration) -> io::Result<TcpStream> {
    dial_target(node, Target::Addr(target), mark, timeout)
}

/// [`dial`] to an address or, through a proxy, a domain name (a direct dial uses the original address).
pub fn dial_target(node: &Node, target: Target<'_>, mark: u32, timeout: Duration) -> io::Result<TcpStream> {
    match node {
        Node::Direct => {
            let addr = match target {
                Target::Addr(addr) | Target::Domain { addr, .. } => addr,
            };
            dial::connect_addr(addr, mark, &dial::Deadline::after(timeout))
        }
        Node::Block => Err(io::Error::new(io::ErrorKind::PermissionDenied, "blocked by the `block` outbound")),
        Node::Proxy(proxy) => match proxy.protocol {
            Protocol::Socks5 => socks5::connect(proxy, target, mark, timeout),
            Protocol::HttpConnect => http::connect(proxy, target, mark, timeout),
        },
    }
}

/// The node table, the groups and the health of every node, built from a configuration.
#[derive(Debug)]
pub struct Outbounds {
    names: Vec<String>,
    nodes: Arc<[Node]>,
    groups: Vec<Group>,
    health: Arc<HealthTable>,
    checks: CheckSettings,
}

impl Outbounds {
    /// Builds the table from `nodes` (name and node, in order) and `groups`, every node alive with unknown
    /// latency. Group members must index `nodes`.
    pub fn new(nodes: Vec<(String, Node)>, groups: Vec<Group>, checks: CheckSettings) -> Self {
        let (names, nodes): (Vec<String>, Vec<Node>) = nodes.into_iter().unzip();
        assert!(
            groups.iter().flat_map(|group| &group.nodes).all(|node| node.index() < nodes.len()),
            "group members index the node table"
        );
        let health = Arc::new(HealthTable::new(nodes.len()));
        Self { names, nodes: nodes.into(), groups, health, checks }
    }

    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// The name of node `id`: its tag, its link's `#name`, or its link without the password.
    pub fn node_name(&self, id: NodeId) -> &str {
        &self.names[id.index()]
    }

    /// Every node, indexed by [`NodeId`].
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Every group, in configuration order.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|group| group.name == name)
    }

    /// The shared health table the [`Checker`] writes and [`Group::pick`] reads.
    pub fn health(&self) -> &Arc<HealthTable> {
        &self.health
    }

    /// How nodes are checked: `check_interval`, the check target, the mark.
    pub fn check_settings(&self) -> &CheckSettings {
        &self.checks
    }

    /// The same table with dialed and checking sockets carrying `mark` (the gateway's own mark, so they are
    /// never steered back to it).
    pub fn with_mark(mut self, mark: u32) -> Self {
        self.checks.mark = mark;
        self
    }

    /// The mark dialed sockets carry (`so_mark_from_dae`, 0 when unset).
    pub fn mark(&self) -> u32 {
        self.checks.mark
    }

    /// Dials `target` through node `id` with [`Outbounds::mark`].
    pub fn dial(&self, id: NodeId, target: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        dial(self.node(id), target, self.checks.mark, timeout)
    }

    /// Dials `target` (an address or a domain) through node `id` with [`Outbounds::mark`].
    pub fn dial_target(&self, id: NodeId, target: Target<'_>, timeout: Duration) -> io::Result<TcpStream> {
        dial_target(self.node(id), target, self.checks.mark, timeout)
    }

    /// Starts the health-check thread over every node; it stops when the returned value drops.
    pub fn spawn_checker(&self) -> io::Result<Checker> {
        Checker::spawn(Arc::clone(&self.nodes), Arc::clone(&self.health), self.checks.clone())
    }
}
