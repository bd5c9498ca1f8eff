#!/usr/bin/env bash
# Every check CI runs: set-up (idempotent), formatting, lints, all tests including the privileged ones
# (network namespaces and eBPF; they print a SKIP line when not root).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
./scripts/setup.sh
echo "== fmt"
cargo fmt --all -- --check
(cd datapath-ebpf && cargo fmt -- --check)
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
cargo test --workspace --no-fail-fast
echo "== fuzz (short, bounded: each sniffer target ${FUZZ_SECONDS:-20} s)"
bash relay/fuzz/run.sh "${FUZZ_SECONDS:-20}"
echo "== all checks passed"
