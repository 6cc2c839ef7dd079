#!/usr/bin/env bash
# make bench-allocs: COUNT (default 100,000) concurrent allocations on one
# ip2p node, and what they cost it in user-space memory.
#
# A relay IP has about 64k ports, so half the allocations are IPv4
# (relayed on 127.0.0.1) and half IPv6 (on ::1), requested with
# REQUESTED-ADDRESS-FAMILY. The bench's client sockets are spread over
# four loopback addresses (127.0.0.2-5), each with its own ephemeral
# ports, and the relay listens on each. Root is needed to raise the fd
# limit (about 1.3 fds per allocation on each side). Tunables (env):
# COUNT, HOLD (s), WORKERS, CONCURRENCY.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-100000}
HOLD=${HOLD:-10}
[ "$HOLD" -ge 3 ] || HOLD=3 # time to look at the relay while they are held
WORKERS=${WORKERS:-2}
CONCURRENCY=${CONCURRENCY:-32}
OUT=${OUT:-target/bench-allocs}
mkdir -p "$OUT"

cargo build --release --locked -p ip2p-relay -p ip2p-bench
RELAY=target/release/ip2p-relay
BENCH=target/release/ip2p-bench

# The relay holds a socket per allocation, plus its listeners and rings.
FDS=$((COUNT + 2000))
ulimit -Hn "$FDS" 2>/dev/null || true
if ! ulimit -n "$FDS" 2>/dev/null; then
  # No CAP_SYS_RESOURCE (a container): as many as the hard limit allows.
  hard=$(ulimit -Hn)
  ulimit -n "$hard"
  COUNT=$(((hard - 2000) / 1000 * 1000))
  echo "the fd limit cannot be raised past $hard here: measuring $COUNT allocations" >&2
fi

free_port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

CLIENT_IPS=(127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5)
LISTEN=()
SERVERS=()
for ip in "${CLIENT_IPS[@]}"; do
  port=$(free_port "$ip")
  LISTEN+=(--listen "$ip:$port")
  SERVERS+=("$ip:$port")
done
"$RELAY" --config bench/relay-bench.toml --workers "$WORKERS" "${LISTEN[@]}" --relay-ip 127.0.0.1 --relay-ip ::1 --relay-ports 1024-65535 \
  --user demo:demo-password --realm ip2p --admin off >"$OUT/relay.log" 2>&1 &
RELAY_PID=$!
PIDS+=("$RELAY_PID")
sleep 1
kill -0 "$RELAY_PID" 2>/dev/null || { cat "$OUT/relay.log" >&2; exit 1; }
RSS0=$(rss_kib "$RELAY_PID")

# Half of the clients ask for IPv6 relayed addresses.
per=$((COUNT / ${#SERVERS[@]}))
BENCHES=()
for i in "${!SERVERS[@]}"; do
  family=(); [ $((i % 2)) = 1 ] && family=(--ipv6)
  "$BENCH" allocs --server "${SERVERS[$i]}" --count "$per" --concurrency "$CONCURRENCY" "${family[@]}" \
    --hold "$HOLD" --json "$OUT/allocs-$i.json" >"$OUT/bench-$i.log" 2>&1 &
  BENCHES+=($!)
  PIDS+=($!)
done

# Wait until every bench holds its allocations, then look at the relay.
deadline=$((SECONDS + 300))
while [ "$(grep -l holding "$OUT"/bench-*.log 2>/dev/null | wc -l)" -lt "${#SERVERS[@]}" ]; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "the benches did not finish allocating in 300 s" >&2; exit 1; }
  for i in "${!BENCHES[@]}"; do
    if ! kill -0 "${BENCHES[$i]}" 2>/dev/null && ! grep -q holding "$OUT/bench-$i.log"; then
      echo "bench $i ended early:" >&2; cat "$OUT/bench-$i.log" >&2; exit 1
    fi
  done
  sleep 0.5
done
RSS1=$(rss_kib "$RELAY_PID")
FDS_USED=$(find "/proc/$RELAY_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
CPU_TICKS=$(awk '{print $14+$15}' "/proc/$RELAY_PID/stat")
for b in "${BENCHES[@]}"; do wait "$b" || echo "a bench failed: see $OUT/bench-*.log" >&2; done

python3 - "$OUT" "$RSS0" "$RSS1" "$FDS_USED" "$CPU_TICKS" "$(getconf CLK_TCK)" "$WORKERS" <<'EOF'
import glob, json, sys
out, rss0, rss1, fds, ticks, hz, workers = sys.argv[1], *map(int, sys.argv[2:])
runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/allocs-*.json"))]
held = sum(r["succeeded"] for r in runs)
failures = {}
for r in runs:
    for k, v in r["failures"].items():
        failures[k] = failures.get(k, 0) + v
rate = sum(r["per_second"] for r in runs)
grown = rss1 - rss0
v6 = sum(r["relayed_ipv6"] for r in runs)
print(f"ip2p-relay, {workers} workers: {held} allocations held at once ({held - v6} IPv4, {v6} IPv6 relayed), "
      f"{sum(r['attempted'] for r in runs)} attempted, failures: {failures or 'none'}")
print(f"  setup: {rate:.0f} allocations/s over {len(runs)} concurrent benches; "
      f"relay CPU {ticks / hz:.2f} s in all ({1e6 * ticks / hz / max(held, 1):.0f} us per allocation)")
print(f"  relay RSS: {rss0} KiB idle, {rss1} KiB holding them: {grown * 1024 / max(held, 1):.0f} bytes per allocation")
print(f"  relay fds: {fds}")
EOF
