"""What every dataset adapter yields: a face image with a *partial* label dict and a mask per task.

Conventions (DESIGN.md, qface/tasks.py), identical for every adapter so the trainer never special-cases one:
- `image`: RGB uint8 (H, W, 3); grey sources are stacked to 3 channels.
- `labels[task]` / `masks[task]` for the tasks the dataset labels, masks shaped (number of labels of the task,):
    expression   label: int index into tasks.EXPRESSIONS          mask (8,): the classes this dataset can assign
    action_units label: float (19,) 0/1 in tasks.ACTION_UNITS order mask (19,): AUs this dataset codes
    attributes   label: float (40,) 0/1, CelebA order            mask (40,): attributes this dataset labels
    age          label: float years                              mask (1,)
    pose         label: float (3,) pitch, yaw, roll in degrees   mask (3,)
    landmarks    label: float (68, 2) x, y in image pixels       mask (68,)
- `meta`: everything else worth keeping: `split` ("train"/"val"/"test"), `subject` or `identity`, `source`
  (file or row id), subgroup labels for bias tables (`gender`, `race`), and `teacher` (a list of tasks whose labels
  come from a teacher model rather than humans — never evaluation ground truth).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass
class LabelledFace:
    image: np.ndarray
    labels: dict[str, Any] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def to_rgb(array: np.ndarray) -> np.ndarray:
    """Grey (H, W) or (H, W, 1) → (H, W, 3); RGBA → RGB; always uint8."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3].astype(np.uint8))


def chips_fingerprint(chips: np.ndarray, samples: int = 64) -> str:
    """sha256 of the array's shape and of `samples` evenly spaced chips: ties what is derived from a chip cache
    (teacher labels, features) to the chips it was made from, so a rebuilt cache is never paired with stale ones."""
    digest = hashlib.sha256(repr(chips.shape).encode())
    for i in np.unique(np.linspace(0, len(chips) - 1, min(samples, len(chips))).round().astype(int)):
        digest.update(np.ascontiguousarray(chips[i]).tobytes())
    return digest.hexdigest()


def read_image(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return to_rgb(np.asarray(image.convert("L") if image.mode in ("L", "I;16", "I", "1") else image.convert("RGB")))


def label_mask(names: tuple[str, ...] | list[str], keep: Callable[[str], bool]) -> np.ndarray:
    """The mask shared by every face of a data set: which of a task's labels it can assign."""
    return np.array([keep(name) for name in names], dtype=bool)


class Adapter:
    """Base: an iterable of LabelledFace over one data set; subclasses set `name`, `tasks` and `_items`.
    `root` defaults to ../shared/data/<name> beside the repository; `limit` keeps the first faces in file order."""

    name: str = ""
    tasks: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()  # the `split` values its faces can have

    def __init__(self, root: str | Path | None = None, limit: int | None = None):
        self.root = Path(root) if root is not None else SHARED_DATA / self.name
        self.limit = limit
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.name}: no data folder {self.root}")

    def _cap(self, count: int) -> int:
        return count if self.limit is None else min(count, self.limit)

    def __iter__(self) -> Iterator[LabelledFace]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, limit={self.limit})"
