"""Per-face results in the field's conventions (see DESIGN.md), all coordinates in original-image pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qface.tasks import Task, flat_field, result_field

# Same person when the distance between L2-normalised identity embeddings is below this: chosen on balanced pairs
# of the CelebA training identities (96.7 % there, 96.4 % on the validation identities; weights/MODEL_CARD.md).
# dlib's descriptors have norm ~1.5, so its own rule (0.6 on raw descriptors) is 0.4 here.
SAME_PERSON_THRESHOLD = 0.43


@dataclass
class Face:
    """One face found in an image: where it is (box, score, 5 points) and every task's answer, in the conventions
    of DESIGN.md. A task's result fields (declared in qface.tasks: `expression`, `age`, `pose`, …) read as
    attributes (`face.age`; None when the task did not run) and live in `outputs`, in registry order.
    `to_dict()` is the JSON form, `flat()` one level of columns for CSV and DataFrames."""

    box: list[float]  # [x1, y1, x2, y2], pixel edges clipped to the image (points and landmarks are not)
    score: float  # detection confidence in [0, 1]
    points: list[list[float]]  # 5 × [x, y]: left eye, right eye, nose tip, left / right mouth corner (image left)
    model: str  # name@version of the model that produced the outputs
    outputs: dict[str, Any] = field(default_factory=dict)  # result field → value, from each task's `read`
    track: int | None = None  # video only: the same number for the same person across frames (pipeline/video.py)
    # Video with smoothing only: the frame's own values of the smoothed result fields (`outputs` holds the smoothed).
    raw: dict[str, Any] | None = None
    # Kept for pictures, never serialised: the aligned chip, its chip → image affine, decoder attention maps.
    chip: np.ndarray | None = field(default=None, repr=False)
    chip_to_image: np.ndarray | None = field(default=None, repr=False)
    attention: dict[str, np.ndarray] | None = field(default=None, repr=False)  # task → (layers, labels, grid²)

    def __getattr__(self, name: str) -> Any:
        """Only called for names that are not attributes: a task's result field."""
        if name != "outputs" and result_field(name) is not None:
            return self.outputs.get(name)
        raise AttributeError(f"'Face' has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if result_field(name) is not None:
            self.outputs[name] = value
        else:
            super().__setattr__(name, value)

    def answers(self, task: Task) -> bool:
        """Whether every result field of `task` is filled (it ran on this face)."""
        return all(self.outputs.get(f.name) is not None for f in task.fields)

    def to_dict(self) -> dict[str, Any]:
        where = {"box": self.box, "score": self.score, "points": self.points, "model": self.model}
        where |= {"track": self.track} if self.track is not None else {}
        outputs = {name: value for name, value in self.outputs.items() if value is not None}
        return where | outputs | ({"raw": self.raw} if self.raw else {})

    def flat(self) -> dict[str, Any]:
        """One level of keys, for CSV and DataFrames: `expression.happy`, `pose.yaw`, `box.x1`, `landmarks.17.x`."""
        row = dict(zip(("box.x1", "box.y1", "box.x2", "box.y2"), self.box))
        row |= {"score": self.score, "model": self.model} | flat_field("points", self.points)
        row |= {"track": self.track} if self.track is not None else {}
        for name, value in self.outputs.items():
            if value is not None:
                row |= flat_field(name, value)
        for name, value in (self.raw or {}).items():
            row |= flat_field(f"raw.{name}", value)
        return row
