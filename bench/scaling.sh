#!/usr/bin/env bash
# make bench-scaling: ip2p-relay with 1 worker, then 2, under the same
# fixed-rate load (pairs and echo, many 5-tuples): server CPU per packet,
# how the work splits between workers (their CPU from /status), how many
# pair packets took the short-circuit (across workers, through an inbox),
# and capacity. Tunables (env): RATE, SESSIONS, DURATION, SIZE, MODES.
#
# On a 2-core machine the bench needs a core too, so 2 workers share a CPU
# with it: capacity there is the bench's; CPU per packet and the split are
# the figures that carry to a machine with cores to spare.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-20000}
SESSIONS=${SESSIONS:-40}
DURATION=${DURATION:-5}
SIZE=${SIZE:-100}
MODES=${MODES:-"pairs echo"}
OUT=${OUT:-target/bench-scaling}
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/errors.log

cargo build --release --locked -p ip2p-relay -p ip2p-bench
RELAY=target/release/ip2p-relay
BENCH=target/release/ip2p-bench
LAST_CPU=$(($(nproc) - 1))

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
status() { python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(f"http://{sys.argv[1]}/" + sys.argv[2]).read().decode())' "$ADMIN" "$1"; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "ip2p-bench scaling: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, kernel $(uname -r); $SESSIONS sessions at $RATE pkt/s, $SIZE B, ${DURATION}s"
echo "1 worker pinned to CPU $LAST_CPU; 2 workers on CPUs 0-$LAST_CPU; the bench unpinned"
printf '%-6s %-9s %11s %14s %16s %15s\n' mode workers "cpu us/pkt" "worker split" "short-circuited" "capacity pkt/s"
# Pairs on two workers run once more without the short-circuit: the
# packets between workers then cross the kernel.
{ cat bench/relay-bench.toml; printf '[relay]\nshort_circuit = false\n'; } >"$OUT/no-short-circuit.toml"
for mode in $MODES; do
  runs="1 2"; [ "$mode" = pairs ] && runs="1 2 2-off"
  for run in $runs; do
    workers=${run%-off}
    config=(--config bench/relay-bench.toml); [ "$run" = 2-off ] && config=(--config "$OUT/no-short-circuit.toml")
    cpus=$LAST_CPU; [ "$workers" = 2 ] && cpus=0-$LAST_CPU
    port=$(free_port); ADMIN=127.0.0.1:$(free_port)
    taskset -c "$cpus" "$RELAY" "${config[@]}" --workers "$workers" --listen "127.0.0.1:$port" --user demo:demo-password \
      --realm ip2p --admin "$ADMIN" >"$OUT/relay.log" 2>&1 &
    pid=$!; PIDS+=("$pid"); sleep 1
    before=$(status status); c0=$(cpu_ticks "$pid")
    json="$OUT/latency-$mode-$run.json"
    "$BENCH" latency --server "127.0.0.1:$port" --mode "$mode" --size "$SIZE" --rate "$RATE" \
      --sessions "$SESSIONS" --duration "$DURATION" --json "$json" >/dev/null 2>>"$OUT/errors.log" || echo "latency run failed"
    c1=$(cpu_ticks "$pid"); after=$(status status); metrics=$(status metrics)
    cap=$("$BENCH" capacity --server "127.0.0.1:$port" --mode "$mode" --size "$SIZE" --rate "$RATE" \
      --sessions "$SESSIONS" --duration 2 --warmup 0.5 --max-p99-us 5000 2>>"$OUT/errors.log") || cap="failed"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 - "$json" "$((c1 - c0))" "$(getconf CLK_TCK)" "$before" "$after" "$metrics" "$mode" "$run" "$cap" <<'EOF'
import json, re, sys
path, ticks, hz, before, after, metrics, mode, workers, cap = sys.argv[1:]
run = json.load(open(path))
delivered = max(run["received"], 1)
cpu = 1e6 * int(ticks) / int(hz) / delivered
w0 = {w["worker"]: w["cpu_seconds"] for w in json.loads(before)["per_worker"]}
w1 = {w["worker"]: w["cpu_seconds"] for w in json.loads(after)["per_worker"]}
used = [w1[k] - w0.get(k, 0) for k in sorted(w1)]
split = "/".join(f"{100 * u / max(sum(used), 1e-9):.0f}" for u in used) + " %"
def metric(name):
    m = re.search(rf"^{name} (\d+)", metrics, re.M)
    return int(m.group(1)) if m else 0
relayed = metric('ip2p_relayed_packets_total\\{direction="to_peer",path="socket"\\}')
short = metric("ip2p_short_circuit_packets_total")
share = f"{100 * short / relayed:.0f}% of {relayed}" if mode == "pairs" and relayed else "-"
m = re.search(r"(\d+) pkt/s received", cap)
bench = "fell behind" in cap
capacity = (m.group(1) + (" (bench)" if bench else "")) if m else ("bench-bound" if bench else "failed")
workers = workers.replace("-off", " sc off")
print(f"{mode:<6} {workers:<9} {cpu:>11.2f} {split:>14} {share:>16} {capacity:>15}")
EOF
  done
done
echo "bench-bound: the bench, sharing both CPUs with the workers, fell behind its own schedule at the first rate"
echo "cpu us/pkt: relay CPU (all threads, /proc) per packet delivered at the fixed rate; worker split: each worker's share of the workers' CPU (from /status)"
