#!/usr/bin/env python3
"""bench-fleet's summary: allocations a second and Allocate latency with
the fleet off and on (medians of the runs, each run shown), and the time
from each revocation to the last of its sessions ending on another node,
from the nodes' log timestamps."""
import glob
import json
import re
import statistics
import sys
from datetime import datetime

out, reps, count, concurrency, hold, latency = sys.argv[1], *map(int, sys.argv[2:])


def run(mode, rep):
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/allocs-{mode}-{rep}-n*.json"))]
    return {
        "rate": sum(r["per_second"] for r in runs),
        "p50": statistics.median(r["latency_p50_us"] for r in runs),
        "p99": max(r["latency_p99_us"] for r in runs),
        "failed": sum(sum(r["failures"].values()) for r in runs),
    }


rows = {mode: [run(mode, rep) for rep in range(1, reps + 1)] for mode in ("off", "on")}
print(f"bench-fleet: 3 nodes (1 worker each), redis-server on loopback; {count} allocations per node per run,")
print(f"{concurrency} at a time per node, all three nodes at once; {reps} runs each, alternating off and on.")
print()
print(f"{'fleet':<6} {'allocations/s (3 nodes)':>24} {'Allocate p50 us':>16} {'p99 us':>8} {'failed':>7}   runs (rate, p50, p99)")
med = {}
for mode, rs in rows.items():
    med[mode] = {k: statistics.median(r[k] for r in rs) for k in ("rate", "p50", "p99")}
    failed = sum(r["failed"] for r in rs)
    each = "; ".join(f"{r['rate']:.0f}, {r['p50']:.0f}, {r['p99']:.0f}" for r in rs)
    print(f"{mode:<6} {med[mode]['rate']:>24.0f} {med[mode]['p50']:>16.0f} {med[mode]['p99']:>8.0f} {failed:>7}   {each}")
print()
print(f"under that load the fleet adds {med['on']['p50'] - med['off']['p50']:.0f} us at p50 to an Allocate; "
      f"allocations/s on/off: {med['on']['rate'] / med['off']['rate']:.2f}")
print()
print(f"one at a time ({latency} Allocates on n1, the others idle): the Allocate exchange in us")
print(f"{'fleet':<6} {'p50':>8} {'p99':>8} {'max':>8}   runs (p50, p99)")
lat = {}
for mode in ("off", "on"):
    rs = [json.load(open(f"{out}/latency-{mode}-{rep}.json")) for rep in range(1, reps + 1)]
    lat[mode] = {k: statistics.median(r[f"latency_{k}_us"] for r in rs) for k in ("p50", "p99", "max")}
    each = "; ".join(f"{r['latency_p50_us']}, {r['latency_p99_us']}" for r in rs)
    print(f"{mode:<6} {lat[mode]['p50']:>8.0f} {lat[mode]['p99']:>8.0f} {lat[mode]['max']:>8.0f}   {each}")
print(f"the fleet adds {lat['on']['p50'] - lat['off']['p50']:.0f} us at p50 and {lat['on']['p99'] - lat['off']['p99']:.0f} us at p99")

# Revocations: n1's API line, and each node's "revoked in the fleet" line.
stamp = re.compile(r"^(\S+Z)\s")


def when(line):
    return datetime.fromisoformat(stamp.match(line).group(1).replace("Z", "+00:00"))


def lines(node, needle):
    return [l for l in open(f"{out}/{node}-on.log") if needle in l and stamp.match(l)]


asked = [when(l) for l in lines("n1", "user revoked") if "in the fleet" not in l][-reps:]
ended = {n: [when(l) for l in lines(n, "user revoked in the fleet") if "ended=Some(0)" not in l][-reps:] for n in ("n2", "n3")}
times = []
for i, t0 in enumerate(asked):
    last = max(ended[n][i] for n in ended if i < len(ended[n]))
    times.append((last - t0).total_seconds() * 1000)
if times:
    print(f"a revocation on n1 to the last of {2 * hold} sessions on n2 and n3 ending: median {statistics.median(times):.1f} ms "
          f"(runs: {', '.join(f'{t:.1f}' for t in times)} ms)")
