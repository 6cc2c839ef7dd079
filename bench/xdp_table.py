#!/usr/bin/env python3
"""Builds make bench-xdp's table from what bench/xdp.sh wrote: each figure
the median of the scenario's runs with their range; runs the generator
could not keep on schedule left out, and said so."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from repeats import RATIO_NOTE, Figure, capacities, capacity_cell, note_behind, ratio, valid_runs  # noqa: E402

out = sys.argv[1]
SERVERS = ["ip2p-xdp", "before-xdp", "ip2p", "before", "coturn", "kernel"]


def cpu(stem):
    """(machine less bench, relay process) CPU us per packet sent, of one run."""
    path = stem + ".cpu"
    if not os.path.exists(path):
        return None
    t0, i0, t1, i1, cpus, server, bench, hz, rate, secs = map(float, open(path).read().split())
    machine = cpus * (t1 - t0) / 1e9 * hz - (i1 - i0)
    packets = rate * secs
    return (machine - bench) / hz * 1e6 / packets, server / hz * 1e6 / packets


def program_ns(stem):
    path = stem + ".bpf"
    if not os.path.exists(path):
        return None
    t0, n0, t1, n1 = map(float, open(path).read().split())
    return (t1 - t0) / (n1 - n0) if n1 > n0 else None


def fixed(run, name, mode, size):
    """A server's fixed-rate runs at one rate, as figures; None if none ran."""
    kept, behind = valid_runs(out, f"{run}-{name}-{mode}-{size}")
    if not kept and not behind:
        return None
    stems = [p[: -len(".json")] for p, _ in kept]
    cpus = [c for c in map(cpu, stems) if c]
    return {
        "p50": Figure(s["latency_us"]["p50"] for _, s in kept),
        "p99": Figure(s["latency_us"]["p99"] for _, s in kept),
        "loss": Figure(s["loss_percent"] for _, s in kept),
        "cpu": Figure(c[0] for c in cpus),
        "proc": Figure(c[1] for c in cpus),
        "prog": Figure(map(program_ns, stems)),
        "behind": behind,
        "runs": len(kept) + behind,
    }


files = os.listdir(out)
sizes = sorted({f.split("-")[-1].split(".")[0] for f in files if f.startswith("latency-") and f.endswith(".json")}, key=int)
modes = [m for m in ["echo", "pairs"] if any(f"-{m}-" in f for f in files)]
print(f"{'scenario':<12} {'server':<10} {'p50 us':>20} {'p99 us':>22} {'loss %':>20} {'cpu us/pkt machine-bench':>25} "
      f"{'relay proc':>19} | {'at load: machine-bench':>22} | {'prog ns/run':>16} | capacity pkt/s")
notes = []
for mode in modes:
    for size in sizes:
        seen = {}
        ceiling, _, _ = capacities(out, f"capacity-kernel-{mode}-{size}")
        for name in SERVERS:
            at, loaded = fixed("latency", name, mode, size), fixed("load", name, mode, size)
            if not at:
                continue
            cap_text, cap, _ = capacity_cell(out, name, mode, size, "kernel", notes)
            seen[name] = (at, loaded, cap)
            note_behind(notes, name, mode, size, at, loaded)
            print(f"{mode + ' ' + size + 'B':<12} {name:<10} {at['p50'].fmt():>20} {at['p99'].fmt():>22} "
                  f"{at['loss'].fmt('.3f'):>20} {at['cpu'].fmt('.2f'):>25} {at['proc'].fmt('.2f'):>19} | "
                  f"{(loaded['cpu'].fmt('.2f') if loaded else '-'):>22} | "
                  f"{(loaded['prog'].fmt('.0f') if loaded else '-'):>16} | {cap_text}")
        for now, before in (("ip2p-xdp", "before-xdp"), ("ip2p", "before")):
            n, b = seen.get(now), seen.get(before)
            if n and b and n[1] and b[1]:
                print(f"{'':12} {now} / {before} at load (machine-bench cpu/pkt): {ratio(n[1]['cpu'], b[1]['cpu'])}")
        x, i, t, k = (seen.get(n) for n in ("ip2p-xdp", "ip2p", "coturn", "kernel"))
        if x and i and t and x[1] and i[1] and t[1]:
            line = (f"{'':12} ratios at load (machine-bench cpu/pkt): ip2p socket / ip2p xdp {ratio(i[1]['cpu'], x[1]['cpu'])}, "
                    f"coturn / ip2p xdp {ratio(t[1]['cpu'], x[1]['cpu'])}; p50 (latency runs): ip2p xdp / kernel "
                    f"{ratio(x[0]['p50'], k[0]['p50']) if k else '-'}, ip2p socket / coturn {ratio(i[0]['p50'], t[0]['p50'])}; "
                    f"capacity: ip2p xdp / coturn {ratio(x[2], t[2])}, ip2p socket / coturn {ratio(i[2], t[2])}")
            print(line)
        if ceiling:
            print(f"{'':12} the generator's ceiling here: the kernel path's capacity, {ceiling.fmt('.0f')} pkt/s; "
                  "a figure within its range (bench) is the bench's limit, not the server's")
print(RATIO_NOTE)
print("cpu us/pkt: machine CPU (all CPUs, softirq included) less the bench's own, per packet sent; relay proc: the "
      "server process alone; prog ns/run: the XDP program's own time per run (kernel.bpf_stats_enabled)")
for note in notes:
    print("note: " + note)
