#!/usr/bin/env bash
# The relay built without the XDP program (as on a machine without clang,
# forced here with IP2P_XDP=off) still builds and relays: `xdp = "auto"`
# starts with the fast path off and says why, `xdp = "on"` refuses to
# start with a clear error. `make test-no-xdp`; CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
IP2P_XDP=off cargo build --locked -q -p ip2p-relay --bin ip2p-relay --target-dir target/no-xdp
bin=target/no-xdp/debug/ip2p-relay
log=$(mktemp)
trap 'rm -f "$log"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true' EXIT

"$bin" --listen 127.0.0.1:0 --user alice:wonderland-password --admin off --xdp auto >"$log" 2>&1 &
pid=$!
for _ in $(seq 50); do grep -q "ip2p-relay started" "$log" && break; sleep 0.1; done
grep -q "ip2p-relay started" "$log" || { cat "$log"; echo "FAIL: xdp = auto without the program did not start"; exit 1; }
grep -q "XDP fast path off.*built without the XDP program" "$log" \
  || { cat "$log"; echo "FAIL: xdp = auto did not say why the fast path is off"; exit 1; }
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=

if "$bin" --listen 127.0.0.1:0 --user alice:wonderland-password --admin off --xdp on >"$log" 2>&1; then
  cat "$log"; echo "FAIL: xdp = on started without the program"; exit 1
fi
grep -q "xdp = on, but the fast path cannot load: .*built without the XDP program" "$log" \
  || { cat "$log"; echo "FAIL: xdp = on did not say why it refused"; exit 1; }
echo "ok: without the XDP program the relay runs (auto) and refuses xdp = on"
