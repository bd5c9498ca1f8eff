//! Routing rules: the IR ([`ir`]), its reference evaluation ([`reference`]), lowering the `routing` section into
//! it ([`lower()`]), geosite/geoip assets ([`Assets`], [`geodata`]), the userspace matcher ([`Compiled`]), the
//! golden table of dae semantics ([`golden`]) and the benchmark rule mix ([`bench_mix`]).

pub(crate) mod assets;
mod bench;
pub mod geodata;
pub mod golden;
pub mod ir;
pub(crate) mod lower;
pub(crate) mod matcher;
pub mod reference;

pub use assets::{ASSET_ENV, Assets, DEFAULT_ASSET_DIRS};
pub use bench::{BENCH_DST, bench_mix, bench_packet};
pub use ir::*;
pub use lower::{Lowered, ROUTING_FUNCTIONS, lower};
pub use matcher::{Compiled, Decision};
