#!/usr/bin/env bash
# The lab demo: set up this machine (idempotent), build dae, then client -> gateway -> server namespaces with
# `dae run` on the gateway, real UDP/TCP/ICMP over IPv4 and IPv6, the flow tags dae reports, a PASS/FAIL table.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "demo: run as root (namespaces and eBPF)" >&2; exit 2; }
./scripts/setup.sh
cargo build --release -p datapath --bin dae
# Where cargo put it: CARGO_TARGET_DIR when the environment sets one.
exec cargo run --release -q -p bench-lab --bin lab -- demo --dae "${CARGO_TARGET_DIR:-target}/release/dae"
