"""What each speed option gives end to end: one 640×480 photo through `FaceAnalyzer.analyze`, and a folder of photos
through `qface analyze`, for the default and each variant (no mirror pass, onnxruntime int8, bf16), interleaved.

    python bench/bench_variants.py FOLDER [--count 1000] [--calls 15] [--runs 2]

The photo is bench/common.py's (the bundled portrait on a grey 640×480 canvas), as PNG and as JPEG (quality 95). The
photo variants live side by side in one process and alternate call by call (the order flips every round); the folder
variants are whole CLI runs (start-up included) on the first `--count` images of FOLDER, alternating. Each is run
once untimed first. Prints a
markdown table; bench/performance.md holds the committed numbers.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import interleaved, photo_640x480, rate
from PIL import Image

from qface.analyzer import FaceAnalyzer

VARIANTS = {  # name: (`qface analyze` flags, the same as FaceAnalyzer options)
    "default (torch fp32, mirror pass)": ([], {}),
    "--no-mirror": (["--no-mirror"], {"mirror": False}),
    "--backend onnx-int8": (["--backend", "onnx-int8"], {"backend": "onnx-int8"}),
    "--backend onnx-int8 --no-mirror": (
        ["--backend", "onnx-int8", "--no-mirror"],
        {"backend": "onnx-int8", "mirror": False},
    ),
    "--precision bf16": (["--precision", "bf16"], {"precision": "bf16"}),
}


def encoded(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def milliseconds(call: Callable[[], object]) -> Callable[[], float]:
    """A run (for `interleaved`) that makes the call and gives its time in ms."""

    def run() -> float:
        start = time.perf_counter()
        call()
        return 1e3 * (time.perf_counter() - start)

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=15, help="interleaved rounds per photo format")
    parser.add_argument("--runs", type=int, default=2, help="CLI runs per folder variant")
    args = parser.parse_args()
    analyzers = {name: FaceAnalyzer(**options) for name, (_, options) in VARIANTS.items()}
    images = {fmt: encoded(photo_640x480(), fmt) for fmt in ("PNG", "JPEG")}
    runs = {
        f"{name} {fmt}": milliseconds(lambda a=analyzer, d=data: a.analyze(d))
        for name, analyzer in analyzers.items()
        for fmt, data in images.items()
    }
    times = interleaved(runs, args.calls)
    with tempfile.TemporaryDirectory() as scratch:
        subset = Path(scratch) / "photos"
        subset.mkdir()
        for path in sorted(args.folder.iterdir())[: args.count]:
            os.symlink(path.resolve(), subset / path.name)
        command = [sys.executable, "-m", "qface.cli", "analyze", str(subset), "--out", f"{scratch}/r.csv"]

        def cli_run(flags: list[str]) -> int:
            subprocess.run(command + flags, check=True, stderr=subprocess.DEVNULL)
            return args.count

        runs = {name: rate(lambda f=flags: cli_run(f)) for name, (flags, _) in VARIANTS.items()}
        rates = interleaved(runs, args.runs)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print("| variant | 640×480 PNG, ms (min–max) | JPEG, ms | faces | folder through the CLI, images/s (min–max) |")
    print("|---|---:|---:|---:|---:|")
    for name, analyzer in analyzers.items():
        png, jpeg, per_s = times[f"{name} PNG"], times[f"{name} JPEG"], rates[name]
        faces = len(analyzer.analyze(images["PNG"]))
        print(
            f"| {name} | {statistics.median(png):.1f} ({min(png):.1f}–{max(png):.1f}) | {statistics.median(jpeg):.1f} "
            f"| {faces} | {statistics.median(per_s):.1f} ({min(per_s):.1f}–{max(per_s):.1f}) |"
        )


if __name__ == "__main__":
    main()
