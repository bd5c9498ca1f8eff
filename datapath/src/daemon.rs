//! `dae run`: the control thread. Loads and pins, follows links, keeps attachments and the admission lease, runs
//! the janitor, and takes everything down again on SIGINT/SIGTERM.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::bail;
use datapath_abi::{Admission, gate::GATE_RENEW_NS};
use futures::TryStreamExt;
use rtnetlink::Handle;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::MissedTickBehavior,
};
use tracing::{debug, error, info, warn};

use config::Validated;
use datapath_abi::steer::{DEFAULT_DAEMON_MARK, DEFAULT_TPROXY_MARK, TPROXY_TABLE};

use crate::{
    attach::{Attacher, Roles, TcAttach, XdpAttach},
    clock::{self, monotonic_coarse_ns},
    features::{LanGro, LanGroForwarding},
    flows,
    gateway::{self, Gateway, local::LocalSteering},
    links::{Framing, LinkCache, LinkChange, LinkTable},
    maps::Maps,
    netlink::{self, LinkEvent, LinkMonitor},
    object,
    routing::{self, Compiled, RouteMaps, Router},
    selection::Selection,
    state::{CountersFile, Instance, StatusFile},
};

/// The embedded default configuration: what `dae run` without `-c` runs.
pub const DEFAULT_CONFIG: &str = include_str!("default.dae");
/// The name errors and logs give it.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded default config>";

/// How often the full link table is re-read to catch events the kernel dropped.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(10);
/// How often the janitor walks the flow table.
pub const JANITOR_EVERY: Duration = Duration::from_secs(5);

/// Everything `dae run` needs besides the config.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The configuration file, re-read on reload (SIGHUP, `dae reload`); `None`: the embedded default.
    pub config_path: Option<PathBuf>,
    /// Instance name (lock and pin directory).
    pub instance: String,
    /// bpffs mount to pin under.
    pub bpffs: PathBuf,
    /// tc attach method.
    pub tc: TcAttach,
    /// XDP attach mode.
    pub xdp: XdpAttach,
    /// Flow table capacity.
    pub flow_table_entries: u32,
    /// How the UDP workers read their steering sockets.
    pub udp_recv: gateway::udp::UdpRecv,
    /// Whether UDP session sockets ask for merged (GRO) receives.
    pub udp_gro: gateway::udp::UdpGro,
    /// Whether LAN links get GRO forwarding turned on while attached (with `udp_gro` on only).
    pub lan_gro_forwarding: LanGroForwarding,
    /// How relayed connections' bytes move.
    pub tcp_relay: gateway::pump::TcpRelay,
}

struct Control {
    attacher: Attacher,
    maps: Maps,
    cache: LinkCache,
    selection: Selection,
    handle: Handle,
    auto_wan: Vec<u32>,
    pid: u32,
    hz: u64,
    /// The gate as last written (its clock sample converts flow ticks).
    gate: Admission,
    /// Shared with the DNS forwarder's domain publisher.
    router: Arc<Mutex<Router>>,
    config_path: Option<PathBuf>,
    /// Groups in kernel order: a reload that changes them needs a restart (the workers hold their nodes).
    groups: Vec<String>,
    /// What the running DNS forwarder was started from: a reload that changes it starts a new one.
    dns_inputs: DnsInputs,
    /// Rule-set generations published so far.
    generation: u64,
    status: StatusFile,
    gateway: Gateway,
    /// The device gateway-originated proxied flows are steered through.
    local: Option<LocalSteering>,
    lo: u32,
    /// GRO forwarding turned on for LAN links (`None`: device features are left alone).
    lan_gro: Option<LanGro>,
}

/// Raises the soft limit on open files to the hard one: every relayed connection holds two sockets and a pipe
/// pair, every UDP session a socket and its reply sockets, and a service manager's soft default (1,024) would
/// cap a gateway at a few hundred connections (Go's runtime, and so dae, does the same at start).
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur >= limit.rlim_max {
        return;
    }
    let before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        info!(from = before, to = limit.rlim_max, "open files limit raised");
    } else {
        warn!(error = %std::io::Error::last_os_error(), soft = before, "the open files limit stays");
    }
}

/// Logged (at warn) where the kernel refuses `bpf_xdp_adjust_meta` to XDP programs and the object was loaded
/// with XDP's parse summary off.
pub const XDP_META_OFF: &str =
    "XDP parse summary off: this kernel refuses bpf_xdp_adjust_meta to XDP programs; tc parses every packet itself";

/// Runs the daemon until SIGINT/SIGTERM, routing with `validated` (the loaded and lowered configuration).
pub async fn run(validated: Validated, opts: RunOptions) -> anyhow::Result<()> {
    raise_open_files_limit();
    let instance = Instance::acquire(&opts.instance, &opts.bpffs)?;
    let selection = Selection::from_global(&validated.config.global);
    let compiled = compile_config(&validated)?;
    let mut loaded = object::load(opts.flow_table_entries)?;
    if !loaded.xdp_meta {
        warn!("{XDP_META_OFF}");
    }
    let mut maps = Maps::take(&mut loaded.ebpf, Some(instance.pin_dir()))?;
    maps.set_gate(Admission::default())?;
    let router = Arc::new(Mutex::new(Router::new(RouteMaps::take(&mut loaded.ebpf)?)));
    let daemon_mark = validated.config.global.so_mark_from_dae.filter(|m| *m != 0).unwrap_or(DEFAULT_DAEMON_MARK);
    let cache = LinkCache::new();
    let outbounds = relay::outbound::Outbounds::from_config(&validated.config)
        .map_err(|errors| anyhow::anyhow!("{}", render_errors(&validated.config, &errors)))?
        .with_mark(daemon_mark);
    let relay_cx = Arc::new(gateway::worker::RelayContext {
        outbounds: Arc::new(outbounds),
        flows: Arc::clone(&maps.flows),
        seed: loaded.flow_hash_seed,
        daemon_mark,
        counters: Default::default(),
        sniffing: arc_swap::ArcSwap::from_pointee(sniffing_of(&validated)),
        router: Arc::clone(&router),
        udp_recv: opts.udp_recv,
        udp_gro: opts.udp_gro,
        tcp_relay: opts.tcp_relay,
    });
    let replies = Arc::new(gateway::dns::Replies::default());
    let intercept = start_dns(&validated, &router, &maps, loaded.flow_hash_seed, daemon_mark, &replies)?;
    let mut gateway = Gateway::start(&mut loaded.ebpf, DEFAULT_TPROXY_MARK, daemon_mark, relay_cx, intercept, &cache)?;
    let mut attacher = Attacher::new(loaded, opts.tc, opts.xdp);
    match attacher.attach_cgroup() {
        Ok(root) => info!(cgroup = %root.display(), "socket-creation hook attached (pname routing)"),
        Err(e) => warn!(error = ?e, "pname(...) rules cannot match: the socket-creation hook is not attached"),
    }
    let probe = maps.clock_probe.as_ref().ok_or_else(|| anyhow::anyhow!("no clock probe map"))?;
    let hz = clock::measure_hz(attacher.ebpf_mut(), probe)?;
    info!(hz, "kernel tick rate");

    // Subscribe before the dump so no event falls between them.
    let mut monitor = LinkMonitor::subscribe()?;
    let handle = netlink::connect()?;
    cache.replace_all(netlink::dump_links(&handle).await?);
    let lo = cache.snapshot().by_name("lo").map_or(1, |l| l.index);
    gateway::policy::install(&handle, gateway.tproxy_mark, TPROXY_TABLE, lo).await?;
    let tcx = attacher.uses_tcx();
    let local = match LocalSteering::create(&handle, attacher.ebpf_mut(), instance.name(), tcx).await {
        Ok(local) => {
            gateway.set_local_ifindex(local.ifindex)?;
            Some(local)
        }
        Err(e) => {
            warn!(error = %e, "gateway-originated flows routed to a group leave direct: no local steering device");
            None
        }
    };
    match gateway::fragments::attach(attacher.ebpf_mut()) {
        Ok(()) => gateway.steer_fragments()?,
        Err(e) => {
            warn!(error = %e, "IP-fragmented UDP datagrams of proxied flows pass direct: sk_lookup is not attached")
        }
    }
    let pid = std::process::id();
    let mut control = Control {
        attacher,
        maps,
        cache,
        selection,
        handle,
        auto_wan: Vec::new(),
        pid,
        hz,
        gate: Admission::default(),
        router,
        config_path: opts.config_path.clone(),
        groups: group_names(&validated),
        dns_inputs: DnsInputs::of(&validated),
        generation: 0,
        status: StatusFile::new(instance.name()),
        gateway,
        local,
        lo,
        lan_gro: (opts.lan_gro_forwarding == LanGroForwarding::On && opts.udp_gro == gateway::udp::UdpGro::On)
            .then(LanGro::default),
    };
    control.publish(compiled)?;
    control.refresh_auto_wan().await;
    control.reconcile(Verify::None).await;

    control.renew_gate()?;
    release_freed_memory();
    info!(instance = instance.name(), pins = %instance.pin_dir().display(), tcx = control.attacher.uses_tcx(), "datapath ready: gate open");

    let every = |period: Duration| tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut renew = every(Duration::from_nanos(GATE_RENEW_NS));
    let mut reconcile = every(RECONCILE_EVERY);
    let mut janitor = every(JANITOR_EVERY);
    for timer in [&mut renew, &mut reconcile, &mut janitor] {
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let counters_file = CountersFile::new(instance.name());
    let outcome = loop {
        tokio::select! {
            event = monitor.next() => match event {
                Some(event) => control.on_link_event(event).await,
                None => break Err(anyhow::anyhow!("the netlink link monitor closed")),
            },
            _ = renew.tick() => {
                if let Err(e) = control.renew_gate() {
                    error!(error = %e, "renewing the admission lease");
                }
                counters_file.write(&control.gateway.counters());
            }
            _ = reconcile.tick() => control.full_reconcile().await,
            _ = janitor.tick() => {
                match flows::sweep(&control.maps.flows, &control.gate, monotonic_coarse_ns()) {
                    Ok(sweep) if sweep.removed > 0 => {
                        debug!(scanned = sweep.scanned, removed = sweep.removed, "janitor");
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "janitor: mapping the flow table"),
                }
            }
            _ = sighup.recv() => control.reload().await,
            _ = sigterm.recv() => break Ok("SIGTERM"),
            _ = sigint.recv() => break Ok("SIGINT"),
        }
    };
    let reason = outcome.as_ref().map(|r| *r).unwrap_or("error");
    info!(reason, "shutting down: closing the gate and detaching");
    control.shutdown().await;
    StatusFile::new(instance.name()).remove();
    counters_file.remove();
    drop(instance);
    outcome.map(|_| ())
}

/// How the workers sniff and re-route by name under `validated`.
fn sniffing_of(validated: &Validated) -> gateway::worker::Sniffing {
    gateway::worker::Sniffing {
        rules: config::rules::Compiled::new(&validated.rules),
        dial_mode: validated.config.global.dial_mode,
        timeout: validated.config.global.sniffing_timeout,
    }
}

/// The groups of a configuration, in the order the kernel numbers them.
fn group_names(validated: &Validated) -> Vec<String> {
    validated.config.group.iter().map(|group| group.name.name.clone()).collect()
}

/// Every error of a later stage (outbounds), rendered with file:line:column and a caret like the loader's.
pub fn render_errors(config: &config::Config, errors: &[config::ConfigError]) -> String {
    errors.iter().map(|error| error.render(&config.sources)).collect::<Vec<_>>().join("\n\n")
}

/// Starts the DNS forwarder with the configuration's `dns` section (dae's defaults without one: every query to
/// the server the client asked), its upstream sockets carrying the daemon's mark, answers publishing
/// `IP -> names` into the kernel for `domain(...)` rules, and returns what the workers need to hand it the DNS
/// they intercept.
fn start_dns(
    validated: &Validated,
    router: &Arc<Mutex<Router>>,
    maps: &Maps,
    seed: u64,
    daemon_mark: u32,
    replies: &Arc<gateway::dns::Replies>,
) -> anyhow::Result<Option<Arc<gateway::dns::Intercept>>> {
    let handle = dns_forwarder(validated, router, daemon_mark, replies)?;
    info!(upstreams = validated.dns.upstreams.len(), "DNS forwarder running: LAN DNS to port 53 is intercepted");
    Ok(Some(Arc::new(gateway::dns::Intercept {
        handle: arc_swap::ArcSwap::from_pointee(handle),
        replies: Arc::clone(replies),
        flows: Arc::clone(&maps.flows),
        seed,
        refused: Default::default(),
        submitted: Default::default(),
    })))
}

/// What a DNS forwarder is started from: the lowered `dns` section and the `global` keys it reads.
#[derive(Debug, PartialEq)]
struct DnsInputs {
    dns: config::dns::DnsConfig,
    lan_interface: Vec<config::InterfacePattern>,
    bootstrap_resolver: Option<std::net::SocketAddr>,
}

impl DnsInputs {
    fn of(validated: &Validated) -> Self {
        let global = &validated.config.global;
        Self {
            dns: validated.dns.clone(),
            lan_interface: global.lan_interface.clone(),
            bootstrap_resolver: global.bootstrap_resolver,
        }
    }
}

/// Starts one DNS forwarder for `validated` (see [`start_dns`]).
fn dns_forwarder(
    validated: &Validated,
    router: &Arc<Mutex<Router>>,
    daemon_mark: u32,
    replies: &Arc<gateway::dns::Replies>,
) -> anyhow::Result<dns::service::Handle> {
    let mut options = dns::service::Options::for_config(&validated.config);
    options.mark = daemon_mark;
    let router = Arc::clone(router);
    let domains: dns::DomainHook = Arc::new(move |addr, names| {
        if let Err(e) = router
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_domains(datapath_abi::flow::mapped(addr), names.to_vec())
        {
            warn!(%addr, error = %e, "publishing a DNS answer's names to the kernel");
        }
    });
    let hooks = dns::Hooks { domains: Some(domains), answers: Some(replies.sink()) };
    let handle = dns::Service::start_with(validated.dns.clone(), options, hooks)?;
    for (addr, proto) in handle.local_addrs() {
        info!(%addr, proto, "DNS listening (dns.bind)");
    }
    Ok(handle)
}

/// Which attachments to check against the kernel during a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verify {
    None,
    One(u32),
    All,
}

/// Compiles a validated configuration for the kernel (groups in the order the `group` section lists them).
fn compile_config(validated: &Validated) -> anyhow::Result<Compiled> {
    let groups: Vec<String> = validated.config.group.iter().map(|g| g.name.name.clone()).collect();
    Ok(routing::compile(&validated.rules, &groups)?)
}

impl Control {
    /// Publishes a compiled rule set into the inactive bank and flips to it.
    fn publish(&mut self, compiled: Compiled) -> anyhow::Result<()> {
        let rules = compiled.actions.len();
        let bank = self.router.lock().unwrap_or_else(|e| e.into_inner()).publish(compiled, &self.cache.snapshot())?;
        self.generation += 1;
        info!(generation = self.generation, bank, rules, "rule set published");
        self.status.write(self.generation, None);
        Ok(())
    }

    /// SIGHUP: re-read the configuration; a new generation replaces the running one only if everything about it
    /// checks out, and flows in flight keep the decision they were made with.
    async fn reload(&mut self) {
        let loaded = match &self.config_path {
            Some(path) => config::validate(path),
            None => config::validate_str(DEFAULT_CONFIG_NAME, DEFAULT_CONFIG),
        };
        let result = match loaded {
            Ok(validated) if group_names(&validated) != self.groups => Err(anyhow::anyhow!(
                "the groups changed ({:?} -> {:?}): restart dae to apply a new group section",
                self.groups,
                group_names(&validated)
            )),
            Ok(validated) => compile_config(&validated).map(|compiled| (validated, compiled)),
            Err(errors) => Err(anyhow::anyhow!("{errors}")),
        };
        match result {
            Ok((validated, compiled)) => {
                for warning in &validated.warnings {
                    warn!("{warning}");
                }
                // The forwarder first: when the new one cannot start, nothing changed; `dae reload` returns once
                // the generation is published, and by then the new forwarder answers.
                if let Err(e) = self.restart_dns_if_changed(&validated) {
                    error!(error = %format!("{e:#}"), "reload failed: the new DNS forwarder did not start");
                    self.status.write(self.generation, Some(&format!("the DNS forwarder did not start: {e:#}")));
                    return;
                }
                if let Err(e) = self.publish(compiled) {
                    error!(error = %format!("{e:#}"), "reload failed; the running rule set stays");
                    self.status.write(self.generation, Some(&format!("{e:#}")));
                    return;
                }
                self.gateway.relay.sniffing.store(Arc::new(sniffing_of(&validated)));
                self.selection = Selection::from_global(&validated.config.global);
                self.refresh_auto_wan().await;
                self.reconcile(Verify::None).await;
                release_freed_memory();
                info!(generation = self.generation, "reloaded");
            }
            Err(e) => {
                error!("reload failed; the running rule set stays:\n{e:#}");
                self.status.write(self.generation, Some(&format!("{e:#}")));
            }
        }
    }

    /// Starts a new DNS forwarder when the `dns` section (or a `global` key it reads) changed, and retires the
    /// running one: queries it holds are answered or dropped with it (clients retry), its cache goes with it,
    /// and the names it published stay in the kernel until a lookup replaces them.
    fn restart_dns_if_changed(&mut self, validated: &Validated) -> anyhow::Result<()> {
        let inputs = DnsInputs::of(validated);
        let Some(intercept) = self.gateway.dns.as_ref().filter(|_| inputs != self.dns_inputs) else {
            return Ok(());
        };
        let handle = dns_forwarder(validated, &self.router, self.gateway.daemon_mark, &intercept.replies)?;
        let old = intercept.handle.swap(Arc::new(handle));
        self.dns_inputs = inputs;
        info!(upstreams = validated.dns.upstreams.len(), "DNS forwarder restarted with the new dns section");
        // Stopping joins the old forwarder's threads: off the control loop, once no worker holds it any more.
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(old);
        });
        Ok(())
    }

    /// Samples the kernel's ticks and writes a fresh lease.
    fn renew_gate(&mut self) -> anyhow::Result<()> {
        let probe = self.maps.clock_probe.as_ref().ok_or_else(|| anyhow::anyhow!("no clock probe map"))?;
        let now = clock::sample(self.attacher.ebpf_mut(), probe)?;
        self.gate = Admission::open(self.pid, self.hz, now.ticks, now.mono_ns);
        self.maps.set_gate(self.gate)?;
        Ok(())
    }

    async fn on_link_event(&mut self, event: LinkEvent) {
        let (changes, verify) = match event {
            LinkEvent::New(link) => {
                let index = link.index;
                (self.cache.upsert(link), Verify::One(index))
            }
            LinkEvent::Del(index) => (vec![self.cache.remove(index)], Verify::None),
        };
        for change in &changes {
            match change {
                LinkChange::Added(l) => debug!(iface = %l.name, index = l.index, "link added"),
                LinkChange::Removed(l) => debug!(iface = %l.name, index = l.index, "link removed"),
                LinkChange::Updated { old, new } => {
                    debug!(old = %old.name, new = %new.name, up = new.up, index = new.index, "link changed")
                }
                LinkChange::Unchanged => {}
            }
        }
        self.reconcile(verify).await;
        self.follow_interface_rules();
    }

    /// `interface(...)` rules follow names: re-resolve them against the current link table.
    fn follow_interface_rules(&mut self) {
        if let Err(e) = self.router.lock().unwrap_or_else(|e| e.into_inner()).links_changed(&self.cache.snapshot()) {
            error!(error = %e, "updating interface rules after a link change");
        }
    }

    async fn full_reconcile(&mut self) {
        match netlink::dump_links(&self.handle).await {
            Ok(links) => {
                let missed = self.cache.replace_all(links);
                if !missed.is_empty() {
                    info!(changes = missed.len(), "periodic reconcile found link changes no event reported");
                }
            }
            Err(e) => warn!(error = %e, "periodic link dump"),
        }
        self.refresh_auto_wan().await;
        self.reconcile(Verify::All).await;
        self.follow_interface_rules();
    }

    async fn refresh_auto_wan(&mut self) {
        if !self.selection.wan_auto() {
            return;
        }
        match netlink::default_route_links(&self.handle).await {
            Ok(links) => self.auto_wan = links,
            Err(e) => warn!(error = %e, "finding default-route links for wan_interface: auto"),
        }
    }

    /// Makes attachments match the selection over the current link table.
    async fn reconcile(&mut self, verify: Verify) {
        let table: Arc<LinkTable> = self.cache.snapshot();
        let mut desired: HashMap<u32, Roles> = HashMap::new();
        for link in table.iter() {
            let roles = self.selection.roles(&link.name, link.index, &self.auto_wan);
            if roles.is_empty() {
                continue;
            }
            if let Framing::Unsupported(t) = link.framing {
                warn!(iface = %link.name, link_type = t, "selected interface has an unsupported link type; not attached");
                continue;
            }
            desired.insert(link.index, roles);
        }
        let stale: Vec<u32> = self
            .attacher
            .attachments()
            .filter(|a| {
                desired.get(&a.ifindex) != Some(&a.roles) || table.get(a.ifindex).is_none_or(|l| l.framing != a.framing)
            })
            .map(|a| a.ifindex)
            .collect();
        for ifindex in stale {
            if let Some(gone) = self.attacher.detach(ifindex)
                && gone.created_clsact
                && table.get(ifindex).is_some()
                && let Err(e) = netlink::delete_clsact(&self.handle, ifindex).await
            {
                debug!(iface = %gone.name, error = %e, "removing our clsact");
            }
            if let Some(lan_gro) = &mut self.lan_gro {
                lan_gro.restore(ifindex, table.get(ifindex).is_some());
            }
        }
        for (&index, &roles) in &desired {
            let Some(link) = table.get(index) else { continue };
            match self.attacher.get(index) {
                Some(att) => {
                    if att.name != link.name {
                        self.attacher.renamed(index, link.name.clone());
                        if let Some(lan_gro) = &mut self.lan_gro {
                            lan_gro.renamed(index, &link.name);
                        }
                    }
                    let check = verify == Verify::All || verify == Verify::One(index);
                    if check && !self.still_attached(index).await {
                        warn!(iface = %link.name, "programs no longer attached (link flap?); re-attaching");
                        self.attacher.detach(index);
                        match self.attacher.attach(link, roles) {
                            Ok(()) => self.enable_lan_gro(link, roles),
                            Err(e) => error!(error = %e, "re-attach failed"),
                        }
                    }
                }
                None => match self.attacher.attach(link, roles) {
                    Ok(()) => self.enable_lan_gro(link, roles),
                    Err(e) => error!(error = %e, "attach failed"),
                },
            }
        }
    }

    /// Turns GRO forwarding on for a LAN link just attached (when `dae run` does that at all).
    fn enable_lan_gro(&mut self, link: &crate::links::Link, roles: Roles) {
        if let Some(lan_gro) = &mut self.lan_gro
            && roles.lan
        {
            lan_gro.enable(link.index, &link.name);
        }
    }

    /// Asks the kernel (a fresh RTM_GETLINK, then the TCX query) whether our programs still run on `index`.
    async fn still_attached(&self, index: u32) -> bool {
        let fresh = self.handle.link().get().match_index(index).execute().try_next().await;
        match fresh {
            Ok(Some(msg)) => match netlink::link_from_message(&msg) {
                Some(link) => self.attacher.still_attached(&link),
                None => false,
            },
            _ => false,
        }
    }

    async fn shutdown(mut self) {
        if let Err(e) = self.maps.set_gate(self.gate.closed()) {
            error!(error = %e, "closing the gate");
        }
        self.gateway.stop();
        if let Some(mut local) = self.local.take() {
            local.remove(&self.handle, self.attacher.ebpf_mut()).await;
        }
        gateway::policy::remove(&self.handle, self.gateway.tproxy_mark, TPROXY_TABLE, self.lo).await;
        let indexes: Vec<u32> = self.attacher.attachments().map(|a| a.ifindex).collect();
        for ifindex in indexes {
            if let Some(gone) = self.attacher.detach(ifindex)
                && gone.created_clsact
                && let Err(e) = netlink::delete_clsact(&self.handle, ifindex).await
            {
                debug!(iface = %gone.name, error = %e, "removing our clsact");
            }
        }
        if let Some(mut lan_gro) = self.lan_gro.take() {
            let table = self.cache.snapshot();
            for ifindex in lan_gro.links() {
                lan_gro.restore(ifindex, table.get(ifindex).is_some());
            }
        }
    }
}

/// Hands the allocator's free heap pages back to the kernel. Loading reads the kernel's BTF (5.5 MB) and the eBPF
/// object, and a publish compiles 1 MiB port tables; once glibc has freed a block that large it serves the next
/// ones from its main heap (its mmap threshold follows the largest block freed) and keeps their pages resident
/// after they are freed. Measured on an idle `dae run` (gdb: `call malloc_trim(0)`): 1.4 MiB less RSS.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only returns pages no allocation holds.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Fails unless running as root (or with the capabilities loading BPF needs): a clear message beats EPERM.
pub fn require_privileges() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("dae run loads eBPF programs and must run as root");
    }
    Ok(())
}
