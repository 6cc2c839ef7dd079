"""The bench tables' arithmetic (bench/repeats.py, bench/two_runs.py,
bench/scaling_table.py) on made-up runs: medians and ranges, when a ratio
is marked `~`, when a capacity is the bench's, and when two runs of a
script agree.

    python3 -m unittest discover -s bench -p '*_test.py'
"""
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest

import two_runs
from repeats import Figure, capacity_cell, counted, ratio


def searches(out, stem, figures, bench_bound=False):
    """Writes a capacity search's JSON per round (None: found no rate)."""
    for i, capacity in enumerate(figures, 1):
        line = f"capacity: {capacity} pkt/s (...)" if capacity else "capacity: none (p99 6000 us at 10000 pkt/s)"
        with open(os.path.join(out, f"{stem}.r{i}.json"), "w") as f:
            json.dump({"capacity": capacity, "line": line, "bench_bound": bench_bound}, f)


class Figures(unittest.TestCase):
    def test_median_and_range(self):
        f = Figure([3.0, None, 1.0, 2.0])
        self.assertEqual(f.fmt(), "2.0 [1.0-3.0]")
        self.assertEqual(Figure([5]).fmt(".0f"), "5")
        self.assertEqual(Figure([]).fmt(), "-")

    def test_a_ratio_is_marked_when_the_ranges_overlap(self):
        self.assertEqual(ratio(Figure([10, 12, 14]), Figure([20, 22, 24])), "0.55")
        self.assertEqual(ratio(Figure([10, 12, 21]), Figure([20, 22, 24])), "0.55~")
        self.assertEqual(ratio(Figure([10]), Figure([])), "-")

    def test_counted(self):
        self.assertEqual(counted(1, "run"), "1 run")
        self.assertEqual(counted(2, "search", "searches"), "2 searches")


class Capacity(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.out = self.dir.name
        searches(self.out, "capacity-direct-pairs-100", [150000, 160000, 170000])

    def tearDown(self):
        self.dir.cleanup()

    def cell(self, name, figures, bench_bound=False):
        searches(self.out, f"capacity-{name}-pairs-100", figures, bench_bound)
        notes = []
        text, _, _ = capacity_cell(self.out, name, "pairs", 100, "direct", notes)
        return text, notes

    def test_a_figure_below_the_generators_ceiling_is_the_servers(self):
        self.assertEqual(self.cell("coturn", [50000, 48000, 52000]), ("50000 [48000-52000]", []))

    def test_a_figure_reaching_the_ceiling_or_bound_by_the_bench_is_marked(self):
        self.assertEqual(self.cell("ip2p", [100000, 120000, 155000])[0], "120000 [100000-155000] (bench)")
        self.assertEqual(self.cell("xdp", [90000, 91000, 92000], bench_bound=True)[0], "91000 [90000-92000] (bench)")

    def test_searches_that_found_none_are_counted_and_noted(self):
        text, notes = self.cell("coturn", [50000, None, 52000])
        self.assertEqual(text, "51000 [50000-52000] (1 search found none)")
        self.assertEqual(notes, ["coturn pairs 100B: capacity: none (p99 6000 us at 10000 pkt/s)"])


class TwoRuns(unittest.TestCase):
    def compare(self, first, second):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            searches(a, "capacity-ip2p-echo-100", first)
            searches(b, "capacity-ip2p-echo-100", second)
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                code = two_runs.main(a, b)
            return code, printed.getvalue().splitlines()[-1]

    def test_runs_that_agree(self):
        code, line = self.compare([50000, 55000, 60000], [52000, 56000, 58000])
        self.assertEqual(code, 0)
        self.assertIn("yes (each median within the other's range)", line)

    def test_overlapping_ranges_with_a_median_outside(self):
        code, line = self.compare([50000, 51000, 60000], [55000, 58000, 61000])
        self.assertEqual(code, 0)
        self.assertIn("run 1's median outside", line)

    def test_overlapping_ranges_with_both_medians_outside(self):
        code, line = self.compare([40000, 45000, 52000], [50000, 55000, 60000])
        self.assertEqual(code, 0)
        self.assertIn("both medians outside", line)

    def test_runs_that_disagree(self):
        self.assertEqual(self.compare([50000, 51000, 52000], [60000, 61000, 62000])[0], 1)
        self.assertEqual(self.compare([50000, None, 52000], [50000, 51000, 52000])[0], 1)
        code, line = self.compare([50000, 51000, 52000], [])
        self.assertEqual(code, 1)
        self.assertIn("no: not measured in run 2", line)


class Scaling(unittest.TestCase):
    def table(self, rows):
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
            f.flush()
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scaling_table.py")
            return subprocess.run([sys.executable, script, f.name], capture_output=True, text=True, check=True).stdout

    @staticmethod
    def row(workers, cpu, valid):
        return {"mode": "pairs", "workers": workers, "rate": 20000, "capacity_line": None, "valid": valid,
                "cpu_us_per_packet": cpu, "p50_us": 40.0, "split": [100.0], "short_circuited": 100.0,
                "crossed": 0.0, "handed_off": 0.0, "capacity": None, "bench_bound": False}

    def test_runs_behind_schedule_are_left_out(self):
        out = self.table([self.row("1", 20.0, True), self.row("1", 22.0, True), self.row("1", 90.0, False),
                          self.row("2", 10.0, True)])
        self.assertIn("21.00 [20.00-22.00]", out)
        self.assertIn("2 workers against 1 at 20000 pkt/s/w: cpu/pkt 0.48", out)
        self.assertIn("1 of 3 runs fell behind", out)

    def test_a_row_where_every_run_fell_behind_is_marked_and_not_in_the_ratios(self):
        out = self.table([self.row("1", 20.0, True), self.row("2", 18.0, False), self.row("2", 19.0, False)])
        self.assertIn("18.50 [18.00-19.00]", out)
        self.assertIn("(behind)", out)
        self.assertNotIn("against 1", out)


if __name__ == "__main__":
    unittest.main()
