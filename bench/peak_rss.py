"""Run a Python module or script and print its peak resident set size to stderr when it exits.

    python bench/peak_rss.py -m qface.cli analyze photos/ --out x.csv
    python bench/peak_rss.py bench/specialist_stack.py photos/ --out y.csv
    → last stderr line: "peak-rss-kib 412345"

Why not the parent's os.wait4 / RUSAGE_CHILDREN: Linux carries the forking process's high-water mark across exec into
the child's ru_maxrss, so a child of a large benchmark process reports at least the parent's size. VmHWM in
/proc/self/status belongs to the fresh address space exec made, so it is the child's own peak.
"""

from __future__ import annotations

import atexit
import runpy
import sys

MARKER = "peak-rss-kib"


def report() -> None:
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    sys.stderr.write(f"\n{MARKER} {kib}\n")


if __name__ == "__main__":
    atexit.register(report)
    if sys.argv[1] == "-m":
        sys.argv = sys.argv[2:]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
