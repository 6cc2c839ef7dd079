#!/usr/bin/env bash
# make bench-xdp: ip2p with the XDP fast path on and off, coturn, and the
# kernel routing the same traffic with no relay, measured in one run with
# ip2p-bench between three network namespaces of the script's own:
#
#   bench clients  10.71.1.2 --cr/rc-- 10.71.1.1 relay 10.71.2.1 --rp/pr-- 10.71.2.2  echo peers
#   (namespace C)                    (namespace R)                          (namespace P)
#
# Over veth a packet's receive work is charged where a real NIC charges it
# (softirq, not the sender), and XDP runs in that receive path, not in the
# relay process: so CPU is measured for the whole machine from /proc/stat
# (all CPUs, softirq included), less the bench's own process CPU, per
# packet delivered end to end (an echo crosses the relay twice, a pair's
# packet once). The relay process's own CPU is shown too. The XDP
# program's own cost comes from kernel.bpf_stats_enabled.
#
# Servers get one worker / one relay thread pinned to SERVER_CPU; the bench
# is pinned to BENCH_CPU. Pairs take the fast path from client to client
# (XDP_TX back out of the interface they came in by). Each scenario runs
# REPEATS times (servers in turn within each round), and the table shows
# each figure's median with its range; a fixed-rate run the generator could
# not keep on schedule is run again (up to RERUNS more times), then left out
# with the reason printed. Tunables (env): RATE, LOAD_RATE, DURATION,
# CAP_START, CAP_STEP_DURATION, CAP_MAX_P99_US, SIZES, MODES, SESSIONS,
# REPEATS, RERUNS, and BASELINE: another ip2p-relay binary (an earlier
# build) measured in the same run, with the fast path on ("before-xdp") and
# off ("before"), at the fixed rates.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-20000}
LOAD_RATE=${LOAD_RATE:-40000}
DURATION=${DURATION:-4}
WARMUP=1
CAP_START=${CAP_START:-20000}
CAP_STEP_DURATION=${CAP_STEP_DURATION:-2}
CAP_MAX_P99_US=${CAP_MAX_P99_US:-5000}
SIZES=${SIZES:-"100 1200"}
MODES=${MODES:-"echo pairs"}
SESSIONS=${SESSIONS:-20}
BASELINE=${BASELINE:-}
REPEATS=${REPEATS:-3}
RERUNS=${RERUNS:-2}
OUT=${OUT:-target/bench-xdp}
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.cpu "$OUT"/errors.log "$OUT"/*.bpf

[ "$(id -u)" = 0 ] || { echo "bench-xdp needs root (network namespaces, XDP)" >&2; exit 1; }
xdp/toolchain.sh
need=()
command -v turnserver >/dev/null || need+=(coturn)
command -v bpftool >/dev/null || need+=(bpftool)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (apt-get)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --locked -p ip2p-relay -p ip2p-bench
RELAY=$PWD/target/release/ip2p-relay
BENCH=$PWD/target/release/ip2p-bench

if [ "$(nproc)" -ge 2 ]; then SERVER_CPU=${SERVER_CPU:-1}; BENCH_CPU=${BENCH_CPU:-0}; else SERVER_CPU=0; BENCH_CPU=0; fi

NS=ip2p-bx-$$
R=$NS-r C=$NS-c P=$NS-p
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for n in "$R" "$C" "$P"; do ip netns del "$n" 2>/dev/null || true; done
  sysctl -qw kernel.bpf_stats_enabled="$BPF_STATS" || true
}
BPF_STATS=$(sysctl -n kernel.bpf_stats_enabled)
trap cleanup EXIT

for n in "$R" "$C" "$P"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip -n "$R" link add rc type veth peer name cr netns "$C"
ip -n "$R" link add rp type veth peer name pr netns "$P"
ip -n "$R" addr add 10.71.1.1/24 dev rc
ip -n "$R" addr add 10.71.2.1/24 dev rp
ip -n "$C" addr add 10.71.1.2/24 dev cr
ip -n "$P" addr add 10.71.2.2/24 dev pr
for l in "$R rc" "$R rp" "$C cr" "$P pr"; do set -- $l; ip -n "$1" link set "$2" up; done
ip -n "$C" route add default via 10.71.1.1
ip -n "$P" route add default via 10.71.2.1
ip netns exec "$R" sysctl -qw net.ipv4.conf.all.forwarding=1
# Complete checksums from the senders, as from a real NIC; and NAPI (GRO)
# on the far ends, without which a veth drops what XDP redirects into it.
for l in "$C cr" "$P pr"; do
  set -- $l
  ip netns exec "$1" ethtool -K "$2" tx off gro on >/dev/null
done
# What XDP_TX sends back into a veth is delivered only when the far end
# has an XDP program (the kernel's veth wakes the far end's NAPI after
# XDP_TX only then; GRO is not enough): pairs through the fast path get a
# pass-through program on the bench's end (its cost counts against ip2p;
# the socket runs go without, since a program there would make the kernel
# copy each packet the servers send).
PASS_OBJ=$OUT/pass.o
printf '%s\n' '#include <linux/bpf.h>' '#include <bpf/bpf_helpers.h>' \
  'SEC("xdp") int pass(struct xdp_md *ctx) { return XDP_PASS; }' 'char LICENSE[] SEC("license") = "GPL";' \
  | clang -O2 -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -x c -c - -o "$PASS_OBJ"
far_end_pass() { ip -n "$C" link set dev cr xdpdrv "$@"; }
sysctl -qw kernel.bpf_stats_enabled=1

SERVER=10.71.1.1:3478
start_ip2p() { # xdp mode [binary]
  ip netns exec "$R" taskset -c "$SERVER_CPU" "${2:-$RELAY}" --config bench/relay-bench.toml --workers 1 --listen "$SERVER" \
    --relay-ip 10.71.2.1 --allow-peer 10.71.2.0/24 --user demo:demo-password --realm ip2p --admin off \
    --datapath io_uring --xdp "$1" >"$OUT/ip2p-xdp-$1.log" 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID")
}
start_coturn() {
  ip netns exec "$R" taskset -c "$SERVER_CPU" turnserver -n --listening-ip=10.71.1.1 --listening-port=3478 \
    --relay-ip=10.71.2.1 -a --user=demo:demo-password --realm=ip2p --relay-threads=1 --no-cli --no-tls --no-dtls \
    --log-file="$OUT/coturn.log" --simple-log >/dev/null 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID")
}
stop_server() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }

# Wall time and the CPUs' idle time (idle + iowait, which NOHZ measures
# exactly, unlike the tick-sampled busy columns): busy = CPUs x wall - idle.
busy() { echo "$(date +%s%N) $(awk '/^cpu /{print $5+$6}' /proc/stat)"; }
ticks() { [ -n "${SERVER_PID:-}" ] && awk '{print $14+$15}' "/proc/$SERVER_PID/stat" || echo 0; }
prog_stats() { { bpftool -j prog show name ip2p_relay 2>/dev/null || echo '{}'; } | python3 -c '
import json, sys
try:
    p = json.load(sys.stdin)
    p = p[0] if isinstance(p, list) else p
    print(p.get("run_time_ns", 0), p.get("run_cnt", 0))
except Exception:
    print(0, 0)'; }

# bench <server name> <mode> <size> <rate> <run>: one fixed-rate run from
# namespace C, its echo peers in P; writes the summary and the CPU split as
# <run>-<name>-<mode>-<size>.r<round>. A run the generator could not keep
# on schedule (not valid) goes again, up to RERUNS more times.
bench() {
  local name=$1 mode=$2 size=$3 rate=$4 run=$5 m stem try
  stem=$OUT/$run-$name-$mode-$size.r$ROUND
  m=$mode; [ "$name" = kernel ] && { [ "$mode" = echo ] && m=direct-echo || m=direct; }
  for try in $(seq 0 "$RERUNS"); do
    local b0 s0 f0 b1 s1 f1
    b0=$(busy); s0=$(ticks); f0=$(prog_stats)
    ip netns exec "$C" taskset -c "$BENCH_CPU" sh -c '"$@" 2>>'"$OUT"'/errors.log; s=$?; awk "{print \$16+\$17}" /proc/$$/stat >'"$stem"'.bench; exit $s' sh \
      "$BENCH" latency --engine io-uring --server "$SERVER" --mode "$m" --echo-at 10.71.2.2:40000 --echo-netns "$P" \
      --size "$size" --rate "$rate" --sessions "$SESSIONS" --duration "$DURATION" --warmup "$WARMUP" \
      --label "$name $mode ${size}B at $rate #$ROUND" --json "$stem.json" | sed -n 2p \
      || echo "FAILED: $name $mode $size (see $OUT/errors.log)"
    b1=$(busy); s1=$(ticks); f1=$(prog_stats)
    echo "$b0 $b1 $(nproc) $((s1 - s0)) $(cat "$stem.bench") $(getconf CLK_TCK) $rate $(( DURATION + WARMUP ))" >"$stem.cpu"
    echo "$f0 $f1" >"$stem.bpf"
    if grep -q '"valid": true' "$stem.json" 2>/dev/null; then return 0; fi
    if [ "$try" -lt "$RERUNS" ]; then echo "  (the generator fell behind its schedule: running it again)"; fi
  done
}

capacity() {
  local name=$1 mode=$2 size=$3 m
  m=$mode; [ "$name" = kernel ] && { [ "$mode" = echo ] && m=direct-echo || m=direct; }
  ip netns exec "$C" taskset -c "$BENCH_CPU" "$BENCH" capacity --engine io-uring --server "$SERVER" --mode "$m" \
    --echo-at 10.71.2.2:40000 --echo-netns "$P" --size "$size" --rate "$CAP_START" --sessions "$SESSIONS" \
    --duration "$CAP_STEP_DURATION" --warmup 0.5 --label "$name" --max-p99-us "$CAP_MAX_P99_US" \
    --json "$OUT/capacity-$name-$mode-$size.r$ROUND.json" 2>>"$OUT/errors.log" | tail -n 1 || echo "FAILED: capacity $name"
}

scenario() { # name mode size
  bench "$1" "$2" "$3" "$RATE" latency
  bench "$1" "$2" "$3" "$LOAD_RATE" load
  capacity "$1" "$2" "$3"
}

echo "ip2p-bench xdp: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r)"
echo "namespaces over veth; servers pinned to CPU $SERVER_CPU, bench to CPU $BENCH_CPU; fixed rates $RATE and $LOAD_RATE pkt/s, $SESSIONS sessions, ${DURATION}s; $REPEATS rounds"
echo "capacity: the highest rate with loss <= 0.1% and p99 <= $CAP_MAX_P99_US us, searched from $CAP_START pkt/s ±10% (x1.5 up, then bisected to 2%; a step holds if any of 3 runs holds), each step ${CAP_STEP_DURATION}s and 20000 packets at least"
echo "coturn $(turnserver --version 2>/dev/null | head -1), ip2p $($RELAY --version | cut -d' ' -f2)$([ -n "$BASELINE" ] && echo ", before: $BASELINE")"
for size in $SIZES; do
  for mode in $MODES; do
   for ROUND in $(seq 1 "$REPEATS"); do
    echo "== $mode, $size B, round $ROUND of $REPEATS"
    start_ip2p on; sleep 1
    grep -q "XDP fast path attached" "$OUT/ip2p-xdp-on.log" || { echo "the fast path did not attach:"; cat "$OUT/ip2p-xdp-on.log"; exit 1; }
    [ "$mode" = pairs ] && far_end_pass obj "$PASS_OBJ" sec xdp
    scenario ip2p-xdp "$mode" "$size"; stop_server
    [ "$mode" = pairs ] && far_end_pass off
    start_ip2p off; sleep 1; scenario ip2p "$mode" "$size"; stop_server
    if [ -n "$BASELINE" ]; then
      start_ip2p on "$BASELINE"; sleep 1
      [ "$mode" = pairs ] && far_end_pass obj "$PASS_OBJ" sec xdp
      bench before-xdp "$mode" "$size" "$RATE" latency; bench before-xdp "$mode" "$size" "$LOAD_RATE" load; stop_server
      [ "$mode" = pairs ] && far_end_pass off
      start_ip2p off "$BASELINE"; sleep 1
      bench before "$mode" "$size" "$RATE" latency; bench before "$mode" "$size" "$LOAD_RATE" load; stop_server
    fi
    start_coturn; sleep 1; scenario coturn "$mode" "$size"; stop_server
    scenario kernel "$mode" "$size"
   done
  done
done
echo
python3 bench/xdp_table.py "$OUT"
