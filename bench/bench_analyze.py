"""End-to-end speed of `FaceAnalyzer`: decode → detect → align → one batched Q-Face pass → results.

    python bench/bench_analyze.py [--folder ../shared/data/celeba/img_align_celeba] [--count 1000] [--threads 2]

(1) one 640×480 photo (the bundled portrait on a 640×480 canvas), median of repeated calls; (2) a folder of
`count` images through `qface analyze --out results.csv` (what a user runs), wall clock including model loading.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from qface.analyzer import FaceAnalyzer
from qface.cli import SAMPLE_IMAGE


def photo_640x480() -> np.ndarray:
    canvas = Image.new("RGB", (640, 480), (90, 90, 90))
    canvas.paste(Image.open(SAMPLE_IMAGE).convert("RGB").resize((480, 480)), (80, 0))
    return np.asarray(canvas)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, default=Path("../shared/data/celeba/img_align_celeba"))
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    analyzer = FaceAnalyzer(detector="dlib-hog")
    photo = photo_640x480()
    analyzer.analyze(photo)  # warm-up: models load
    times, faces = [], 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        faces = len(analyzer.analyze(photo))
        times.append(time.perf_counter() - start)
    photo_s = float(np.median(times))
    print(f"model {analyzer.model.model_id}, detector dlib-hog, torch threads {args.threads}")
    print(
        f"640x480 photo: {photo_s * 1e3:.0f} ms for {faces} face(s) = {faces / photo_s:.1f} faces/s (median of "
        f"{args.repeats})"
    )
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "images"
        folder.mkdir()
        for path in sorted(args.folder.iterdir())[: args.count]:
            shutil.copy(path, folder / path.name)
        out = Path(scratch) / "results.csv"
        start = time.perf_counter()
        command = [
            sys.executable,
            "-m",
            "qface.cli",
            "analyze",
            str(folder),
            "--detector",
            "dlib-hog",
            "--out",
            str(out),
        ]
        code = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)}).returncode
        seconds = time.perf_counter() - start
        rows = list(csv.DictReader(out.open()))
    found = sum(1 for row in rows if row["face"] not in ("", None))
    print(
        f"folder of {args.count} images ({args.folder}): {seconds:.1f} s wall, exit {code}, {found} faces, "
        f"{found / seconds:.1f} faces/s, {args.count / seconds:.1f} images/s (model loading included)"
    )


if __name__ == "__main__":
    main()
