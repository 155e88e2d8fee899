"""Alignment: a similarity warp of dlib's 5 points to the chip template the face backbone was trained on."""

from __future__ import annotations

import math
from dataclasses import dataclass

import dlib
import numpy as np

CHIP_SIZE, CHIP_PADDING = 150, 0.25  # dlib's face-recognition chips: 150×150 with 25 % padding


@dataclass
class AlignedFace:
    chip: np.ndarray  # RGB uint8 (CHIP_SIZE, CHIP_SIZE, 3)
    chip_to_image: np.ndarray  # 2×3 affine: [x, y, 1] in the chip → pixels in the original image

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) chip pixel coordinates to original-image pixel coordinates."""
        return points @ self.chip_to_image[:, :2].T + self.chip_to_image[:, 2]


def align(image: np.ndarray, shape: dlib.full_object_detection) -> AlignedFace:
    details = dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING)
    chip = dlib.extract_image_chip(image, details)
    return AlignedFace(chip, chip_to_image_transform(details))


def chip_to_image_transform(details: dlib.chip_details) -> np.ndarray:
    """2×3 affine from chip pixel centres to image pixel centres, as dlib.extract_image_chip samples: chip (0, 0),
    (cols − 1, 0) and (cols − 1, rows − 1) land on the rect's corners rotated by `angle` about its centre."""
    rect = details.rect
    cos, sin = math.cos(details.angle), math.sin(details.angle)
    sx = (rect.right() - rect.left()) / max(1, details.cols - 1)
    sy = (rect.bottom() - rect.top()) / max(1, details.rows - 1)
    linear = np.array([[cos * sx, -sin * sy], [sin * sx, cos * sy]])
    centre = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
    chip_centre = np.array([(details.cols - 1) / 2, (details.rows - 1) / 2])
    return np.hstack([linear, (centre - linear @ chip_centre)[:, None]])
