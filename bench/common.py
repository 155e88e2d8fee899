"""What several bench scripts share: the one-face test photo, interleaved timing, and the CPU's name."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from qface.resources import SAMPLE_IMAGE


def photo_640x480() -> np.ndarray:
    """The bundled portrait (512 px) resized to 480 px on a grey 640×480 canvas: one face, a webcam-size frame."""
    canvas = Image.new("RGB", (640, 480), (90, 90, 90))
    canvas.paste(Image.open(SAMPLE_IMAGE).convert("RGB").resize((480, 480)), (80, 0))
    return np.asarray(canvas)


def interleaved(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Each run returns one sample (a rate); all runs once untimed, then `repeats` rounds, the order reversed every
    other round so that neither side always follows the other."""
    for run in runs.values():
        run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            samples[name].append(runs[name]())
    return samples


def rate(work: Callable[[], int]) -> Callable[[], float]:
    """A run that does `work` (which returns how many items it did) and gives items per second."""

    def run() -> float:
        start = time.perf_counter()
        items = work()
        return items / (time.perf_counter() - start)

    return run


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
