#!/usr/bin/env bash
# Re-makes the captures in relay/tests/data/ from real clients, and tshark's dissection of each
# (`*.tshark.tsv`, the oracle that `tests/pcap_oracle.rs` compares `sniff::pcap::report` with).
#
# Needs root, iproute2, tcpdump, tshark, socat, openssl, curl, python3 (http.server), gtlsclient
# (ngtcp2-client) and a Python with aioquic (AIOQUIC_PYTHON, default: python3; `pip install aioquic`).
# All traffic stays between two network namespaces made here (daers-cap-cli, daers-cap-srv), deleted on
# every exit path, as is every process started here.
#
#   bash relay/tests/captures/make.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=$(cd "$here/../data" && pwd)
py=${AIOQUIC_PYTHON:-python3}
CLI=daers-cap-cli SRV=daers-cap-srv
C4=10.77.0.1 S4=10.77.0.2 C6=fd77::1 S6=fd77::2
work=$(mktemp -d)
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  ip netns del "$CLI" 2>/dev/null || true
  ip netns del "$SRV" 2>/dev/null || true
  rm -rf "$work" "/etc/netns/$CLI"
}
trap cleanup EXIT INT TERM

say() { printf 'captures: %s\n' "$*"; }
cli() { ip netns exec "$CLI" "$@"; }
srv() { ip netns exec "$SRV" "$@"; }
bg_srv() { ip netns exec "$SRV" "$@" >/dev/null 2>&1 & pids+=($!); }

ip netns add "$CLI"
ip netns add "$SRV"
# gtlsclient sends the SNI of the host name it connects to: `ip netns exec` shows the client this hosts file.
mkdir -p "/etc/netns/$CLI"
printf '%s\n' "$S4 quic-v1.example quic-draft29.example any-quic.example" "$S6 quic-v6.example" >"/etc/netns/$CLI/hosts"
ip link add daers-cap-c type veth peer name daers-cap-s
ip link set daers-cap-c netns "$CLI"
ip link set daers-cap-s netns "$SRV"
cli ip addr add "$C4/24" dev daers-cap-c
srv ip addr add "$S4/24" dev daers-cap-s
cli ip addr add "$C6/64" dev daers-cap-c nodad
srv ip addr add "$S6/64" dev daers-cap-s nodad
for ns in "$CLI" "$SRV"; do ip netns exec "$ns" ip link set lo up; done
cli ip link set daers-cap-c up
srv ip link set daers-cap-s up
# Offloads off: the capture then shows the segments as sent, not merged by GRO or split by TSO afterwards.
cli ethtool -K daers-cap-c gro off gso off tso off >/dev/null 2>&1 || true
srv ethtool -K daers-cap-s gro off gso off tso off >/dev/null 2>&1 || true

# Servers: TLS on 443, HTTP on 80, a UDP sink on 443 (no server answers QUIC: only the client's first flight
# matters, and a sink keeps ICMP errors from cutting it short).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=daers \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
mkdir "$work/www" && echo hello >"$work/www/index.html"
bg_srv openssl s_server -quiet -accept 443 -cert "$work/cert.pem" -key "$work/key.pem" -alpn h2,http/1.1 -naccept 1000
bg_srv python3 -m http.server 80 --bind :: --directory "$work/www"
bg_srv socat -u UDP6-RECV:443,ipv6only=0 /dev/null
sleep 1

# capture FILE TOOL -- commands...: records the server side of the veth while the commands run.
capture() {
  local file=$1 tool=$2; shift 3
  rm -f "$out/$file"
  if [ "$tool" = tcpdump ]; then
    ip netns exec "$SRV" tcpdump -i daers-cap-s -U -s 0 -w "$out/$file" 'tcp or udp' >/dev/null 2>&1 & local cap=$!
  else
    # `-i any`: Linux cooked (SLL2) frames in pcapng, as operators capture on a gateway.
    ip netns exec "$SRV" tshark -i any -f 'tcp or udp' -w "$work/any.pcapng" >/dev/null 2>&1 & local cap=$!
  fi
  pids+=("$cap")
  sleep 1.5
  "$@"
  sleep 1
  kill -INT "$cap"; wait "$cap" 2>/dev/null || true
  [ "$tool" = tcpdump ] || cp "$work/any.pcapng" "$out/$file"
  say "wrote $file"
}

quic_ngtcp2() {
  cli timeout 3 gtlsclient -q --handshake-timeout=1s quic-v1.example 443 https://quic-v1.example/ || true
  cli timeout 3 gtlsclient -q --version=0xff00001d --handshake-timeout=1s quic-draft29.example 443 \
    https://quic-draft29.example/ || true
  cli timeout 3 gtlsclient -q --handshake-timeout=1s quic-v6.example 443 https://quic-v6.example/ || true
}

quic_aioquic() {
  cli "$py" "$here/quic_client.py" "$S4" 443 --sni quic-v2.example --version 2
  cli "$py" "$here/quic_client.py" "$S4" 443 --sni quic-big.example --version 1 --big --alpn h3,hq-interop
  cli "$py" "$here/quic_client.py" "$S4" 443 --sni quic-v2-big.example --version 2 --big
}

tls_http() {
  cli curl -s -k -o /dev/null --max-time 3 --resolve tls-curl.example:443:"$S4" https://tls-curl.example/ || true
  cli curl -s -o /dev/null --max-time 3 --resolve http.example:80:"$S4" http://http.example/ || true
  cli curl -s -o /dev/null --max-time 3 -H 'Host: http-v6.example' "http://[$S6]/" || true
}

tls_fragmented() {
  # A 300-byte MTU splits the ClientHello over TCP segments; -max_send_frag 512 splits it over TLS records.
  cli ip link set daers-cap-c mtu 300
  srv ip link set daers-cap-s mtu 300
  local alpn=h2,http/1.1,$(printf 'x%.0s' {1..200}),$(printf 'y%.0s' {1..200})
  echo | cli timeout 3 openssl s_client -quiet -connect "$S4:443" -servername records.example -alpn "$alpn" \
    -max_send_frag 512 >/dev/null 2>&1 || true
  cli ip link set daers-cap-c mtu 1500
  srv ip link set daers-cap-s mtu 1500
}

mixed_any() {
  cli timeout 3 gtlsclient -q --handshake-timeout=1s any-quic.example 443 https://any-quic.example/ || true
  cli curl -s -k -o /dev/null --max-time 3 --resolve any-tls.example:443:"$S4" https://any-tls.example/ || true
  cli curl -s -o /dev/null --max-time 3 --resolve any-http.example:80:"$S4" http://any-http.example/ || true
}

capture quic-ngtcp2.pcap tcpdump -- quic_ngtcp2
capture quic-aioquic.pcap tcpdump -- quic_aioquic
capture tls-http.pcap tcpdump -- tls_http
capture tls-fragmented.pcap tcpdump -- tls_fragmented
capture mixed-any.pcapng any -- mixed_any

# The oracle: keep these fields and this filter in step with `tshark_fields` in tests/pcap_oracle.rs.
for f in quic-ngtcp2.pcap quic-aioquic.pcap tls-http.pcap tls-fragmented.pcap mixed-any.pcapng; do
  tshark -r "$out/$f" -Y 'tls.handshake.type == 1 || http.request' -T fields \
    -E separator=/t -E occurrence=a -E aggregator=, \
    -e frame.number -e ip.src -e ipv6.src -e ip.dst -e ipv6.dst -e udp.srcport -e tcp.srcport \
    -e udp.dstport -e tcp.dstport -e quic.version -e tls.handshake.extensions_server_name \
    -e tls.handshake.extensions_alpn_str -e http.host >"$out/$f.tshark.tsv"
  say "wrote $f.tshark.tsv ($(wc -l <"$out/$f.tshark.tsv") lines)"
done
