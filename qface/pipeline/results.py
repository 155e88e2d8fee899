"""Per-face results in the field's conventions (see DESIGN.md), all coordinates in original-image pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Face:
    box: list[float]  # [x1, y1, x2, y2], pixel edges clipped to the image (points and landmarks are not)
    score: float  # detection confidence in [0, 1]
    points: list[list[float]]  # 5 × [x, y]: left eye, right eye, nose tip, left / right mouth corner (image left)
    model: str  # name@version of the model that produced the outputs
    expression: dict[str, float] | None = None  # 8 probabilities, AffectNet order, summing to 1
    top_expression: str | None = None
    action_units: dict[str, float] | None = None  # AU01… → probability of occurrence
    attributes: dict[str, float] | None = None  # the 40 CelebA attributes → probability
    age: float | None = None  # years
    pose: dict[str, float] | None = None  # pitch, yaw, roll in degrees (DESIGN.md signs)
    landmarks: list[list[float]] | None = None  # 68 × [x, y], iBUG-300W order
    embedding: list[float] | None = None  # L2-normalised identity embedding
    # Kept for pictures, never serialised: the aligned chip, its chip → image affine, decoder attention maps.
    chip: np.ndarray | None = field(default=None, repr=False)
    chip_to_image: np.ndarray | None = field(default=None, repr=False)
    attention: dict[str, np.ndarray] | None = field(default=None, repr=False)  # task → (layers, labels, grid²)

    def to_dict(self) -> dict[str, Any]:
        hidden = ("chip", "chip_to_image", "attention")
        return {k: v for k, v in self.__dict__.items() if v is not None and k not in hidden}

    def flat(self) -> dict[str, Any]:
        """One level of keys, for CSV and DataFrames: `expression.happy`, `pose.yaw`, `box.x1`, `landmarks.17.x`."""
        row: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if key == "box":
                row.update(zip(("box.x1", "box.y1", "box.x2", "box.y2"), value))
            elif isinstance(value, dict):
                row.update({f"{key}.{name}": v for name, v in value.items()})
            elif key in ("points", "landmarks"):
                for i, (x, y) in enumerate(value):
                    row[f"{key}.{i}.x"], row[f"{key}.{i}.y"] = x, y
            elif key == "embedding":
                row.update({f"embedding.{i}": v for i, v in enumerate(value)})
            else:
                row[key] = value
        return row


def rounded(values, digits: int = 4) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()
