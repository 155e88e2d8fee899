"""The plain CLI against `--engine ray` on one folder: images/s, peak memory, start-up cost, and whether rows agree.

    nice -n 10 python bench/bench_scale.py [--folder ../shared/data/celeba/img_align_celeba] [--count 5000]

Both run as `qface analyze` subprocesses (what a user runs) on the same `count` images (symlinks in a temporary
folder), detector dlib-hog, all tasks. Start-up cost: the same command on one image (process start, Ray start,
model loading). Memory: every 0.5 s the resident memory of every process of the run (its own session: the CLI, or
the Ray driver, raylet, GCS and actors) is read from /proc; "peak sum" adds them (it counts pages they share, like
the torch libraries and Ray's object store, more than once), "peak process" is the largest one.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def session_rss(session: int) -> list[int]:
    """Resident bytes of every process whose session id is `session`."""
    sizes = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session:  # fields after the name: state ppid pgrp session ...
                sizes.append(int((entry / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, IndexError, ValueError):  # the process ended while being read
            continue
    return sizes


def run(command: list[str]) -> dict[str, float]:
    """Wall clock and peak memory of a command and everything it starts (its own session)."""
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    job = subprocess.Popen(command, env=environment, start_new_session=True, stderr=subprocess.PIPE, text=True)
    peak_sum = peak_process = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_sum, peak_process
        while not done.is_set():
            sizes = session_rss(job.pid)
            peak_sum, peak_process = max(peak_sum, sum(sizes)), max([peak_process, *sizes])
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    errors = job.communicate()[1]
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    summary = [line for line in errors.splitlines() if " analysed, " in line]
    if job.returncode not in (0, 1) or ("ray" in command and not summary):
        raise RuntimeError(f"{command} failed ({job.returncode}):\n{errors[-3000:]}")
    return {"seconds": seconds, "peak_sum": peak_sum / 2**20, "peak_process": peak_process / 2**20, "line": summary}


def compare(csv_path: Path, parquet_folder: Path) -> str:
    """How many cells differ by more than 1e-5 between the CLI's CSV and the Parquet parts."""
    import pyarrow.parquet as pq

    rows = [row for part in parquet_folder.glob("part-*.parquet") for row in pq.read_table(part).to_pylist()]
    by_key = {(row["file"], "" if row["face"] is None else str(row["face"])): row for row in rows}
    with open(csv_path) as stream:
        expected = list(csv.DictReader(stream))
    differing = cells = missing = 0
    for want in expected:
        got = by_key.get((want["file"], want["face"]))
        if got is None:
            missing += 1
            continue
        for column, text in want.items():
            cells += 1
            value = got[column]
            if isinstance(value, float) and text != "":
                differing += abs(value - float(text)) > 1e-5
            else:
                differing += ("" if value is None else str(value)) != text
    return (
        f"{len(expected)} CSV rows, {len(rows)} Parquet rows, {missing} CSV rows without a Parquet twin, "
        f"{differing} of {cells} cells differ by more than 1e-5"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, default=REPO.parent / "shared/data/celeba/img_align_celeba")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()
    qface = [sys.executable, "-m", "qface.cli", "analyze", "--detector", "dlib-hog"]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        one, many = scratch / "one", scratch / "images"
        one.mkdir()
        many.mkdir()
        names = sorted(os.listdir(args.folder))[: args.count]
        for name in names:
            (many / name).symlink_to((args.folder / name).resolve())
        (one / names[0]).symlink_to((args.folder / names[0]).resolve())
        ray = [*qface, "--engine", "ray", "--actors", str(args.actors)]
        print(f"{len(names)} images from {args.folder}, detector dlib-hog, all tasks")
        print("| run | wall s | images/s | peak RSS sum MiB | peak RSS process MiB | load average before |")
        print("|---|---:|---:|---:|---:|---:|")
        runs = {
            "cli start-up (1 image)": [*qface, str(one), "--out", str(scratch / "one.csv")],
            "ray start-up (1 image)": [*ray, str(one), "--out", str(scratch / "one-ray")],
            f"cli, {len(names)} images": [*qface, str(many), "--out", str(scratch / "cli.csv")],
            f"ray, {len(names)} images, {args.actors} actors": [*ray, str(many), "--out", str(scratch / "ray")],
        }
        for name, command in runs.items():
            load = os.getloadavg()[0]
            result = run(command)
            count = 1 if "1 image" in name else len(names)
            print(
                f"| {name} | {result['seconds']:.1f} | {count / result['seconds']:.2f} | {result['peak_sum']:.0f} | "
                f"{result['peak_process']:.0f} | {load:.1f} |",
                *result["line"][-1:],
                flush=True,
            )
        print(f"rows: {compare(scratch / 'cli.csv', scratch / 'ray')}")


if __name__ == "__main__":
    main()
