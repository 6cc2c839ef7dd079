#!/usr/bin/env bash
# make bench-compare: ip2p-relay, coturn and the direct path measured in one
# run with ip2p-bench (echo also through a bare UDP forwarder, the kernel's
# cost of the same path), and one table of the results with their ratios.
#
# Servers get one worker / one relay thread (then each its defaults), pinned
# to SERVER_CPU; the bench is pinned to BENCH_CPU. Tunables (env):
# RATE (latency runs, pkt/s), LOAD_RATE (a second CPU measurement, pkt/s),
# DURATION (s), CAP_START, CAP_STEP_DURATION (s), SIZES, MODES, BASELINE
# (another ip2p-relay binary, an earlier build, measured in the same run
# beside this one as "before": latency and CPU per packet), and
# TOPOLOGY: "loopback" (default: everything on this host's loopback, where
# a sender pays for its receiver's softirq work) or "veth" (root: the bench
# and the servers in network namespaces of the script's own, joined by a
# veth pair, so receive work is charged as a real NIC's is), REPEATS
# (rounds of every scenario, servers in turn within a round: the table
# shows each figure's median and range) and RERUNS (more runs of a
# fixed-rate run the generator could not keep on schedule, before it is
# left out with the reason printed).
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-20000}
# Under more load a relay sleeps less per packet: CPU per packet is
# measured again at this rate, below the capacity of either relay.
LOAD_RATE=${LOAD_RATE:-40000}
DURATION=${DURATION:-5}
CAP_START=${CAP_START:-20000}
CAP_STEP_DURATION=${CAP_STEP_DURATION:-2}
# Capacity: the highest rate with loss <= 0.1% and p99 under this bound (us).
# This VM shows millisecond p99.9 tails at any rate, through either relay:
# a 1 ms p99 bound would measure the VM.
CAP_MAX_P99_US=${CAP_MAX_P99_US:-5000}
SIZES=${SIZES:-"100 1200"}
MODES=${MODES:-"pairs echo"}
SESSIONS=${SESSIONS:-20}
TOPOLOGY=${TOPOLOGY:-loopback}
BASELINE=${BASELINE:-}
REPEATS=${REPEATS:-3}
RERUNS=${RERUNS:-2}
OUT=${OUT:-target/bench-compare$([ "$TOPOLOGY" = veth ] && echo -veth || true)}
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.cpu "$OUT"/*.hgrm "$OUT"/*.svg "$OUT"/errors.log

if ! command -v turnserver >/dev/null; then
  # A fresh machine: install coturn as .ci/run does (root and apt only).
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing coturn (apt-get install coturn)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn >/dev/null
  fi
  command -v turnserver >/dev/null || { echo "coturn is not installed: apt-get install coturn" >&2; exit 1; }
fi
cargo build --release --locked -p ip2p-relay -p ip2p-bench
RELAY=target/release/ip2p-relay
BENCH=target/release/ip2p-bench

if [ "$(nproc)" -ge 2 ]; then SERVER_CPU=${SERVER_CPU:-1}; BENCH_CPU=${BENCH_CPU:-0}; else SERVER_CPU=0; BENCH_CPU=0; fi
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

PIDS=()
NS=ip2p-bc-$$
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  topology_down
}
trap cleanup EXIT
source bench/topology.sh

start_ip2p() { # workers [binary]
  local port; port=$(free_port "${IN_R[@]}")
  "${IN_R[@]}" taskset -c "$SERVER_CPU" "${2:-$RELAY}" --config bench/relay-bench.toml --workers "$1" --listen "$SERVER_IP:$port" \
    --allow-peer "$PEER_IP/32" --user demo:demo-password --realm ip2p --admin off >"$OUT/ip2p.log" 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID"); SERVER_PORT=$port
}
start_coturn() { # relay threads ("" for the default)
  local port; port=$(free_port "${IN_R[@]}")
  local threads=(); [ -n "$1" ] && threads=(--relay-threads="$1")
  "${IN_R[@]}" taskset -c "$SERVER_CPU" turnserver -n --listening-ip="$SERVER_IP" --listening-port="$port" --relay-ip="$SERVER_IP" \
    -a --user=demo:demo-password --realm=ip2p "${threads[@]}" --allow-loopback-peers --no-cli --no-tls --no-dtls \
    --log-file="$OUT/coturn.log" --simple-log >/dev/null 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID"); SERVER_PORT=$port
}
# The bare forwarder (echo only): no protocol, recvmmsg/sendmmsg, a socket
# per client towards the bench's echo, which listens at ECHO_PORT.
start_forwarder() {
  local port; port=$(free_port "${IN_R[@]}"); ECHO_PORT=$(free_port "${IN_B[@]}")
  local echo_ip=127.0.0.1; [ "$TOPOLOGY" = veth ] && echo_ip=$PEER_IP
  ECHO_IP=$echo_ip
  "${IN_R[@]}" taskset -c "$SERVER_CPU" "$BENCH" forward --listen "$SERVER_IP:$port" --to "$ECHO_IP:$ECHO_PORT" \
    >"$OUT/forwarder.log" 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID"); SERVER_PORT=$port
}
stop_server() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
wait_ready() { sleep 1; }

# A failed run (its stderr in $OUT/errors.log) is reported, not fatal: the
# other scenarios still run.
bench() {
  "${IN_B[@]}" taskset -c "$BENCH_CPU" "$BENCH" "$@" 2>>"$OUT/errors.log" || echo "FAILED: ip2p-bench $1 (see $OUT/errors.log)"
}

# via <name> <mode>: the bench's --mode (and --echo-at) for a server.
via() {
  case "$1" in
    direct) [ "$2" = pairs ] && echo "--mode direct" || echo "--mode direct-echo" ;;
    forwarder) echo "--mode forwarded-echo --echo-at $ECHO_IP:$ECHO_PORT" ;;
    *) if [ "$2" = echo ] && [ "$TOPOLOGY" = veth ]; then echo "--mode echo --echo-at $PEER_IP:0"; else echo "--mode $2"; fi ;;
  esac
}

# fixed <run> <name> <mode> <size> <engine> <rate> [more bench args]: one
# fixed-rate run of round ROUND (<run>-<name>-<mode>-<size>.r<ROUND>.json),
# with the server's CPU; run again, up to RERUNS more times, while the
# generator could not keep its schedule (the run is then not valid).
fixed() {
  local run=$1 name=$2 mode=$3 size=$4 engine=$5 rate=$6 try c0 c1; shift 6
  local stem=$OUT/$run-$name-$mode-$size.r$ROUND server=()
  [ "$name" = direct ] || server=(--server "$SERVER_IP:$SERVER_PORT")
  for try in $(seq 0 "$RERUNS"); do
    c0=$([ "$name" = direct ] && echo 0 || cpu_ticks "$SERVER_PID")
    bench latency --engine "$engine" "${server[@]}" $(via "$name" "$mode") --size "$size" --rate "$rate" \
      --sessions "$SESSIONS" --duration "$DURATION" --label "$name $mode ${size}B at $rate #$ROUND" --json "$stem.json" "$@" | sed -n 2p
    c1=$([ "$name" = direct ] && echo 0 || cpu_ticks "$SERVER_PID")
    echo "$(( c1 - c0 )) $(getconf CLK_TCK)" >"$stem.cpu"
    if grep -q '"valid": true' "$stem.json" 2>/dev/null; then return 0; fi
    if [ "$try" -lt "$RERUNS" ]; then echo "  (the generator fell behind its schedule: running it again)"; fi
  done
}

# latency <name> <mode> <size>: the fixed-rate latency run (epoll engine).
latency() {
  fixed latency "$1" "$2" "$3" epoll "$RATE" --hgrm "$OUT/$2-$3-$1.r$ROUND.hgrm"
}

# load <name> <mode> <size>: server CPU per packet at LOAD_RATE.
load() {
  fixed load "$1" "$2" "$3" io-uring "$LOAD_RATE"
}

capacity() {
  local name=$1 mode=$2 size=$3 server=$SERVER_IP:${SERVER_PORT:-0}
  bench capacity --engine io-uring --server "$server" $(via "$name" "$mode") --size "$size" --rate "$CAP_START" \
    --sessions "$SESSIONS" --duration "$CAP_STEP_DURATION" --warmup 0.5 --label "$name" --max-p99-us "$CAP_MAX_P99_US" \
    --json "$OUT/capacity-$name-$mode-$size.r$ROUND.json" | tail -n 1
}

echo "ip2p-bench compare: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r)"
echo "topology: $TOPOLOGY$([ "$TOPOLOGY" = veth ] && echo " (bench and servers in network namespaces joined by a veth pair)"); servers pinned to CPU $SERVER_CPU, bench to CPU $BENCH_CPU; latency runs at $RATE pkt/s, $SESSIONS sessions, ${DURATION}s (epoll engine)"
echo "capacity: highest rate with loss <= 0.1% and p99 <= $CAP_MAX_P99_US us, searched from $CAP_START pkt/s ±10% (x1.5 up, then bisected to 2%; a step holds if any of 3 runs holds), each step ${CAP_STEP_DURATION}s and 20000 packets at least (io_uring engine); $REPEATS rounds"
echo "coturn $(turnserver --version 2>/dev/null | head -1), ip2p $($RELAY --version | cut -d' ' -f2)$([ -n "$BASELINE" ] && echo ", before: $BASELINE")"
for size in $SIZES; do
  for mode in $MODES; do
   for ROUND in $(seq 1 "$REPEATS"); do
    echo "== $mode, $size B, round $ROUND of $REPEATS"
    start_ip2p 1; wait_ready
    latency ip2p "$mode" "$size"
    load ip2p "$mode" "$size"
    capacity ip2p "$mode" "$size"
    stop_server
    if [ -n "$BASELINE" ]; then
      start_ip2p 1 "$BASELINE"; wait_ready
      latency before "$mode" "$size"
      load before "$mode" "$size"
      stop_server
    fi
    start_coturn 1; wait_ready
    latency coturn "$mode" "$size"
    load coturn "$mode" "$size"
    capacity coturn "$mode" "$size"
    stop_server
    if [ "$mode" = echo ]; then
      start_forwarder; wait_ready
      latency forwarder "$mode" "$size"
      load forwarder "$mode" "$size"
      capacity forwarder "$mode" "$size"
      stop_server
    fi
    latency direct "$mode" "$size"
    capacity direct "$mode" "$size"
   done
    # The first round's percentiles, each server's, in one plot.
    plots=(); for n in ip2p coturn forwarder direct; do
      [ -f "$OUT/$mode-$size-$n.r1.hgrm" ] && { cp "$OUT/$mode-$size-$n.r1.hgrm" "$OUT/$n.hgrm"; plots+=("$OUT/$n.hgrm"); }
    done
    "$BENCH" plot --title "$mode, $size B payloads, $RATE pkt/s" --out "$OUT/latency-$mode-$size.svg" "${plots[@]}"
  done
done
echo "== defaults (ip2p: one worker per CPU, coturn: its default relay threads), pairs, 100 B"
SERVER_CPU=$(seq -s, 0 $(( $(nproc) - 1 )))
for ROUND in $(seq 1 "$REPEATS"); do
  start_ip2p 0; wait_ready; latency ip2p-default pairs 100; stop_server
  start_coturn ""; wait_ready; latency coturn-default pairs 100; stop_server
done
echo
python3 bench/compare_table.py "$OUT" "$LOAD_RATE"
echo "latency plots: $OUT/latency-*.svg"
