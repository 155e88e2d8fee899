"""What each speed option gives end to end: one 640×480 photo through `FaceAnalyzer.analyze`, and a folder of photos
through `qface analyze`, for the default and each variant (no mirror pass, onnxruntime int8, bf16), interleaved.

    python bench/bench_variants.py FOLDER [--count 1000] [--calls 15] [--runs 2]

The photo is bench_compare.py's: the bundled portrait on a grey 640×480 canvas, as PNG and as JPEG (quality 95). The
photo variants live side by side in one process and alternate call by call (the order flips every round); the folder
variants are whole CLI runs (start-up included) on the first `--count` images of FOLDER, alternating. Prints a
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
from pathlib import Path

from PIL import Image

from qface.analyzer import FaceAnalyzer
from qface.resources import SAMPLE_IMAGE

VARIANTS = {
    "default (torch fp32, mirror pass)": [],
    "--no-mirror": ["--no-mirror"],
    "--backend onnx-int8": ["--backend", "onnx-int8"],
    "--backend onnx-int8 --no-mirror": ["--backend", "onnx-int8", "--no-mirror"],
    "--precision bf16": ["--precision", "bf16"],
}
OPTIONS = {
    "--no-mirror": {"mirror": False},
    "--backend": {"backend": "onnx-int8"},
    "--precision": {"precision": "bf16"},
}


def analyzer_options(flags: list[str]) -> dict:
    return {key: value for flag in flags if flag in OPTIONS for key, value in OPTIONS[flag].items()}


def photo(fmt: str) -> bytes:
    portrait = Image.open(SAMPLE_IMAGE).convert("RGB")
    portrait.thumbnail((480, 480))
    canvas = Image.new("RGB", (640, 480), (128, 128, 128))
    canvas.paste(portrait, ((640 - portrait.width) // 2, 0))
    encoded = io.BytesIO()
    canvas.save(encoded, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return encoded.getvalue()


def milliseconds(call) -> float:
    start = time.perf_counter()
    call()
    return 1e3 * (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=15, help="interleaved rounds per photo format")
    parser.add_argument("--runs", type=int, default=2, help="CLI runs per folder variant")
    args = parser.parse_args()
    analyzers = {name: FaceAnalyzer(**analyzer_options(flags)) for name, flags in VARIANTS.items()}
    images = {fmt: photo(fmt) for fmt in ("PNG", "JPEG")}
    times = {(name, fmt): [] for name in analyzers for fmt in images}
    for analyzer in analyzers.values():
        analyzer.analyze(images["PNG"])  # warm-up
    for round_ in range(args.calls):
        order = list(analyzers.items())
        for name, analyzer in order if round_ % 2 else order[::-1]:
            for fmt, data in images.items():
                times[name, fmt].append(milliseconds(lambda a=analyzer, d=data: a.analyze(d)))
    with tempfile.TemporaryDirectory() as scratch:
        subset = Path(scratch) / "photos"
        subset.mkdir()
        for path in sorted(args.folder.iterdir())[: args.count]:
            os.symlink(path.resolve(), subset / path.name)
        rates = {name: [] for name in VARIANTS}
        for run in range(args.runs):
            order = list(VARIANTS.items())
            for name, flags in order if run % 2 == 0 else order[::-1]:
                command = [sys.executable, "-m", "qface.cli", "analyze", str(subset), "--out", f"{scratch}/r.csv"]
                seconds = milliseconds(
                    lambda c=command + flags: subprocess.run(c, check=True, stderr=subprocess.DEVNULL)
                )
                rates[name].append(args.count / seconds * 1e3)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print("| variant | 640×480 PNG, ms (min–max) | JPEG, ms | faces | folder through the CLI, images/s (min–max) |")
    print("|---|---:|---:|---:|---:|")
    for name, analyzer in analyzers.items():
        png, jpeg, rate = times[name, "PNG"], times[name, "JPEG"], rates[name]
        faces = len(analyzer.analyze(images["PNG"]))
        print(
            f"| {name} | {statistics.median(png):.1f} ({min(png):.1f}–{max(png):.1f}) | {statistics.median(jpeg):.1f} "
            f"| {faces} | {statistics.median(rate):.1f} ({min(rate):.1f}–{max(rate):.1f}) |"
        )


if __name__ == "__main__":
    main()
