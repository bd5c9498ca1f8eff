//! The embedded eBPF object: creating its maps and loading its programs into the kernel.

use std::collections::HashMap;

use aya::{Ebpf, EbpfError, EbpfLoader, programs::ProgramError};
use datapath_abi::{
    flow::buckets_for,
    names::{GLOBAL_FLOW_BUCKETS, GLOBAL_FLOW_HASH_SEED, MAP_FLOWS, PROGRAMS},
};

/// The eBPF object `build.rs` built and checked (fresh, with BTF).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/datapath-ebpf.o"));

/// Loading the object failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Parsing the object or creating its maps failed.
    #[error("loading the eBPF object: {0}")]
    Object(#[from] EbpfError),
    /// The object lacks a program the ABI names.
    #[error("the eBPF object has no program {0}")]
    MissingProgram(&'static str),
    /// The verifier (or the kernel) refused a program; the verifier log is part of the message.
    #[error("loading program {program}: {source}")]
    Program {
        /// Program name.
        program: &'static str,
        /// Cause.
        source: ProgramError,
    },
}

/// The object with its maps created and every program verified and loaded.
#[derive(Debug)]
pub struct Loaded {
    /// The object.
    pub ebpf: Ebpf,
    /// Kernel id of each program, by name.
    pub program_ids: HashMap<&'static str, u32>,
    /// The flow-hash seed the programs were loaded with.
    pub flow_hash_seed: u64,
}

/// Creates the maps (a flow table of at least `flow_table_entries` slots) and loads every program with a fresh
/// random flow-hash seed.
pub fn load(flow_table_entries: u32) -> Result<Loaded, LoadError> {
    let buckets = buckets_for(flow_table_entries);
    let seed = random_seed();
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(MAP_FLOWS, buckets)
        .override_global(GLOBAL_FLOW_HASH_SEED, &seed, true)
        .override_global(GLOBAL_FLOW_BUCKETS, &buckets, true)
        .load(EBPF_OBJECT)?;
    let mut program_ids = HashMap::new();
    for name in PROGRAMS {
        let program = ebpf.program_mut(name).ok_or(LoadError::MissingProgram(name))?;
        let loaded = match program {
            aya::programs::Program::Xdp(p) => p.load(),
            aya::programs::Program::SchedClassifier(p) => p.load(),
            aya::programs::Program::CgroupSock(p) => p.load(),
            aya::programs::Program::SkLookup(p) => p.load(),
            _ => return Err(LoadError::MissingProgram(name)),
        };
        loaded.map_err(|source| LoadError::Program { program: name, source })?;
        let id = program.info().map_err(|source| LoadError::Program { program: name, source })?.id();
        program_ids.insert(name, id);
    }
    Ok(Loaded { ebpf, program_ids, flow_hash_seed: seed })
}

fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    // SAFETY: getrandom writes at most seed.len() bytes into the buffer.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n != seed.len() as isize {
        // getrandom cannot fail for 8 bytes once the pool is initialised; fall back to time and pid anyway.
        let t = crate::clock::monotonic_coarse_ns() ^ u64::from(std::process::id()) << 32;
        return t.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    u64::from_ne_bytes(seed)
}
