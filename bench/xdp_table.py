#!/usr/bin/env python3
"""Builds make bench-xdp's table from what bench/xdp.sh wrote."""
import json, os, sys

out = sys.argv[1]
max_p99 = float(sys.argv[2]) if len(sys.argv) > 2 else 5000.0
SERVERS = ["ip2p-xdp", "before-xdp", "ip2p", "before", "coturn", "kernel"]


def load(path):
    with open(path) as f:
        return json.load(f)


def cpu(run, name, mode, size):
    """(machine less bench, relay process, machine) CPU us per packet sent."""
    path = os.path.join(out, f"{run}-{name}-{mode}-{size}.cpu")
    if not os.path.exists(path):
        return None
    t0, i0, t1, i1, cpus, server, bench, hz, rate, secs = map(float, open(path).read().split())
    machine = cpus * (t1 - t0) / 1e9 * hz - (i1 - i0)
    packets = rate * secs
    per = lambda ticks: ticks / hz * 1e6 / packets
    return per(machine - bench), per(server), per(machine)


def program_ns(run, name, mode, size):
    path = os.path.join(out, f"{run}-{name}-{mode}-{size}.bpf")
    if not os.path.exists(path):
        return None
    t0, n0, t1, n1 = map(float, open(path).read().split())
    return (t1 - t0) / (n1 - n0) if n1 > n0 else None


def capacity(name, mode, size):
    path = os.path.join(out, f"capacity-{name}-{mode}-{size}.json")
    if not os.path.exists(path):
        return None, False
    # ip2p-bench capacity --json: the search's figure (null: none held)
    # and whether the generator, not the server, bounded it.
    found = load(path)
    return found["capacity"], found["bench_bound"]


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


rows = []
sizes = sorted({f.split("-")[-1].split(".")[0] for f in os.listdir(out) if f.startswith("latency-") and f.endswith(".json")}, key=int)
modes = [m for m in ["echo", "pairs"] if any(f"-{m}-" in f for f in os.listdir(out))]
print("scenario      server      p50 us  p99 us  loss %   cpu us/pkt at {0}: machine-bench  relay proc   | at load: machine-bench | prog ns/run | capacity pkt/s".format("rate"))
for mode in modes:
    for size in sizes:
        base = {}
        for name in SERVERS:
            path = os.path.join(out, f"latency-{name}-{mode}-{size}.json")
            if not os.path.exists(path):
                continue
            s = load(path)
            c = cpu("latency", name, mode, size)
            cl = cpu("load", name, mode, size)
            cap, bench_limited = capacity(name, mode, size)
            base[name] = (s, c, cl)
            print(f"{mode + ' ' + size + 'B':13} {name:10} {s['latency_us']['p50']:7.1f} {s['latency_us']['p99']:7.1f} "
                  f"{s['loss_percent']:6.3f}   {fmt(c and c[0]):>12} {fmt(c and c[1]):>12}   | {fmt(cl and cl[0]):>22} | "
                  f"{fmt(program_ns('load', name, mode, size), '.0f'):>11} | {fmt(cap, '.0f')}{' (bench)' if bench_limited else ''}")
        for now_name, before_name in (("ip2p-xdp", "before-xdp"), ("ip2p", "before")):
            n, b = base.get(now_name), base.get(before_name)
            if n and b and n[2] and b[2]:
                print(f"{'':13} {now_name} / {before_name} at load (machine-bench cpu/pkt): {n[2][0] / b[2][0]:.3f}x")
        x, i, t = base.get("ip2p-xdp"), base.get("ip2p"), base.get("coturn")
        if x and i and t and x[2] and i[2] and t[2]:
            print(f"{'':13} ratios at load (machine-bench): ip2p socket / ip2p xdp {i[2][0] / x[2][0]:.2f}x, "
                  f"coturn / ip2p xdp {t[2][0] / x[2][0]:.2f}x; relay-added p50 (latency run) "
                  f"xdp {x[0]['latency_us']['p50'] - base['kernel'][0]['latency_us']['p50']:.1f} us, "
                  f"socket {i[0]['latency_us']['p50'] - base['kernel'][0]['latency_us']['p50']:.1f} us" if "kernel" in base else "")
