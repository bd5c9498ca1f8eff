//! The embedded eBPF object: creating its maps and loading its programs into the kernel.

use std::collections::HashMap;

use aya::{Ebpf, EbpfError, EbpfLoader, programs::ProgramError};
use datapath_abi::{
    flow::buckets_for,
    names::{GLOBAL_FLOW_BUCKETS, GLOBAL_FLOW_HASH_SEED, GLOBAL_XDP_META, MAP_FLOWS, PROGRAMS},
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
    /// Whether XDP leaves its parse summary for tc in the packet's metadata. Off where the kernel refuses
    /// `bpf_xdp_adjust_meta` to XDP programs (seen on a sandboxed 6.18 kernel): tc then parses every packet itself.
    pub xdp_meta: bool,
}

/// Creates the maps (a flow table of at least `flow_table_entries` slots) and loads every program with a fresh
/// random flow-hash seed. Where the kernel refuses XDP's metadata helper, the whole object is loaded again with
/// the parse summary off ([`Loaded::xdp_meta`]).
pub fn load(flow_table_entries: u32) -> Result<Loaded, LoadError> {
    match load_with(flow_table_entries, true) {
        Err(LoadError::Program { source, .. }) if refuses_adjust_meta(&source) => load_with(flow_table_entries, false),
        loaded => loaded,
    }
}

/// Whether the verifier refused a program for its `bpf_xdp_adjust_meta` call.
fn refuses_adjust_meta(error: &ProgramError) -> bool {
    matches!(error, ProgramError::LoadError { verifier_log, .. }
        if verifier_log.to_string().contains("cannot use helper bpf_xdp_adjust_meta"))
}

fn load_with(flow_table_entries: u32, xdp_meta: bool) -> Result<Loaded, LoadError> {
    let buckets = buckets_for(flow_table_entries);
    let seed = random_seed();
    let meta = u32::from(xdp_meta);
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(MAP_FLOWS, buckets)
        .override_global(GLOBAL_FLOW_HASH_SEED, &seed, true)
        .override_global(GLOBAL_FLOW_BUCKETS, &buckets, true)
        .override_global(GLOBAL_XDP_META, &meta, true)
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
    Ok(Loaded { ebpf, program_ids, flow_hash_seed: seed, xdp_meta })
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
