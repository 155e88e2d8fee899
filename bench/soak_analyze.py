"""Soak: `qface analyze` over a few thousand mixed good and bad files; rows, errors, skips, peak RSS, flat memory.

    nice -n 10 python bench/soak_analyze.py [--count 3000] [--bad 0.2] [--work /tmp/qface_soak] [--detector dlib-hog]

Good files are copies of CelebA photos (../shared/data/celeba/img_align_celeba); bad ones are generated: truncated
and empty JPEGs, text named .jpg, a PNG header claiming 10⁴ MP, FIFOs, broken and looping links, plus entries a run
skips (.txt files, a FIFO without a suffix). The command's RSS is sampled from /proc every second with the rows
written so far; memory is called flat when the RSS of the last quarter of the run is within 10 % (or 64 MB) of the
second quarter's. Results go to bench/soak_results.md. Not run in CI.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

CELEBA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba" / "img_align_celeba"


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR (CRC fixed) claiming width × height, and nothing else."""
    body = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body))


def build(folder: Path, count: int, bad_fraction: float, seed: int = 0) -> dict[str, int]:
    """`count` entries under `folder` (and one sub-folder); returns how many of each kind were made."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "sub").mkdir(parents=True)
    rng = random.Random(seed)
    photos = sorted(CELEBA.iterdir())[: count * 2]
    kinds = ["truncated", "empty", "text", "bomb", "fifo", "broken_link", "loop_link", "skip_txt", "skip_fifo"]
    made: dict[str, int] = {}
    for index in range(count):
        where = folder / ("sub" if index % 10 == 0 else "")
        kind = rng.choice(kinds) if rng.random() < bad_fraction else "good"
        made[kind] = made.get(kind, 0) + 1
        path = where / f"{index:05d}_{kind}.jpg"
        if kind == "good":
            shutil.copyfile(photos[index], path)
        elif kind == "truncated":
            path.write_bytes(photos[index].read_bytes()[:600])
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "text":
            path.write_text("not a picture\n")
        elif kind == "bomb":
            path.with_suffix(".png").write_bytes(png_claiming(100_000, 100_000))
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "broken_link":
            path.symlink_to(where / "absent.jpg")
        elif kind == "loop_link":
            path.symlink_to(path)
        elif kind == "skip_txt":
            path.with_suffix(".txt").write_text("notes\n")
        elif kind == "skip_fifo":
            os.mkfifo(path.with_suffix(""))
    return made


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--bad", type=float, default=0.2, help="fraction of bad or special entries")
    parser.add_argument("--work", type=Path, default=Path("/tmp/qface_soak"))
    parser.add_argument("--detector", default="dlib-hog")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "soak_results.md")
    args = parser.parse_args()
    if not CELEBA.is_dir():
        sys.exit(f"needs {CELEBA} (the research data beside the repository)")
    made = build(args.work / "in", args.count, args.bad)
    out = args.work / "results.csv"
    out.unlink(missing_ok=True)  # rows from an earlier run must not count as progress
    command = [
        sys.executable,
        "-m",
        "qface.cli",
        "analyze",
        str(args.work / "in"),
        "--recursive",
        "--detector",
        args.detector,
    ]
    command += ["--out", str(out)]
    started = time.time()
    log = (args.work / "stderr.txt").open("w")  # a file, not a pipe: a full pipe would stall the run
    process = subprocess.Popen(command, stderr=log)
    samples, peak = [], 0.0  # (seconds, rows so far, RSS MB)
    while process.poll() is None:
        try:
            rss, peak = rss_mb(process.pid)
            rows = sum(1 for _ in out.open("rb")) - 1 if out.exists() else 0
            samples.append((time.time() - started, rows, rss))
        except (FileNotFoundError, ProcessLookupError, KeyError):
            pass
        time.sleep(1.0)
    log.close()
    stderr = (args.work / "stderr.txt").read_text(errors="backslashreplace")
    seconds = time.time() - started
    with out.open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    errors = sum(1 for row in rows if row["error"])
    final = stderr.strip().splitlines()[-1]
    skips = sum(n for kind, n in made.items() if kind.startswith("skip"))
    files = {row["file"] for row in rows}
    accounted = (
        len(files) == args.count - skips
        and final.startswith(f"{args.count - skips} inputs")
        and (f"skipped {skips} (" in final)
    )
    running = [s for s in samples if s[2] > 0]
    quarter = max(1, len(running) // 4)
    second_q = sorted(s[2] for s in running[quarter : 2 * quarter])
    last_q = sorted(s[2] for s in running[-quarter:])
    early, late = second_q[len(second_q) // 2], last_q[len(last_q) // 2]
    flat = late - early <= max(64.0, 0.1 * early)
    timeline = [running[min(len(running) - 1, i * len(running) // 10)] for i in range(10)] + [running[-1]]
    lines = [
        "# Soak: `qface analyze` over mixed good and bad files",
        "",
        f"Command: `nice -n 10 python bench/soak_analyze.py --count {args.count} --bad {args.bad}` "
        f"(runs `qface analyze <folder> --recursive --detector {args.detector} --out results.csv`).",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, SHARED with a training job "
        "and other sessions while this ran: the times are not speed numbers.",
        "",
        f"- entries made: {args.count} ({', '.join(f'{n} {k}' for k, n in sorted(made.items()))})",
        f"- exit code {process.returncode}; final line: `{final}`",
        f"- rows: {len(rows)} ({len(rows) - errors} face or no-face rows, {errors} error rows) for {len(files)} files;"
        f" every entry accounted for exactly once (a row per input, the rest counted as skipped): "
        f"{'yes' if accounted else 'NO'}",
        f"- peak RSS {peak:.0f} MB; median RSS second quarter {early:.0f} MB, last quarter {late:.0f} MB → "
        f"memory {'stays flat' if flat else 'GROWS'}",
        f"- wall clock {seconds:.0f} s",
        "",
        "| seconds | rows written | RSS MB |",
        "|---:|---:|---:|",
        *(f"| {t:.0f} | {r} | {m:.0f} |" for t, r, m in timeline),
        "",
    ]
    args.results.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
