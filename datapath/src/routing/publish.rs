//! Publishing a compiled rule set: fill the inactive bank, flip the selector, keep interface entries current.

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, LpmTrie, Map, MapData, MapError, lpm_trie::Key},
};
use config::rules::RuleSet;
use datapath_abi::{
    Direction,
    names::{
        MAP_ROUTE_ACTIONS, MAP_ROUTE_CLASS_BITS, MAP_ROUTE_CONFIG, MAP_ROUTE_DOMAIN, MAP_ROUTE_IFACE, MAP_ROUTE_LPM,
        MAP_ROUTE_MAC, MAP_ROUTE_PNAME, MAP_ROUTE_PORT_CLASS, MAP_ROUTE_PROBE, MAP_ROUTE_SELECTOR,
        MAP_ROUTE_SMALL_CLASS,
    },
    route::{
        DomainKey, IfaceKey, LPM_DATA, LPM_KEY_PREFIX_BITS, MAX_CLASSES, MAX_RULES, MacKey, PORT_SLOTS, PnameKey,
        RouteAction, RouteConfig, RouteProbe, RouteSelector, RuleBits, SMALL_SLOTS, lpm_key_data,
    },
};

use super::compile::{Compiled, domain_bits};
use crate::{links::LinkTable, mmap::MappedArray};

/// Publishing failed; the running bank is untouched.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A map is missing or has another type.
    #[error("routing map {0}: missing or of another type")]
    Map(&'static str),
    /// A map operation failed.
    #[error("routing map {name}: {source}")]
    Op {
        /// Map.
        name: &'static str,
        /// Cause.
        source: MapError,
    },
    /// Mapping an array failed.
    #[error("mapping {name}: {source}")]
    Mmap {
        /// Map.
        name: &'static str,
        /// Cause.
        source: std::io::Error,
    },
}

fn op(name: &'static str) -> impl FnOnce(MapError) -> PublishError {
    move |source| PublishError::Op { name, source }
}

/// The routing maps, taken from the loaded object.
pub struct RouteMaps {
    selector: Array<MapData, RouteSelector>,
    arrays: RouteArrays,
    lpm: LpmTrie<MapData, [u8; LPM_DATA], u32>,
    iface: BpfHashMap<MapData, IfaceKey, u32>,
    mac: BpfHashMap<MapData, MacKey, u32>,
    domain: BpfHashMap<MapData, DomainKey, RuleBits>,
    pname: BpfHashMap<MapData, PnameKey, u32>,
    /// In/out of `route_probe` (tests and benchmarks).
    pub probe: Array<MapData, RouteProbe>,
}

impl std::fmt::Debug for RouteMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMaps").finish_non_exhaustive()
    }
}

impl RouteMaps {
    /// Takes the routing maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, PublishError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(PublishError::Map(name));
        let array = |map: Map, name: &'static str| match map {
            Map::Array(data) => Ok(data),
            _ => Err(PublishError::Map(name)),
        };
        let arrays = RouteArrays {
            config: array(take(MAP_ROUTE_CONFIG)?, MAP_ROUTE_CONFIG)?,
            class_bits: array(take(MAP_ROUTE_CLASS_BITS)?, MAP_ROUTE_CLASS_BITS)?,
            actions: array(take(MAP_ROUTE_ACTIONS)?, MAP_ROUTE_ACTIONS)?,
            ports: array(take(MAP_ROUTE_PORT_CLASS)?, MAP_ROUTE_PORT_CLASS)?,
            small: array(take(MAP_ROUTE_SMALL_CLASS)?, MAP_ROUTE_SMALL_CLASS)?,
        };
        // Map once now, so a build whose layouts disagree with the object fails at load, not at the first publish.
        drop(arrays.map()?);
        Ok(Self {
            selector: Array::try_from(take(MAP_ROUTE_SELECTOR)?).map_err(op(MAP_ROUTE_SELECTOR))?,
            arrays,
            lpm: LpmTrie::try_from(take(MAP_ROUTE_LPM)?).map_err(op(MAP_ROUTE_LPM))?,
            iface: BpfHashMap::try_from(take(MAP_ROUTE_IFACE)?).map_err(op(MAP_ROUTE_IFACE))?,
            mac: BpfHashMap::try_from(take(MAP_ROUTE_MAC)?).map_err(op(MAP_ROUTE_MAC))?,
            domain: BpfHashMap::try_from(take(MAP_ROUTE_DOMAIN)?).map_err(op(MAP_ROUTE_DOMAIN))?,
            pname: BpfHashMap::try_from(take(MAP_ROUTE_PNAME)?).map_err(op(MAP_ROUTE_PNAME))?,
            probe: Array::try_from(take(MAP_ROUTE_PROBE)?).map_err(op(MAP_ROUTE_PROBE))?,
        })
    }
}

/// The routing arrays the kernel reads through direct lookups and a publish fills through a mapping.
///
/// They are mapped only while a rule set is written: a mapping of a BPF array is resident in full for as long as
/// it exists (see `flow_table`), and these are 6 MiB (`ROUTE_CLASS_BITS` 4 MiB, `ROUTE_PORT_CLASS` 2 MiB) that
/// nothing but a publish touches.
struct RouteArrays {
    config: MapData,
    class_bits: MapData,
    actions: MapData,
    ports: MapData,
    small: MapData,
}

/// [`RouteArrays`] mapped for one publish; unmapped when dropped.
struct MappedRouteArrays {
    config: MappedArray<RouteConfig>,
    class_bits: MappedArray<RuleBits>,
    actions: MappedArray<RouteAction>,
    ports: MappedArray<u64>,
    small: MappedArray<u64>,
}

impl RouteArrays {
    fn map(&self) -> Result<MappedRouteArrays, PublishError> {
        Ok(MappedRouteArrays {
            config: map_array(&self.config, MAP_ROUTE_CONFIG)?,
            class_bits: map_array(&self.class_bits, MAP_ROUTE_CLASS_BITS)?,
            actions: map_array(&self.actions, MAP_ROUTE_ACTIONS)?,
            ports: map_array(&self.ports, MAP_ROUTE_PORT_CLASS)?,
            small: map_array(&self.small, MAP_ROUTE_SMALL_CLASS)?,
        })
    }
}

fn map_array<T: Copy>(data: &MapData, name: &'static str) -> Result<MappedArray<T>, PublishError> {
    MappedArray::map(data, true).map_err(|source| PublishError::Mmap { name, source })
}

/// What one bank holds besides its arrays, so the next publish into it can clear it.
#[derive(Debug, Default)]
struct BankEntries {
    lpm: Vec<([u8; LPM_DATA], u32)>,
    iface: Vec<IfaceKey>,
    mac: Vec<MacKey>,
    domain: std::collections::HashSet<[u8; 16]>,
    pname: Vec<PnameKey>,
}

/// What the router keeps of the published rule set: what following links and DNS answers needs. The tables
/// (the port classes alone are 1 MiB) live in the kernel's maps only.
#[derive(Debug)]
struct Published {
    interfaces: Vec<(Direction, String, u32)>,
    rules: RuleSet,
}

/// Owns the routing maps: publishes rule sets into the inactive bank and keeps the active one current.
pub struct Router {
    maps: RouteMaps,
    active: Option<(u32, Published)>,
    entries: [BankEntries; 2],
    /// Destination addresses the DNS forwarder associated with names, republished into each new bank.
    domains: HashMap<[u8; 16], Vec<String>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("active_bank", &self.active.as_ref().map(|a| a.0)).finish_non_exhaustive()
    }
}

impl Router {
    /// A router over `maps` with no rule set published (flows stay unrouted until [`Router::publish`]).
    pub fn new(maps: RouteMaps) -> Self {
        Self { maps, active: None, entries: [BankEntries::default(), BankEntries::default()], domains: HashMap::new() }
    }

    /// The probe map (tests and benchmarks).
    pub fn probe(&mut self) -> &mut Array<MapData, RouteProbe> {
        &mut self.maps.probe
    }

    /// The active bank, if a rule set is published.
    pub fn active_bank(&self) -> Option<u32> {
        self.active.as_ref().map(|(bank, _)| *bank)
    }

    /// Fills the inactive bank with `compiled` (interfaces resolved through `links`) and makes it active with
    /// one selector update. On error the active bank keeps serving.
    pub fn publish(&mut self, compiled: Compiled, links: &LinkTable) -> Result<u32, PublishError> {
        let bank = match &self.active {
            Some((active, _)) => active ^ 1,
            None => 0,
        };
        self.clear_bank(bank)?;
        let b = bank as usize;
        let arrays = self.maps.arrays.map()?;
        for (i, bits) in compiled.classes.iter().enumerate() {
            arrays.class_bits.set(b * MAX_CLASSES as usize + i, *bits);
        }
        for (i, action) in compiled.actions.iter().enumerate() {
            arrays.actions.set(b * MAX_RULES + i, *action);
        }
        for (i, class) in compiled.ports.iter().enumerate() {
            arrays.ports.set(b * PORT_SLOTS as usize + i, *class);
        }
        for (i, class) in compiled.small.iter().enumerate() {
            arrays.small.set(b * SMALL_SLOTS as usize + i, *class);
        }
        for entry in &compiled.lpm {
            let data = lpm_key_data(bank as u8, entry.dimension as u8, entry.addr);
            let prefix = LPM_KEY_PREFIX_BITS + u32::from(entry.prefix);
            self.maps.lpm.insert(&Key::new(prefix, data), entry.class, 0).map_err(op(MAP_ROUTE_LPM))?;
            self.entries[b].lpm.push((data, prefix));
        }
        for (mac, class) in &compiled.macs {
            let key = MacKey { bank: bank as u8, _pad: 0, mac: *mac };
            self.maps.mac.insert(key, class, 0).map_err(op(MAP_ROUTE_MAC))?;
            self.entries[b].mac.push(key);
        }
        for (comm, class) in &compiled.pnames {
            let key = PnameKey { bank, comm: *comm };
            self.maps.pname.insert(key, class, 0).map_err(op(MAP_ROUTE_PNAME))?;
            self.entries[b].pname.push(key);
        }
        self.write_interfaces(bank, &compiled.interfaces, links)?;
        let domains: Vec<([u8; 16], Vec<String>)> = self.domains.iter().map(|(k, v)| (*k, v.clone())).collect();
        for (addr, names) in domains {
            self.write_domain(bank, &compiled.rules, addr, &names)?;
        }
        arrays.config.set(b, compiled.config);
        drop(arrays);
        self.maps.selector.set(0, RouteSelector { bank, loaded: 1 }, 0).map_err(op(MAP_ROUTE_SELECTOR))?;
        self.active = Some((bank, Published { interfaces: compiled.interfaces, rules: compiled.rules }));
        Ok(bank)
    }

    fn clear_bank(&mut self, bank: u32) -> Result<(), PublishError> {
        let b = bank as usize;
        for (data, prefix) in std::mem::take(&mut self.entries[b].lpm) {
            let _ = self.maps.lpm.remove(&Key::new(prefix, data));
        }
        for key in std::mem::take(&mut self.entries[b].iface) {
            let _ = self.maps.iface.remove(&key);
        }
        for key in std::mem::take(&mut self.entries[b].mac) {
            let _ = self.maps.mac.remove(&key);
        }
        for addr in std::mem::take(&mut self.entries[b].domain) {
            let _ = self.maps.domain.remove(&DomainKey { bank: b as u32, addr });
        }
        for key in std::mem::take(&mut self.entries[b].pname) {
            let _ = self.maps.pname.remove(&key);
        }
        Ok(())
    }

    fn write_interfaces(
        &mut self,
        bank: u32,
        interfaces: &[(Direction, String, u32)],
        links: &LinkTable,
    ) -> Result<(), PublishError> {
        let b = bank as usize;
        let mut want: Vec<(IfaceKey, u32)> = Vec::new();
        for (direction, name, class) in interfaces {
            if let Some(link) = links.by_name(name) {
                let key = IfaceKey { bank: bank as u8, direction: *direction as u8, _pad: [0; 2], ifindex: link.index };
                want.push((key, *class));
            }
        }
        for key in std::mem::take(&mut self.entries[b].iface) {
            if !want.iter().any(|(k, _)| *k == key) {
                let _ = self.maps.iface.remove(&key);
            }
        }
        for (key, class) in want {
            self.maps.iface.insert(key, class, 0).map_err(op(MAP_ROUTE_IFACE))?;
            self.entries[b].iface.push(key);
        }
        Ok(())
    }

    /// Re-resolves `interface(...)` names after a link change (create, rename, re-create, delete): the active
    /// bank's entries follow the names without a reload.
    pub fn links_changed(&mut self, links: &LinkTable) -> Result<(), PublishError> {
        let Some((bank, published)) = self.active.take() else { return Ok(()) };
        let result = self.write_interfaces(bank, &published.interfaces, links);
        self.active = Some((bank, published));
        result
    }

    fn write_domain(
        &mut self,
        bank: u32,
        rules: &RuleSet,
        addr: [u8; 16],
        names: &[String],
    ) -> Result<(), PublishError> {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let bits = domain_bits(rules, &refs);
        let key = DomainKey { bank, addr };
        self.maps.domain.insert(key, bits, 0).map_err(op(MAP_ROUTE_DOMAIN))?;
        self.entries[bank as usize].domain.insert(addr);
        Ok(())
    }

    /// Associates destination `addr` (16 bytes, IPv4 mapped) with the names a DNS answer gave it, so `domain(...)`
    /// rules route the connections that follow. Kept and republished into every later bank. An empty `names`
    /// removes the address (the DNS cache let go of it).
    pub fn set_domains(&mut self, addr: [u8; 16], names: Vec<String>) -> Result<(), PublishError> {
        if names.is_empty() {
            if self.domains.remove(&addr).is_some()
                && let Some((bank, _)) = &self.active
            {
                let key = DomainKey { bank: *bank, addr };
                let _ = self.maps.domain.remove(&key);
                self.entries[*bank as usize].domain.remove(&addr);
            }
            return Ok(());
        }
        if let Some((bank, published)) = self.active.take() {
            let key = DomainKey { bank, addr };
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let bits = domain_bits(&published.rules, &refs);
            let result = self.maps.domain.insert(key, bits, 0).map_err(op(MAP_ROUTE_DOMAIN));
            if result.is_ok() {
                self.entries[bank as usize].domain.insert(addr);
            }
            self.active = Some((bank, published));
            result?;
        }
        self.domains.insert(addr, names);
        Ok(())
    }

    /// The names DNS answers gave `addr` (16 bytes, IPv4 mapped), if any.
    pub fn names_of(&self, addr: &[u8; 16]) -> Option<&[String]> {
        self.domains.get(addr).map(Vec::as_slice)
    }

    /// The addresses with names from DNS answers.
    pub fn domain_count(&self) -> usize {
        self.domains.len()
    }

    /// Which interface the kernel resolves for (direction, name) in the active bank (for tests and `dae stats`).
    pub fn interface_entries(&self) -> Vec<(Direction, u32)> {
        let Some((bank, _)) = &self.active else { return Vec::new() };
        self.entries[*bank as usize]
            .iface
            .iter()
            .map(|k| {
                (if k.direction == Direction::WanOut as u8 { Direction::WanOut } else { Direction::LanIn }, k.ifindex)
            })
            .collect()
    }
}
