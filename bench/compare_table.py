#!/usr/bin/env python3
"""Builds make bench-compare's table from the JSON summaries ip2p-bench wrote."""
import glob, json, os, sys

out = sys.argv[1]
max_p99 = float(sys.argv[2]) if len(sys.argv) > 2 else 1000.0

def load(path):
    with open(path) as f:
        return json.load(f)

def cpu_per_hop(name, mode, size, received):
    path = os.path.join(out, f"latency-{name}-{mode}-{size}.cpu")
    if not os.path.exists(path) or not received:
        return None
    ticks, hz = map(float, open(path).read().split())
    # Each packet crosses the relay twice in both topologies.
    return ticks / hz * 1e6 / (2 * received)

def capacity(name, mode, size):
    path = os.path.join(out, f"capacity-{name}-{mode}-{size}.json")
    if not os.path.exists(path):
        return None, None
    steps = load(path)
    passing = [s for s in steps if s["valid"] and s["loss_percent"] <= 0.1 and s["latency_us"]["p99"] <= max_p99]
    best = max((s["packets_per_second"] for s in passing), default=None)
    limited_by_bench = bool(steps) and not steps[-1]["valid"]
    return best, limited_by_bench

def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"

rows = []
print(f"{'scenario':<16} {'server':<8} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'loss %':>7} "
      f"{'cpu us/hop':>10} {'added p50':>9} {'capacity pkt/s':>15}")
for path in sorted(glob.glob(os.path.join(out, "latency-*-*.json"))):
    _, name, mode, size = os.path.basename(path)[:-5].split("-", 3) if path.count("-default") == 0 else (None, None, None, None)
    if name is None:
        continue
    s = load(path)
    l = s["latency_us"]
    direct = os.path.join(out, f"latency-direct-{mode}-{size}.json")
    direct_p50 = load(direct)["latency_us"]["p50"] if os.path.exists(direct) else None
    added = l["p50"] - direct_p50 if direct_p50 is not None and name != "direct" else None
    cpu = cpu_per_hop(name, mode, size, s["received"])
    cap, bench_limited = capacity(name, mode, size)
    cap_text = "-" if cap is None else f"{cap:.0f}{' (bench)' if bench_limited else ''}"
    rows.append((mode, int(size), name, l, s, cpu, added, cap))
    print(f"{mode + ' ' + size + 'B':<16} {name:<8} {l['p50']:>8.1f} {l['p99']:>8.1f} {l['p99_9']:>9.1f} "
          f"{s['loss_percent']:>7.3f} {('-' if cpu is None else f'{cpu:.2f}'):>10} "
          f"{('-' if added is None else f'{added:.1f}'):>9} {cap_text:>15}{'' if s['valid'] else '  INVALID'}")

print()
print("ratios, ip2p / coturn (below 1 is better for latency and CPU, above 1 for capacity):")
by = {(m, z, n): (l, s, cpu, added, cap) for (m, z, n, l, s, cpu, added, cap) in rows}
for (mode, size) in sorted({(m, z) for (m, z, *_r) in rows}):
    i, c = by.get((mode, size, "ip2p")), by.get((mode, size, "coturn"))
    if not i or not c:
        continue
    print(f"  {mode} {size}B: p50 {ratio(i[0]['p50'], c[0]['p50'])}, p99 {ratio(i[0]['p99'], c[0]['p99'])}, "
          f"relay-added p50 {ratio(i[3], c[3])}, cpu/hop {ratio(i[2], c[2])}, capacity {ratio(i[4], c[4])}")
for path in sorted(glob.glob(os.path.join(out, "latency-*-default-*.json"))):
    s = load(path)
    print(f"  {s['label']}: p50 {s['latency_us']['p50']:.1f} us, p99 {s['latency_us']['p99']:.1f} us, loss {s['loss_percent']:.3f}%")
print("cpu us/hop: server CPU time (all threads, from /proc) per relayed packet crossing; "
      "added p50: relay p50 minus direct p50; (bench): capacity search stopped because the bench fell behind")
