"""Per-face results in the field's conventions (see DESIGN.md), all coordinates in original-image pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Face:
    box: list[float]  # [x1, y1, x2, y2]
    score: float
    model: str  # name@version of the model that produced the outputs
    expression: dict[str, float] | None = None
    top_expression: str | None = None
    action_units: dict[str, float] | None = None
    attributes: dict[str, float] | None = None
    age: float | None = None
    pose: dict[str, float] | None = None  # pitch, yaw, roll in degrees
    landmarks: list[list[float]] | None = None  # 68 × [x, y], iBUG-300W order
    embedding: list[float] | None = None  # L2-normalised identity embedding
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != {}}


def rounded(values: np.ndarray, digits: int = 4) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()
