"""What the bench tables share: a scenario run several times (its files
NAME.rN.EXT, one per repetition), each figure as the median of its runs
with their range, and ratios that say when two figures differ by less
than their spread (their ranges overlap)."""
import glob
import json
import os
import re
import statistics


def load(path):
    with open(path) as f:
        return json.load(f)


def runs(out, stem, ext="json"):
    """The repetitions' files of `stem` (e.g. latency-ip2p-echo-100), in order."""
    paths = glob.glob(os.path.join(out, f"{stem}.r*.{ext}"))
    return sorted(paths, key=lambda p: int(re.search(r"\.r(\d+)\.", p).group(1)))


class Figure:
    """A figure measured in several runs: median and range."""

    def __init__(self, values):
        self.values = [v for v in values if v is not None]

    def __bool__(self):
        return bool(self.values)

    @property
    def median(self):
        return statistics.median(self.values) if self.values else None

    @property
    def lo(self):
        return min(self.values) if self.values else None

    @property
    def hi(self):
        return max(self.values) if self.values else None

    def fmt(self, spec=".1f"):
        """`median [lo-hi]`, or `-` when nothing was measured."""
        if not self.values:
            return "-"
        if len(self.values) == 1:
            return format(self.median, spec)
        return f"{format(self.median, spec)} [{format(self.lo, spec)}-{format(self.hi, spec)}]"

    def overlaps(self, other):
        return bool(self) and bool(other) and self.lo <= other.hi and other.lo <= self.hi


def ratio(a, b):
    """a / b of the medians, marked `~` when the two ranges overlap: the
    runs do not tell the two apart."""
    if not a or not b or not b.median:
        return "-"
    return f"{a.median / b.median:.2f}{'~' if a.overlaps(b) else ''}"


RATIO_NOTE = ("figures: median of the runs [lowest-highest]; a ratio marked ~ compares figures whose ranges overlap: "
              "the runs do not tell them apart")


def valid_runs(out, stem):
    """A scenario's fixed-rate runs: the summaries of those that kept their
    schedule, and how many did not (left out: their figures are the bench's)."""
    kept, behind = [], 0
    for path in runs(out, stem):
        s = load(path)
        if s.get("valid"):
            kept.append((path, s))
        else:
            behind += 1
    return kept, behind


def capacities(out, stem):
    """A scenario's capacity searches: the figures (None for a search that
    found none), whether any was bound by the bench, and the reasons of those
    that found none."""
    found, bench_bound, none = [], False, []
    for path in runs(out, stem):
        c = load(path)
        if c.get("capacity") is None:
            none.append(c.get("line", "no line"))
        else:
            found.append(c["capacity"])
        bench_bound = bench_bound or bool(c.get("bench_bound"))
    return Figure(found), bench_bound, none


def capacity_cell(out, name, mode, size, floor, notes):
    """A server's capacity cell: its figure, marked (bench) when the
    generator bound it or it lies within the range of `floor`, the path
    with no relay (the generator's ceiling); searches that found none are
    counted, their lines added to `notes`. Also the figure and whether the
    bench bound it."""
    cap, bench_bound, none = capacities(out, f"capacity-{name}-{mode}-{size}")
    ceiling, _, _ = capacities(out, f"capacity-{floor}-{mode}-{size}")
    text = cap.fmt(".0f")
    if bench_bound or (name != floor and cap.overlaps(ceiling)):
        text += " (bench)"
    if none:
        text += f" ({counted(len(none), 'search', 'searches')} found none)"
        notes += [f"{name} {mode} {size}B: {line}" for line in none]
    return text, cap, bench_bound


def counted(n, one, many=None):
    """'1 run', '2 runs': a count with its noun."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def note_behind(notes, name, mode, size, *fixed):
    """Adds to `notes` how many of a server's fixed-rate runs (`fixed`: the
    runs' figures, or None) stayed behind their schedule after reruns."""
    behind = sum(f["behind"] for f in fixed if f)
    if behind:
        notes.append(f"{name} {mode} {size}B: {counted(behind, 'fixed-rate run')} stayed behind schedule after reruns: "
                     "left out (the bench's figures, not the server's)")
