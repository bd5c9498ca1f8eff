#!/usr/bin/env bash
# One idempotent set-up for a fresh machine of this kind (Debian 12, root, Rust stable + nightly by rustup):
# Debian packages, the nightly rust-src component, bpf-linker 0.13 built against the nightly's own LLVM,
# and the test tools. Safe to run again: every step checks before it acts.
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------------------------
# Runtime/test tools: iproute2 (ip, tc), bpftool (checks after exit), iputils-ping, iperf3, socat, tcpdump.
# DNS, proxy and capture tools for the later subsystems are listed here too, so one script serves all.
PACKAGES=(
  iproute2 bpftool iputils-ping iperf3 socat netcat-openbsd tcpdump ethtool procps
  knot-dnsutils nsd dnsperf dnsdist unbound dnsmasq-base
  dante-server microsocks tinyproxy
  tshark ngtcp2-client openssl
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packaged daemons (nsd, unbound, dnsdist, tinyproxy, danted) must not start services on install: tests start
  # their own instances inside namespaces. policy-rc.d exit 101 = "action forbidden".
  restore_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && restore_policy=1
  fi
  echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
  apt-get update -qq || apt-get update
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ -n "$restore_policy" ] && rm -f /usr/sbin/policy-rc.d
  # Services that a package started anyway would hold ports tests use.
  for svc in nsd unbound dnsdist tinyproxy danted; do pkill -x "$svc" 2>/dev/null || true; done
else
  say "Debian packages present"
fi

# --- Rust toolchains ----------------------------------------------------------------------------------
command -v rustup >/dev/null || { echo "setup: rustup not found: this machine kind ships Rust by rustup" >&2; exit 1; }
rustup toolchain list | grep -q '^nightly' || { echo "setup: no nightly toolchain installed; install one with rustup" >&2; exit 1; }
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  say "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly
fi
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

# --- bpf-linker against the nightly's own LLVM ------------------------------------------------------------
BPF_LINKER_VERSION=0.13.0
sysroot=$(rustc +nightly --print sysroot)
llvm_major=$(rustc +nightly -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
llvm_lib=$(cd "$sysroot/lib" && ls libLLVM-"$llvm_major"-*.so 2>/dev/null | head -n1)
[ -n "$llvm_lib" ] || { echo "setup: nightly ships no libLLVM-$llvm_major*.so in $sysroot/lib" >&2; exit 1; }
llvm_name=${llvm_lib#lib}; llvm_name=${llvm_name%.so}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
have=""
if [ -x "$cargo_home/bin/bpf-linker" ]; then
  have=$("$cargo_home/bin/bpf-linker" --version 2>/dev/null | awk '{print $2}') || have=""
fi
if [ "$have" != "$BPF_LINKER_VERSION" ]; then
  say "building bpf-linker $BPF_LINKER_VERSION against $llvm_name (about a minute on 2 cores)"
  RUSTFLAGS="-L $sysroot/lib -l dylib=$llvm_name -C link-arg=-Wl,-rpath,$sysroot/lib" \
    cargo +nightly install --locked --force "bpf-linker@$BPF_LINKER_VERSION" \
      --no-default-features --features "llvm-$llvm_major,no-llvm-linking"
else
  say "bpf-linker $have present"
fi

# --- kernel facilities used by the datapath ---------------------------------------------------------------
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
say "done"
