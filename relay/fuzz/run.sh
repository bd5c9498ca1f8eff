#!/usr/bin/env bash
# Runs every relay fuzz target for SECONDS each (CI: a short bounded run; see docs/sniffing.md for a long one).
#
#   bash relay/fuzz/run.sh SECONDS
#
# Needs the nightly toolchain and cargo-fuzz (installed from crates.io when missing). Each target starts from
# the committed seeds (seeds/TARGET) plus what earlier runs found (corpus/TARGET, not committed); a crash
# stops the script with libFuzzer's reproducer in artifacts/TARGET/. The last line of each target's output
# is its execution count.
set -euo pipefail

secs=${1:?usage: run.sh SECONDS}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi
rustup toolchain list | grep -q '^nightly' || { echo "run.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2; exit 1; }
mkdir -p logs
for target in quic tls http; do
  mkdir -p "corpus/$target"
  echo "fuzz: $target for ${secs}s"
  if ! cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$secs" -print_final_stats=1 >"logs/$target.log" 2>&1; then
    tail -n 40 "logs/$target.log" >&2
    echo "fuzz: $target FAILED (log: relay/fuzz/logs/$target.log)" >&2
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$target.log" | tail -n1)
  echo "fuzz: $target ok, ${execs:-?} executions in ${secs}s"
done
