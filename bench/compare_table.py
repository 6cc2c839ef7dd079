#!/usr/bin/env python3
"""Builds make bench-compare's table from the JSON summaries ip2p-bench wrote."""
import glob, json, os, sys

out = sys.argv[1]
max_p99 = float(sys.argv[2]) if len(sys.argv) > 2 else 1000.0
load_rate = int(sys.argv[3]) if len(sys.argv) > 3 else 0

def load(path):
    with open(path) as f:
        return json.load(f)

def cpu_per_packet(name, mode, size, received, run="latency"):
    path = os.path.join(out, f"{run}-{name}-{mode}-{size}.cpu")
    if not os.path.exists(path) or not received:
        return None
    ticks, hz = map(float, open(path).read().split())
    # Per packet delivered end to end. Through coturn each crosses the relay
    # twice; through ip2p's short-circuit (pairs) once.
    return ticks / hz * 1e6 / received

def capacity(name, mode, size):
    path = os.path.join(out, f"capacity-{name}-{mode}-{size}.json")
    if not os.path.exists(path):
        return None, None
    # ip2p-bench capacity --json: the search's figure (null: none held)
    # and whether the generator, not the server, bounded it.
    found = load(path)
    return found["capacity"], found["bench_bound"]

def cpu_under_load(name, mode, size):
    """CPU per packet at the load rate, and whether that run lost more than 0.1%."""
    path = os.path.join(out, f"load-{name}-{mode}-{size}.json")
    if not os.path.exists(path):
        return None, False
    s = load(path)
    return cpu_per_packet(name, mode, size, s["received"], "load"), s["loss_percent"] > 0.1

def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"

def parse_name(path):
    """latency-NAME-MODE-SIZE.json -> (name, mode, size); None for the defaults runs."""
    parts = os.path.basename(path)[:-5].split("-")
    return None if len(parts) != 4 else tuple(parts[1:])

rows = {}
for path in glob.glob(os.path.join(out, "latency-*-*.json")):
    parsed = parse_name(path)
    if parsed is None:
        continue
    name, mode, size = parsed
    s = load(path)
    rows[(mode, int(size), name)] = s

print(f"{'scenario':<16} {'server':<8} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'loss %':>7} "
      f"{'cpu us/pkt':>10} {'at ' + str(load_rate // 1000) + 'k':>8} {'added p50':>9} {'capacity pkt/s':>15}")
facts = {}
order = {"ip2p": 0, "before": 1, "coturn": 2, "forwarder": 3, "direct": 4}
for (mode, size, name) in sorted(rows, key=lambda k: (k[0], k[1], order.get(k[2], 9))):
    s = rows[(mode, size, name)]
    l = s["latency_us"]
    direct = rows.get((mode, size, "direct"))
    added = l["p50"] - direct["latency_us"]["p50"] if direct and name != "direct" else None
    cpu = cpu_per_packet(name, mode, size, s["received"])
    cap, bench_limited = capacity(name, mode, size)
    loaded, lossy = cpu_under_load(name, mode, size)
    facts[(mode, size, name)] = (l, cpu, added, cap, bench_limited, loaded)
    loaded_text = "-" if loaded is None else f"{loaded:.2f}{'*' if lossy else ''}"
    if cap is None:
        cap_text = "bench behind" if bench_limited else "-"
    else:
        cap_text = f"{cap:.0f}{' (bench)' if bench_limited else ''}"
    print(f"{mode + ' ' + str(size) + 'B':<16} {name:<8} {l['p50']:>8.1f} {l['p99']:>8.1f} {l['p99_9']:>9.1f} "
          f"{s['loss_percent']:>7.3f} {('-' if cpu is None else f'{cpu:.2f}'):>10} {loaded_text:>8} "
          f"{('-' if added is None else f'{added:.1f}'):>9} {cap_text:>15}{'' if s['valid'] else '  INVALID'}")

print()
print("ratios ip2p / coturn (below 1 is better for latency and CPU, above 1 for capacity)")
print("ip2p / forwarder (echo): against a bare recvmmsg/sendmmsg UDP forwarder, no protocol, the same two crossings;")
print("and relay / direct (capacity: the share of the no-relay path's rate the relay sustains):")
for (mode, size) in sorted({(m, z) for (m, z, _n) in facts}):
    i, c, d = (facts.get((mode, size, n)) for n in ("ip2p", "coturn", "direct"))
    if not i or not c:
        continue
    line = (f"  {mode} {size}B: p50 {ratio(i[0]['p50'], c[0]['p50'])}, p99 {ratio(i[0]['p99'], c[0]['p99'])}, "
            f"relay-added p50 {ratio(i[2], c[2])}, cpu/pkt {ratio(i[1], c[1])} (at {load_rate // 1000}k {ratio(i[5], c[5])}), "
            f"capacity {ratio(i[3], c[3])}")
    f = facts.get((mode, size, "forwarder"))
    if f:
        # The bare forwarder: the kernel's cost of the same two crossings.
        line += (f"; ip2p / forwarder: capacity {ratio(i[3], f[3])}, cpu/pkt {ratio(i[1], f[1])} "
                 f"(at {load_rate // 1000}k {ratio(i[5], f[5])}), relay-added p50 {ratio(i[2], f[2])}; "
                 f"forwarder / coturn relay-added p50 {ratio(f[2], c[2])}")
    b = facts.get((mode, size, "before"))
    if b:
        # BASELINE: an earlier build of ip2p in the same run.
        line += (f"; ip2p / before: cpu/pkt {ratio(i[1], b[1])} (at {load_rate // 1000}k {ratio(i[5], b[5])}), "
                 f"p50 {ratio(i[0]['p50'], b[0]['p50'])}")
    if d and not d[4]:
        # A direct capacity the bench itself capped is no ceiling to divide by.
        line += f"; capacity/direct ip2p {ratio(i[3], d[3])}, coturn {ratio(c[3], d[3])}"
    print(line)
for path in sorted(glob.glob(os.path.join(out, "latency-*-default-*.json"))):
    s = load(path)
    print(f"  {s['label']}: p50 {s['latency_us']['p50']:.1f} us, p99 {s['latency_us']['p99']:.1f} us, loss {s['loss_percent']:.3f}%")
print("cpu us/pkt: server CPU time (all threads, from /proc) per packet delivered, at the latency run's rate "
      "(pairs: client to client, crossing coturn twice and ip2p's short-circuit once; echo: to the peer and back, two crossings); "
      f"at {load_rate // 1000}k: the same at {load_rate} pkt/s (* when that run lost over 0.1%); "
      "added p50: relay p50 minus direct p50; (bench): capacity search stopped because the bench fell behind; "
      "bench behind: it fell behind its schedule at the first rate")
