//! Builds the eBPF object (`datapath-ebpf`) with the nightly toolchain and embeds it.
//!
//! A missing tool stops the build with one `cargo::error` line naming the fix. The object is embedded only if it
//! is at least as new as every source it is built from and carries a `.BTF` section: a stale object or one
//! without BTF fails the build instead of loading maps that do not match the code.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::SystemTime,
};

use object::{Object, ObjectSection};

const SETUP_HINT: &str = "run scripts/setup.sh (installs the nightly rust-src component and bpf-linker)";
/// Code-generation flags of the eBPF object.
/// - `v3` (jmp32, alu32) is supported by every kernel >= 5.1, far below the 6.1 floor.
/// - `--disable-expand-memcpy-in-order`: bpf-linker otherwise sets LLVM's inline-store limit for memset to
///   zero, and every `FlowKey::default()` becomes a call to a byte-at-a-time memset (measured: 40+ ns per
///   packet in tc). Without it LLVM expands small memset/memcpy into word stores.
/// - Not `+allows-misaligned-mem-access`: LLVM then also packs stack slots misaligned, which the verifier
///   rejects ("misaligned stack access").
const EBPF_RUSTFLAGS: [&str; 8] = [
    "-C",
    "debuginfo=2",
    "-C",
    "link-arg=--btf",
    "-C",
    "link-arg=--disable-expand-memcpy-in-order",
    "-C",
    "target-cpu=v3",
];

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            println!("cargo::error={message}");
            ExitCode::SUCCESS
        }
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let root = manifest_dir.parent().ok_or("datapath has no parent directory")?.to_path_buf();
    let ebpf_dir = root.join("datapath-ebpf");
    let abi_dir = root.join("datapath-abi");
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    for dir in [&ebpf_dir, &abi_dir] {
        println!("cargo::rerun-if-changed={}", dir.join("src").display());
        println!("cargo::rerun-if-changed={}", dir.join("Cargo.toml").display());
    }
    println!("cargo::rerun-if-changed={}", ebpf_dir.join("Cargo.lock").display());
    println!("cargo::rerun-if-env-changed=DAERS_EBPF_OBJECT");

    let object = match env::var_os("DAERS_EBPF_OBJECT") {
        Some(prebuilt) => PathBuf::from(prebuilt),
        None => {
            check_tools()?;
            let target_dir = env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .map(|d| if d.is_relative() { root.join(d) } else { d })
                .unwrap_or_else(|| root.join("target"))
                .join("bpf");
            compile(&ebpf_dir, &target_dir)?;
            let object = target_dir.join("bpfel-unknown-none/release/datapath-ebpf");
            // The sources are the ones the eBPF build read (its dep-info): userspace-only modules of the ABI
            // crate (cfg'd out for bpf) do not make the object stale. Without dep-info, every source counts.
            let newest_source = match tracked_sources(&object) {
                Some(sources) => newest_file_mtime(&sources)?,
                None => newest_mtime(&[ebpf_dir.join("src"), abi_dir.join("src")])?,
            }
            .max(mtime(&ebpf_dir.join("Cargo.toml"))?)
            .max(mtime(&abi_dir.join("Cargo.toml"))?);
            if mtime(&object)? < newest_source {
                return Err(format!(
                    "the eBPF object {} is older than its sources after a build; remove {} and build again",
                    object.display(),
                    target_dir.display()
                ));
            }
            object
        }
    };
    let bytes = fs::read(&object).map_err(|e| format!("cannot read eBPF object {}: {e}", object.display()))?;
    check_btf(&object, &bytes)?;
    fs::write(out_dir.join("datapath-ebpf.o"), &bytes).map_err(|e| e.to_string())?;
    Ok(())
}

fn check_tools() -> Result<(), String> {
    let rustup = Command::new("rustup").arg("--version").output();
    if !rustup.map(|o| o.status.success()).unwrap_or(false) {
        return Err(format!("rustup not found; the eBPF build needs the nightly toolchain: {SETUP_HINT}"));
    }
    let components = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .map_err(|e| format!("rustup failed: {e}"))?;
    if !components.status.success() {
        return Err(format!("no nightly toolchain installed: {SETUP_HINT}"));
    }
    if !String::from_utf8_lossy(&components.stdout).lines().any(|l| l.starts_with("rust-src")) {
        return Err(format!("the nightly rust-src component is missing: {SETUP_HINT}"));
    }
    let linker = Command::new("bpf-linker").arg("--version").output();
    if !linker.map(|o| o.status.success()).unwrap_or(false) {
        return Err(format!("bpf-linker not found on PATH: {SETUP_HINT}"));
    }
    Ok(())
}

fn compile(ebpf_dir: &Path, target_dir: &Path) -> Result<(), String> {
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
    ])
    .arg("--target-dir")
    .arg(target_dir)
    .current_dir(ebpf_dir);
    // The outer build's compiler, flags and jobserver belong to the host build; the nested one sets its own.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_") || key.starts_with("RUSTC") || key.starts_with("RUSTUP_TOOLCHAIN") {
            cmd.env_remove(&key);
        }
    }
    for key in ["RUSTFLAGS", "RUSTDOCFLAGS", "MAKEFLAGS", "MFLAGS", "CARGO"] {
        cmd.env_remove(key);
    }
    if let Some(home) = env::var_os("CARGO_HOME") {
        cmd.env("CARGO_HOME", home);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", EBPF_RUSTFLAGS.join("\x1f"));
    let output = cmd.output().map_err(|e| format!("cannot run the nightly cargo: {e}; {SETUP_HINT}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            println!("cargo::warning={line}");
        }
        let first = stderr.lines().find(|l| l.starts_with("error")).unwrap_or("see the warnings above");
        return Err(format!("building the eBPF object failed: {first}"));
    }
    Ok(())
}

fn check_btf(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let file = object::File::parse(bytes).map_err(|e| format!("{} is not an ELF object: {e}", path.display()))?;
    if file.section_by_name(".BTF").and_then(|s| s.size().checked_sub(1)).is_none() {
        return Err(format!(
            "{} has no .BTF section; it must be linked with `-C link-arg=--btf` by bpf-linker",
            path.display()
        ));
    }
    Ok(())
}

fn mtime(path: &Path) -> Result<SystemTime, String> {
    fs::metadata(path).and_then(|m| m.modified()).map_err(|e| format!("{}: {e}", path.display()))
}

/// The source files listed in the dep-info (`<object>.d`) cargo wrote next to the object, if any.
fn tracked_sources(object: &Path) -> Option<Vec<PathBuf>> {
    let text = fs::read_to_string(object.with_extension("d")).ok()?;
    let (_, deps) = text.lines().next()?.split_once(": ")?;
    // Make's syntax: sources separated by spaces, a space inside a path escaped as `\ `.
    let mut sources = Vec::new();
    let mut current = String::new();
    let mut chars = deps.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => current.push(chars.next()?),
            ' ' => {
                if !current.is_empty() {
                    sources.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        sources.push(PathBuf::from(current));
    }
    (!sources.is_empty()).then_some(sources)
}

fn newest_file_mtime(files: &[PathBuf]) -> Result<SystemTime, String> {
    files.iter().try_fold(SystemTime::UNIX_EPOCH, |newest, file| Ok(newest.max(mtime(file)?)))
}

fn newest_mtime(dirs: &[PathBuf]) -> Result<SystemTime, String> {
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let entry = entry.map_err(|e| e.to_string())?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                newest = newest.max(mtime(&path)?);
            }
        }
    }
    Ok(newest)
}
