"""Start-up cost of the light entry points: `qface --help` and `import qface.pipeline.detect` (neither loads torch).

    python bench/bench_startup.py [--repo PATH] [--runs 5]

Each is a fresh interpreter; reports the median wall time and the median CPU time (user + system) of the child,
which stays meaningful on a loaded machine where wall time does not. `--repo` times another checkout (e.g. an
older commit) the same way.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "qface --help": ["-m", "qface.cli", "--help"],
    "import qface.pipeline.detect": ["-c", "import qface.pipeline.detect"],
}


def measure(repo: Path, arguments: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh interpreter running `arguments` with `repo` first on the path."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    environment = {**os.environ, "PYTHONPATH": str(repo)}  # and cwd: `-m` puts the working folder first on the path
    subprocess.run([sys.executable, *arguments], cwd=repo, env=environment, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"| command ({args.repo}) | wall s (median of {args.runs}) | CPU s (median) |\n|---|---:|---:|")
    for name, arguments in COMMANDS.items():
        runs = [measure(args.repo, arguments) for _ in range(args.runs)]
        wall, cpu = (statistics.median(column) for column in zip(*runs))
        print(f"| `{name}` | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
