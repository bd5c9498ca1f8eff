//! Typed handles on the datapath's maps, taken from a freshly loaded object or opened from their pins.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, MapError, PerCpuArray},
};
use datapath_abi::{
    Admission, Counter,
    names::{MAP_ADMISSION, MAP_CLOCK_PROBE, MAP_COUNTERS, MAP_FLOWS},
};

use crate::flow_table::FlowTable;

/// A map could not be found, opened, pinned or used.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    /// The object lacks a map the ABI names.
    #[error("the eBPF object has no map {0}")]
    Missing(&'static str),
    /// A map exists but has another type or layout.
    #[error("map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Cause.
        source: MapError,
    },
    /// Pinning failed.
    #[error("pinning map {name} at {path}: {source}")]
    Pin {
        /// Map name.
        name: &'static str,
        /// Pin path.
        path: PathBuf,
        /// Cause.
        source: aya::pin::PinError,
    },
    /// A map has another type than the ABI says.
    #[error("map {0} has an unexpected type (another dae-rs version?)")]
    WrongType(&'static str),
    /// The flow table cannot be read (its info) or has another layout than this build expects.
    #[error("the flow table: {0}")]
    FlowTable(#[from] std::io::Error),
}

/// The maps userspace reads and writes.
pub struct Maps {
    /// The flow table, mapped into this process (shared with the gateway's workers).
    pub flows: std::sync::Arc<FlowTable>,
    /// The admission gate and clock sample.
    pub admission: Array<MapData, Admission>,
    /// Per-CPU counters.
    pub counters: PerCpuArray<MapData, u64>,
    /// Where `clock_probe` leaves the tick count (absent when opened from pins).
    pub clock_probe: Option<Array<MapData, u64>>,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maps").field("flows", &self.flows).finish_non_exhaustive()
    }
}

fn err(name: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

impl Maps {
    /// Takes the maps out of a loaded object, pinning the ones other processes read in `pin_dir` when given.
    pub fn take(ebpf: &mut Ebpf, pin_dir: Option<&Path>) -> Result<Self, MapsError> {
        let mut take = |name: &'static str, pin: bool| -> Result<Map, MapsError> {
            let map = ebpf.take_map(name).ok_or(MapsError::Missing(name))?;
            if let (Some(dir), true) = (pin_dir, pin) {
                let path = dir.join(name);
                map.pin(&path).map_err(|source| MapsError::Pin { name, path, source })?;
            }
            Ok(map)
        };
        let flows = take(MAP_FLOWS, true)?;
        let admission = take(MAP_ADMISSION, true)?;
        let counters = take(MAP_COUNTERS, true)?;
        let probe = take(MAP_CLOCK_PROBE, false)?;
        let mut maps = Self::typed(flows, admission, counters, true)?;
        maps.clock_probe = Some(Array::try_from(probe).map_err(err(MAP_CLOCK_PROBE))?);
        Ok(maps)
    }

    /// Opens, read-only, the maps a running daemon pinned in `dir`.
    pub fn open_pinned(dir: &Path) -> Result<Self, MapsError> {
        let open = |name: &'static str| -> Result<Map, MapsError> {
            let data = MapData::from_pin(dir.join(name)).map_err(err(name))?;
            Map::from_map_data(data).map_err(err(name))
        };
        Self::typed(open(MAP_FLOWS)?, open(MAP_ADMISSION)?, open(MAP_COUNTERS)?, false)
    }

    fn typed(flows: Map, admission: Map, counters: Map, writable: bool) -> Result<Self, MapsError> {
        let Map::Array(flows) = flows else {
            return Err(MapsError::WrongType(MAP_FLOWS));
        };
        Ok(Self {
            flows: std::sync::Arc::new(FlowTable::new(flows, writable)?),
            admission: Array::try_from(admission).map_err(err(MAP_ADMISSION))?,
            counters: PerCpuArray::try_from(counters).map_err(err(MAP_COUNTERS))?,
            clock_probe: None,
        })
    }

    /// Writes the gate.
    pub fn set_gate(&mut self, gate: Admission) -> Result<(), MapsError> {
        self.admission.set(0, gate, 0).map_err(err(MAP_ADMISSION))
    }

    /// Reads the gate.
    pub fn gate(&self) -> Result<Admission, MapsError> {
        self.admission.get(&0, 0).map_err(err(MAP_ADMISSION))
    }

    /// Every counter, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, MapsError> {
        Counter::ALL
            .iter()
            .map(|c| {
                let per_cpu = self.counters.get(&(*c as u32), 0).map_err(err(MAP_COUNTERS))?;
                Ok((*c, per_cpu.iter().sum()))
            })
            .collect()
    }
}
