#!/usr/bin/env python3
"""Builds make bench-scaling's table from the rows bench/scaling.sh wrote
(bench/scaling_row.py, one JSON line per run): each figure the median of
the rounds with their range; runs the generator could not keep on
schedule left out, and said so."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from repeats import RATIO_NOTE, Figure, counted, ratio  # noqa: E402

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
groups = {}
for r in rows:
    groups.setdefault((r["mode"], r["workers"], r["rate"]), []).append(r)

print(f"{'mode':<6} {'workers':<9} {'pkt/s/w':>8} {'cpu us/pkt':>20} {'p50 us':>22} {'worker split %':>16} "
      f"{'short-circuited %':>18} {'crossed/handed %':>17} capacity pkt/s")
notes, cpu = [], {}
for (mode, workers, rate), runs in groups.items():
    kept = [r for r in runs if not r.get("failed") and r.get("valid")]
    behind = len(runs) - len(kept)
    # When no run kept its schedule (on a machine where the bench shares
    # the workers' CPUs, none can), the runs' figures are shown, marked,
    # and kept out of the ratios: the relay's CPU per packet still means
    # something, the rate and latency are partly the bench's.
    late = not kept and any(not r.get("failed") for r in runs)
    if late:
        kept = [r for r in runs if not r.get("failed")]
        every = "the one run" if len(runs) == 1 else f"all {len(runs)} runs"
        notes.append(f"{mode}, {workers} workers, {rate} pkt/s/w: {every} fell behind schedule: "
                     "figures marked (behind), not in the ratios")
    elif behind:
        notes.append(f"{mode}, {workers} workers, {rate} pkt/s/w: {behind} of {len(runs)} runs fell behind their "
                     "schedule (or failed) after reruns: left out")
    per_packet = Figure(r["cpu_us_per_packet"] for r in kept)
    if not late:
        cpu[(mode, workers, rate)] = per_packet
    p50 = Figure(r["p50_us"] for r in kept)
    split = "/".join(f"{Figure(r['split'][i] for r in kept).median:.0f}" for i in range(len(kept[0]["split"]))) if kept else "-"
    short = Figure(r["short_circuited"] for r in kept)
    crossed = Figure(r["crossed"] for r in kept)
    handed = Figure(r["handed_off"] for r in kept)
    crossing = f"{crossed.median:.0f}/{handed.median:.0f}" if crossed and handed else "-"
    searches = [r for r in runs if r.get("capacity_line")]
    capacity = "-"
    if searches:
        found = Figure(r["capacity"] for r in searches)
        capacity = found.fmt(".0f") + (" (bench)" if any(r["bench_bound"] for r in searches) else "")
        none = [r["capacity_line"] for r in searches if r["capacity"] is None]
        if none:
            capacity += f" ({counted(len(none), 'search', 'searches')} found none)"
            notes += [f"{mode}, {workers} workers: {line}" for line in none]
    mark = " (behind)" if late else ""
    print(f"{mode:<6} {workers:<9} {rate:>8} {per_packet.fmt('.2f'):>20} {p50.fmt():>22} {split:>16} "
          f"{short.fmt('.0f'):>18} {crossing:>17} {capacity}{mark}")
for (mode, workers, rate), per_packet in cpu.items():
    one = cpu.get((mode, "1", rate))
    if workers != "1" and one:
        print(f"  {mode}, {workers} workers against 1 at {rate} pkt/s/w: cpu/pkt {ratio(per_packet, one)}")
print(RATIO_NOTE)
print("pkt/s/w: the fixed rate per worker (the bench sends workers x that); cpu us/pkt: relay CPU (all threads, /proc) "
      "per packet delivered; p50: median latency through the relay; worker split: each worker's share of the workers' "
      "CPU (from /status, medians); crossed/handed: short-circuited packets for another worker's allocation / of them "
      "through its inbox; capacity: at the last rate, the highest rate with loss <= 0.1% and p99 <= 5 ms; (bench): "
      "the generator, not the relay, bounded it; (behind): every run of the row fell behind its schedule")
for note in notes:
    print("note: " + note)
