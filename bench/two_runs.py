"""Does a capacity figure repeat? The capacity searches of two runs of one
bench script (`make bench-compare`, `bench-xdp`: their output
directories, copied aside between the runs) side by side, each as the
median [range] of its rounds, and whether the two agree within their
spread: their ranges overlap, and each median lies within the other run's
range. Exits 1 when a scenario's ranges do not overlap or a search found
no rate.

    python3 bench/two_runs.py RUN1_DIR RUN2_DIR
"""
import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from repeats import capacities  # noqa: E402


def stems(out):
    """The capacity scenarios of a run, e.g. capacity-ip2p-pairs-100."""
    names = (os.path.basename(p) for p in glob.glob(os.path.join(out, "capacity-*.r*.json")))
    return {re.sub(r"\.r\d+\.json$", "", n) for n in names}


def within(figure, other):
    return other.lo <= figure.median <= other.hi


def main(first, second):
    ok = True
    print(f"{'scenario':<36} {'run 1':>26} {'run 2':>26}  agree")
    for stem in sorted(stems(first) | stems(second)):
        (a, _, none_a), (b, _, none_b) = capacities(first, stem), capacities(second, stem)
        missing = [name for name, f, none in (("run 1", a, none_a), ("run 2", b, none_b)) if not f and not none]
        if missing:
            verdict = f"no: not measured in {' and '.join(missing)}"
            ok = False
        elif none_a or none_b:
            verdict = f"no: {len(none_a)} + {len(none_b)} searches found none"
            ok = False
        elif not a.overlaps(b):
            verdict = "no: the ranges do not overlap"
            ok = False
        else:
            outside = [name for name, f, g in (("run 1's median", a, b), ("run 2's median", b, a)) if not within(f, g)]
            if len(outside) == 2:
                outside = ["both medians"]
            verdict = "yes" + (f" (ranges overlap; {outside[0]} outside the other's range)"
                               if outside else " (each median within the other's range)")
        print(f"{stem.removeprefix('capacity-'):<36} {a.fmt('.0f'):>26} {b.fmt('.0f'):>26}  {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
