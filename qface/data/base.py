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

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
