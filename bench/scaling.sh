#!/usr/bin/env bash
# make bench-scaling: ip2p-relay with 1 worker, 2, and where the machine has
# the cores 4 and 8, each at fixed rates per worker (the same load per
# worker, many 5-tuples): server CPU per packet, how the work splits between
# workers (their CPU from /status), how many pair packets took the
# short-circuit and how many of those crossed workers (and of them, how
# many went through the owner's inbox), and capacity. Tunables (env):
# WORKERS, RATES (pkt/s per worker), SESSIONS, DURATION, SIZE, BURST
# (packets a session sends at once, as a video frame), MODES, RELAY
# (another build to measure), RELAY_TOML (top-level keys for the relay, as
# "busy_poll_us = 20"), and TOPOLOGY ("loopback", or "veth": the
# bench and the relay in network namespaces joined by a veth pair, where
# receive work is charged as with a real NIC; root), REPEATS (rounds: the
# table shows each figure's median and range) and RERUNS (more runs of a
# fixed-rate run the generator could not keep on schedule, before it is
# left out with the reason printed; none where the bench shares the
# workers' CPUs, where no run can keep it: the table then shows the runs'
# figures marked "(behind)" and leaves them out of the ratios).
#
# Workers are pinned to the last CPUs, the bench to the first, apart when
# there are enough cores (workers + 1); on a 2-core machine 2 workers share
# the CPUs with the bench: capacity there is the bench's, while CPU per
# packet and the split carry to a machine with cores to spare.
set -euo pipefail
cd "$(dirname "$0")/.."

CPUS=$(nproc)
default_workers="1 2"
[ "$CPUS" -ge 5 ] && default_workers="$default_workers 4"
[ "$CPUS" -ge 9 ] && default_workers="$default_workers 8"
WORKERS=${WORKERS:-$default_workers}
RATES=${RATES:-"5000 20000 40000 100000"}
SESSIONS=${SESSIONS:-40}
DURATION=${DURATION:-5}
SIZE=${SIZE:-100}
BURST=${BURST:-1}
MODES=${MODES:-"pairs echo"}
TOPOLOGY=${TOPOLOGY:-loopback}
REPEATS=${REPEATS:-3}
RERUNS=${RERUNS:-2}
OUT=${OUT:-target/bench-scaling$([ "$TOPOLOGY" = veth ] && echo -veth || true)}
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/errors.log

cargo build --release --locked -p ip2p-relay -p ip2p-bench
RELAY=${RELAY:-$PWD/target/release/ip2p-relay}
BENCH=$PWD/target/release/ip2p-bench

PIDS=()
NS=ip2p-bs-$$
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  topology_down
}
trap cleanup EXIT
source bench/topology.sh
admin() { "${IN_R[@]}" python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(f"http://{sys.argv[1]}/" + sys.argv[2]).read().decode())' "$ADMIN" "$1"; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# CPUs for n workers and for the bench: apart when the machine has room.
worker_cpus() { local n=$1; if [ "$CPUS" -gt "$n" ]; then echo "$((CPUS - n))-$((CPUS - 1))"; else echo "0-$((CPUS - 1))"; fi; }
bench_cpus() { local n=$1; if [ "$CPUS" -gt "$n" ]; then echo "0-$((CPUS - n - 1))"; else echo "0-$((CPUS - 1))"; fi; }
echo_at=(); [ "$TOPOLOGY" = veth ] && echo_at=(--echo-at "$PEER_IP:0")

echo "ip2p-bench scaling: $(date -u +%Y-%m-%dT%H:%MZ), $CPUS CPUs, kernel $(uname -r); topology $TOPOLOGY; $SESSIONS sessions, $SIZE B in bursts of $BURST, ${DURATION}s per rate${RELAY_TOML:+; relay: $RELAY_TOML}"
echo "workers on the last CPUs, the bench on the first (shared when there are not workers + 1 CPUs)"
# Pairs on several workers also run without the short-circuit: the
# packets between workers then cross the kernel.
{ printf '%b\n' "${RELAY_TOML:-}"; cat bench/relay-bench.toml; } >"$OUT/relay.toml"
{ cat "$OUT/relay.toml"; printf '[relay]\nshort_circuit = false\n'; } >"$OUT/no-short-circuit.toml"
rm -f "$OUT/rows.jsonl"
for mode in $MODES; do
  for workers in $WORKERS; do
    runs="on"; [ "$mode" = pairs ] && [ "$workers" -gt 1 ] && runs="on off"
    for sc in $runs; do
     for ROUND in $(seq 1 "$REPEATS"); do
      config=(--config "$OUT/relay.toml"); [ "$sc" = off ] && config=(--config "$OUT/no-short-circuit.toml")
      port=$(free_port "${IN_R[@]}"); ADMIN=127.0.0.1:$(free_port "${IN_R[@]}")
      "${IN_R[@]}" taskset -c "$(worker_cpus "$workers")" "$RELAY" "${config[@]}" --workers "$workers" \
        --listen "$SERVER_IP:$port" --allow-peer "$PEER_IP/32" --user demo:demo-password --realm ip2p --admin "$ADMIN" \
        >"$OUT/relay.log" 2>&1 &
      pid=$!; PIDS+=("$pid"); sleep 1
      label=$workers; [ "$sc" = off ] && label="$workers sc off"
      echo "== $mode, $label workers, round $ROUND of $REPEATS"
      for rate in $RATES; do
        total=$((rate * workers))
        json="$OUT/latency-$mode-$workers-$sc-$rate.r$ROUND.json"
        # A run the generator could not keep on schedule goes again, unless
        # the bench shares the workers' CPUs: then none can.
        reruns=$RERUNS; [ "$CPUS" -gt "$workers" ] || reruns=0
        for try in $(seq 0 "$reruns"); do
          before=$(admin status); c0=$(cpu_ticks "$pid"); m0=$(admin metrics)
          "${IN_B[@]}" taskset -c "$(bench_cpus "$workers")" "$BENCH" latency --server "$SERVER_IP:$port" --mode "$mode" \
            "${echo_at[@]}" --size "$SIZE" --burst "$BURST" --rate "$total" --sessions "$SESSIONS" --duration "$DURATION" --json "$json" \
            >/dev/null 2>>"$OUT/errors.log" || echo "latency run failed ($mode, $label, $rate)"
          c1=$(cpu_ticks "$pid"); after=$(admin status); m1=$(admin metrics)
          if grep -q '"valid": true' "$json" 2>/dev/null; then break; fi
          if [ "$try" -lt "$reruns" ]; then echo "  ($rate pkt/s per worker: the generator fell behind its schedule: running it again)"; fi
        done
        cap=""
        if [ "$rate" = "${RATES##* }" ]; then
          cap=$("${IN_B[@]}" taskset -c "$(bench_cpus "$workers")" "$BENCH" capacity --server "$SERVER_IP:$port" --mode "$mode" \
            "${echo_at[@]}" --size "$SIZE" --burst "$BURST" --rate "$((20000 * workers))" --sessions "$SESSIONS" --duration 2 --warmup 0.5 \
            --max-p99-us 5000 2>>"$OUT/errors.log" | tail -n 1) || cap="capacity: none (the search failed: see $OUT/errors.log)"
          echo "  $cap"
        fi
        python3 bench/scaling_row.py "$json" "$((c1 - c0))" "$(getconf CLK_TCK)" "$before" "$after" "$m0" "$m1" \
          "$mode" "$label" "$rate" "$cap" >>"$OUT/rows.jsonl"
      done
      kill "$pid"; wait "$pid" 2>/dev/null || true
     done
    done
  done
done
echo
python3 bench/scaling_table.py "$OUT/rows.jsonl"
