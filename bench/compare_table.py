#!/usr/bin/env python3
"""Builds make bench-compare's table from the JSON summaries ip2p-bench
wrote: each figure the median of the scenario's runs with their range;
runs the generator could not keep on schedule left out, and said so."""
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from repeats import RATIO_NOTE, Figure, capacity_cell, counted, note_behind, ratio, valid_runs  # noqa: E402

out = sys.argv[1]
load_rate = int(sys.argv[2]) if len(sys.argv) > 2 else 0
ORDER = {"ip2p": 0, "before": 1, "coturn": 2, "forwarder": 3, "direct": 4}


def cpu_per_packet(stem, received):
    """Server CPU us per packet delivered end to end, of one run. Through
    coturn each crosses the relay twice; through ip2p's short-circuit
    (pairs) once."""
    path = stem + ".cpu"
    if not os.path.exists(path) or not received:
        return None
    ticks, hz = map(float, open(path).read().split())
    return ticks / hz * 1e6 / received if ticks else None


def fixed(run, name, mode, size):
    """A server's fixed-rate runs, as figures; None if none ran."""
    kept, behind = valid_runs(out, f"{run}-{name}-{mode}-{size}")
    if not kept and not behind:
        return None
    return {
        "p50": Figure(s["latency_us"]["p50"] for _, s in kept),
        "p99": Figure(s["latency_us"]["p99"] for _, s in kept),
        "p99_9": Figure(s["latency_us"]["p99_9"] for _, s in kept),
        "loss": Figure(s["loss_percent"] for _, s in kept),
        "lossy": any(s["loss_percent"] > 0.1 for _, s in kept),
        "cpu": Figure(cpu_per_packet(p[: -len(".json")], s["received"]) for p, s in kept),
        "behind": behind,
    }


scenarios = set()
for path in glob.glob(os.path.join(out, "latency-*.r*.json")):
    parts = os.path.basename(path).split(".")[0].split("-")
    if len(parts) == 4:
        scenarios.add((parts[2], int(parts[3]), parts[1]))

print(f"{'scenario':<12} {'server':<9} {'p50 us':>20} {'p99 us':>22} {'p99.9 us':>24} {'loss %':>20} "
      f"{'cpu us/pkt':>18} {'at ' + str(load_rate // 1000) + 'k':>18} {'added p50':>9} capacity pkt/s")
facts, notes = {}, []
for (mode, size, name) in sorted(scenarios, key=lambda k: (k[0], k[1], ORDER.get(k[2], 9))):
    at = fixed("latency", name, mode, size)
    loaded = fixed("load", name, mode, size)
    direct = fixed("latency", "direct", mode, size)
    added = Figure([at["p50"].median - direct["p50"].median]) if direct and name != "direct" and at["p50"] else Figure([])
    cap_text, cap, bench_bound = capacity_cell(out, name, mode, size, "direct", notes)
    facts[(mode, size, name)] = (at, loaded, added, cap, bench_bound)
    note_behind(notes, name, mode, size, at, loaded)
    loaded_text = "-" if not loaded else loaded["cpu"].fmt(".2f") + ("*" if loaded["lossy"] else "")
    print(f"{mode + ' ' + str(size) + 'B':<12} {name:<9} {at['p50'].fmt():>20} {at['p99'].fmt():>22} "
          f"{at['p99_9'].fmt():>24} {at['loss'].fmt('.3f'):>20} {at['cpu'].fmt('.2f'):>18} {loaded_text:>18} "
          f"{added.fmt():>9} {cap_text}")

print()
print("ratios ip2p / coturn (below 1 is better for latency and CPU, above 1 for capacity)")
print("ip2p / forwarder (echo): against a bare recvmmsg/sendmmsg UDP forwarder, no protocol, the same two crossings;")
print("and relay / direct (capacity: the share of the no-relay path's rate the relay sustains):")
for (mode, size) in sorted({(m, z) for (m, z, _n) in facts}):
    i, c, d = (facts.get((mode, size, n)) for n in ("ip2p", "coturn", "direct"))
    if not i or not c:
        continue
    load_ratio = ratio(i[1]["cpu"], c[1]["cpu"]) if i[1] and c[1] else "-"
    line = (f"  {mode} {size}B: p50 {ratio(i[0]['p50'], c[0]['p50'])}, p99 {ratio(i[0]['p99'], c[0]['p99'])}, "
            f"relay-added p50 {ratio(i[2], c[2])}, cpu/pkt {ratio(i[0]['cpu'], c[0]['cpu'])} "
            f"(at {load_rate // 1000}k {load_ratio}), capacity {ratio(i[3], c[3])}")
    f = facts.get((mode, size, "forwarder"))
    if f:
        # The bare forwarder: the kernel's cost of the same two crossings.
        line += (f"; ip2p / forwarder: capacity {ratio(i[3], f[3])}, cpu/pkt {ratio(i[0]['cpu'], f[0]['cpu'])}, "
                 f"relay-added p50 {ratio(i[2], f[2])}; forwarder / coturn relay-added p50 {ratio(f[2], c[2])}")
    b = facts.get((mode, size, "before"))
    if b:
        # BASELINE: an earlier build of ip2p in the same run.
        line += f"; ip2p / before: cpu/pkt {ratio(i[0]['cpu'], b[0]['cpu'])}, p50 {ratio(i[0]['p50'], b[0]['p50'])}"
    if d and d[3] and not d[4]:
        # A direct capacity the bench itself capped is no ceiling to divide by.
        line += f"; capacity/direct ip2p {ratio(i[3], d[3])}, coturn {ratio(c[3], d[3])}"
    print(line)
for name in ("ip2p-default", "coturn-default"):
    kept, behind = valid_runs(out, f"latency-{name}-pairs-100")
    if kept or behind:
        p50 = Figure(s["latency_us"]["p50"] for _, s in kept)
        p99 = Figure(s["latency_us"]["p99"] for _, s in kept)
        print(f"  {name} pairs 100B: p50 {p50.fmt()} us, p99 {p99.fmt()} us"
              + (f" ({counted(behind, 'run')} behind schedule left out)" if behind else ""))
print(RATIO_NOTE)
print("cpu us/pkt: server CPU time (all threads, from /proc) per packet delivered, at the latency run's rate "
      "(pairs: client to client, crossing coturn twice and ip2p's short-circuit once; echo: to the peer and back, two crossings); "
      f"at {load_rate // 1000}k: the same at {load_rate} pkt/s (* when a run lost over 0.1%); "
      "added p50: relay p50 minus direct p50 (medians); (bench): the capacity is the generator's ceiling "
      "(it fell behind, or the figure is within the direct path's range), not the server's")
for note in notes:
    print("note: " + note)
