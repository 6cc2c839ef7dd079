#!/usr/bin/env bash
# make bench-fleet: three ip2p nodes on this machine and a redis-server of
# the bench's own on a loopback port. Measures, in one run:
# - allocations a second and Allocate latency (p50, p99; the 401 challenge
#   and the authenticated Allocate, as a client sees them) with the fleet
#   off and on: the same binary and settings, with and without [fleet]
#   (fleet-wide quotas on, so every Allocate asks the store), alternating
#   off and on REPS times; medians, with each run's figures;
# - the time from a revocation on one node to the last of the user's
#   sessions ending on the other two (from the nodes' own log timestamps).
# Tunables (env): COUNT allocations per node per run (3000), CONCURRENCY
# per node (16), LATENCY allocations one at a time on one node for the
# latency without queueing (1000), REPS (3), HOLD sessions per node for the
# revocation (50).
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-3000}
CONCURRENCY=${CONCURRENCY:-16}
REPS=${REPS:-3}
HOLD=${HOLD:-50}
LATENCY=${LATENCY:-1000}
OUT=${OUT:-target/bench-fleet}
rm -rf "$OUT"
mkdir -p "$OUT"

command -v redis-server >/dev/null || tests/deps.sh
cargo build --release --locked -p ip2p-relay -p ip2p-bench
RELAY=target/release/ip2p-relay
BENCH=target/release/ip2p-bench
SECRET=bench-fleet-secret-0123456789

# A loopback port free for $1 (SOCK_STREAM), or for both UDP and TCP
# (SOCK_DGRAM: a relay's listen port serves both).
free_port() {
  python3 - "$1" <<'PY'
import socket, sys
for _ in range(100):
    s = socket.socket(socket.AF_INET, getattr(socket, sys.argv[1]))
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    if sys.argv[1] == "SOCK_DGRAM":
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
        except OSError:
            continue
        t.close()
    print(port)
    break
PY
}

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

REDIS_PORT=$(free_port SOCK_STREAM)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$OUT" >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" ping >/dev/null

NODES=(n1 n2 n3)
declare -A ADDR ADMIN PID

# start_nodes on|off: the three nodes, in a fleet or alone.
start_nodes() {
  for n in "${NODES[@]}"; do
    local port admin
    port=$(free_port SOCK_DGRAM)
    admin=$(free_port SOCK_STREAM)
    {
      printf 'listen = ["127.0.0.1:%s"]\nrealm = "ip2p"\nworkers = 1\n' "$port"
      printf '[auth]\nsecrets = ["%s"]\nunauthenticated_rate = 0\n[allocation]\nuser_quota = 1000000\nip_quota = 0\n' "$SECRET"
      printf '[relay]\nips = ["127.0.0.1"]\nports = "20000-60000"\n[admin]\nlisten = "127.0.0.1:%s"\n' "$admin"
      printf '[drain]\ntimeout = 0\n[log]\nlevel = "info"\n'
      if [ "$1" = on ]; then
        printf '[fleet]\nredis = "redis://127.0.0.1:%s"\nnode = "%s"\nregion = "bench"\nusage_stream = 0\n' "$REDIS_PORT" "$n"
      fi
    } >"$OUT/$n.toml"
    "$RELAY" --config "$OUT/$n.toml" >>"$OUT/$n-$1.log" 2>&1 &
    PID[$n]=$!
    PIDS+=("${PID[$n]}")
    ADDR[$n]="127.0.0.1:$port"
    ADMIN[$n]="127.0.0.1:$admin"
  done
  for n in "${NODES[@]}"; do
    for _ in $(seq 100); do curl -sf "http://${ADMIN[$n]}/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -sf "http://${ADMIN[$n]}/readyz" >/dev/null || { cat "$OUT/$n-$1.log" >&2; exit 1; }
  done
  if [ "$1" = on ]; then
    for _ in $(seq 50); do
      [ "$(curl -s "http://${ADMIN[n1]}/api/v1/fleet" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["nodes"]))')" = 3 ] && break
      sleep 0.1
    done
  fi
}

stop_nodes() {
  for n in "${NODES[@]}"; do kill "${PID[$n]}" 2>/dev/null || true; done
  for n in "${NODES[@]}"; do wait "${PID[$n]}" 2>/dev/null || true; done
  redis-cli -p "$REDIS_PORT" flushall >/dev/null
}

# allocs LABEL: COUNT allocations on each node at once.
allocs() {
  local benches=()
  for n in "${NODES[@]}"; do
    "$BENCH" allocs --server "${ADDR[$n]}" --auth-secret "$SECRET" --count "$COUNT" --concurrency "$CONCURRENCY" \
      --json "$OUT/allocs-$1-$n.json" >"$OUT/allocs-$1-$n.log" 2>&1 &
    benches+=($!)
  done
  for b in "${benches[@]}"; do wait "$b"; done
}

for rep in $(seq "$REPS"); do
  for mode in off on; do
    start_nodes "$mode"
    allocs "$mode-$rep"
    # One at a time: what an Allocate costs without queueing behind others.
    "$BENCH" allocs --server "${ADDR[n1]}" --auth-secret "$SECRET" --count "$LATENCY" --concurrency 1 \
      --json "$OUT/latency-$mode-$rep.json" >"$OUT/latency-$mode-$rep.log" 2>&1
    stop_nodes
  done
done

# The revocation: HOLD sessions of one user on each node, revoked on n1.
start_nodes on
for rep in $(seq "$REPS"); do
  holders=()
  for n in "${NODES[@]}"; do
    "$BENCH" allocs --server "${ADDR[$n]}" --auth-secret "$SECRET" --count "$HOLD" --concurrency 8 --hold 20 \
      >"$OUT/hold-$rep-$n.log" 2>&1 &
    holders+=($!)
  done
  for n in "${NODES[@]}"; do
    for _ in $(seq 100); do grep -q holding "$OUT/hold-$rep-$n.log" && break; sleep 0.1; done
  done
  curl -sf -X POST "http://${ADMIN[n1]}/api/v1/revocations" -d '{"user": "ip2p-bench"}' -H 'Content-Type: application/json' \
    >"$OUT/revoke-$rep.json"
  sleep 1
  curl -sf -X DELETE "http://${ADMIN[n1]}/api/v1/revocations/ip2p-bench" >/dev/null
  for h in "${holders[@]}"; do wait "$h" || true; done
done
stop_nodes

python3 bench/fleet_table.py "$OUT" "$REPS" "$COUNT" "$CONCURRENCY" "$HOLD" "$LATENCY" | tee "$OUT/summary.txt"
