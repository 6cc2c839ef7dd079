#!/usr/bin/env python3
"""One row of make bench-scaling, as a JSON line: a fixed-rate run's
summary, the relay's CPU and its workers' split (from /status before and
after), the short-circuit's share (from /metrics), and the capacity line
when the search ran. bench/scaling_table.py makes the table of them."""
import json
import re
import sys

path, ticks, hz, before, after, m0, m1, mode, workers, rate, cap = sys.argv[1:]
row = {"mode": mode, "workers": workers, "rate": int(rate), "capacity_line": cap or None}
try:
    run = json.load(open(path))
except (OSError, ValueError):
    print(json.dumps({**row, "failed": True}))
    sys.exit(0)
delivered = max(run["received"], 1)
w0 = {w["worker"]: w["cpu_seconds"] for w in json.loads(before)["per_worker"]}
w1 = {w["worker"]: w["cpu_seconds"] for w in json.loads(after)["per_worker"]}
used = [w1[k] - w0.get(k, 0) for k in sorted(w1)]


def metric(text, name):
    m = re.search(rf"^{name} (\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def delta(name):
    return metric(m1, name) - metric(m0, name)


relayed = delta('ip2p_relayed_packets_total\\{direction="to_peer",path="socket"\\}')
short = delta("ip2p_short_circuit_packets_total")
handoffs = delta("ip2p_short_circuit_handoffs_total")
# Before the direct crossing every crossing was a handoff.
crossed = delta("ip2p_short_circuit_crossed_total") if "ip2p_short_circuit_crossed_total" in m1 else handoffs
capacity = re.search(r"^capacity: (\d+) pkt/s", cap, re.M)
pairs = mode == "pairs"
print(json.dumps({
    **row,
    "valid": run["valid"],
    "cpu_us_per_packet": 1e6 * int(ticks) / int(hz) / delivered,
    "p50_us": run["latency_us"]["p50"],
    "split": [100 * u / max(sum(used), 1e-9) for u in used],
    "short_circuited": 100 * short / relayed if pairs and relayed else None,
    "relayed": relayed,
    "crossed": 100 * crossed / short if pairs and short else None,
    "handed_off": 100 * handoffs / short if pairs and short else None,
    "capacity": int(capacity.group(1)) if capacity else None,
    "bench_bound": "bench-bound" in cap,
}))
