#!/usr/bin/env bash
# A hand lab for TCP through the gateway (root): client -> gateway (`dae run`) -> server namespaces of veths,
# iperf3 direct (port 5201, routed by the kernel) and relayed (5202, `dport(5202) -> relay`, a group whose node is
# `direct`), one daemon per variant and round, variants alternating. Prints per run the goodput and the machine's
# busy cores (/proc/stat, softirq included), and on stderr the bytes per skb the server's veth received.
#
#   VARIANTS="DAE_TCP_RELAY=splice;DAE_TCP_RELAY=copy" ROUNDS=3 scripts/tcp-relay-lab.sh
#
# VARIANTS: `;`-separated environment settings for `dae run`, one daemon each (default: none, the defaults); a
# BIN=path among them runs that binary instead (A/B of two builds). ROUNDS (3), SECS (iperf3 -t, 4), DAE (the
# binary: target/release/dae), WIRE_MBIT (a tbf of that rate on the gateway's WAN veth, as `perf --only gateway`'s
# wire runs; none by default). Run it under `flock /tmp/bench.lock` when benchmarks share the machine. Namespaces
# and links are named daersq<pid>*, removed on every exit.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "tcp-relay-lab: run as root (namespaces and eBPF)" >&2; exit 2; }
DAE=${DAE:-${CARGO_TARGET_DIR:-target}/release/dae}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-4}
VARIANTS=${VARIANTS:-}
P=daersq$$
CONFIG=$(mktemp --suffix=.dae)
LOG=$(mktemp)
DAEPID=
cleanup() {
    [ -n "$DAEPID" ] && kill "$DAEPID" 2>/dev/null && wait "$DAEPID" 2>/dev/null
    for n in cl gw srv; do ip netns pids "$P-$n" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
    sleep 0.2
    for n in cl gw srv; do ip netns del "$P-$n" 2>/dev/null || true; done
    rm -f "$CONFIG" "$LOG"
}
trap cleanup EXIT INT TERM

for n in cl gw srv; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
ip link add "${P}c" netns "$P-cl" type veth peer name "${P}l" netns "$P-gw"
ip link add "${P}w" netns "$P-gw" type veth peer name "${P}s" netns "$P-srv"
ip -n "$P-cl" addr add 10.78.10.2/24 dev "${P}c"
ip -n "$P-gw" addr add 10.78.10.1/24 dev "${P}l"
ip -n "$P-gw" addr add 10.78.200.1/24 dev "${P}w"
ip -n "$P-srv" addr add 10.78.200.2/24 dev "${P}s"
ip -n "$P-cl" link set "${P}c" up
ip -n "$P-gw" link set "${P}l" up
ip -n "$P-gw" link set "${P}w" up
ip -n "$P-srv" link set "${P}s" up
ip -n "$P-cl" route add default via 10.78.10.1
ip -n "$P-srv" route add default via 10.78.200.1
ip netns exec "$P-gw" sysctl -qw net.ipv4.ip_forward=1
if [ -n "${WIRE_MBIT:-}" ]; then
    ip netns exec "$P-gw" tc qdisc replace dev "${P}w" root tbf rate "${WIRE_MBIT}mbit" burst 512k latency 4ms
fi
ip netns exec "$P-srv" iperf3 -s -D -p 5201
ip netns exec "$P-srv" iperf3 -s -D -p 5202
chmod 600 "$CONFIG"
cat > "$CONFIG" <<EOF
global {
  lan_interface: ${P}l
  wan_interface: ${P}w
}
node {
  gateway: 'direct'
}
group {
  relay {
    filter: name(gateway)
    policy: fixed(0)
  }
}
routing {
  dport(5202) -> relay
  fallback: direct
}
EOF

start_dae() {
    local bin=$DAE word
    for word in $1; do case $word in BIN=*) bin=${word#BIN=} ;; esac; done
    # shellcheck disable=SC2086 # the variant is a list of NAME=value words
    env $1 ip netns exec "$P-gw" "$bin" run -c "$CONFIG" --instance "$P" > "$LOG" 2>&1 &
    DAEPID=$!
    for _ in $(seq 100); do grep -q "datapath ready" "$LOG" && return 0; sleep 0.1; done
    echo "dae did not become ready:" >&2; cat "$LOG" >&2; exit 1
}
stop_dae() { kill "$DAEPID"; wait "$DAEPID" 2>/dev/null || true; DAEPID=; }
busy_total() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
server_rx() {
    ip -n "$P-srv" -s -j link show "${P}s" |
        python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["stats64"]["rx"]; print(s["packets"], s["bytes"])'
}
# One iperf3 run to `port`: prints "Gbit/s busy-cores".
one() {
    local port=$1 p0 y0 b0 t0 p1 y1 b1 t1 gbps
    read -r p0 y0 < <(server_rx); read -r b0 t0 < <(busy_total)
    gbps=$(ip netns exec "$P-cl" iperf3 -c 10.78.200.2 -p "$port" -t "$SECS" -J |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)')
    read -r b1 t1 < <(busy_total); read -r p1 y1 < <(server_rx)
    echo "  port $port: the server's veth received $(( (y1 - y0) / ((p1 - p0) > 0 ? (p1 - p0) : 1) )) bytes per skb" >&2
    python3 -c "print(f'{$gbps:.2f} {$(nproc) * ($b1 - $b0) / ($t1 - $t0):.2f}')"
}

IFS=';' read -ra VARS <<< "$VARIANTS"
[ ${#VARS[@]} -gt 0 ] || VARS=("")
for round in $(seq "$ROUNDS"); do
    for variant in "${VARS[@]}"; do
        start_dae "$variant"
        read -r dg dc < <(one 5201)
        read -r rg rc < <(one 5202)
        stop_dae
        python3 -c "print(f'round $round [${variant:-defaults}]: direct $dg Gbit/s on $dc cores, relayed $rg on $rc: ' \
            f'{$rg / $dg:.3f}x, cores per Gbit/s {($rc / $rg) / ($dc / $dg):.2f}x')"
    done
done
