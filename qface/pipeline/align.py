"""Alignment: a similarity warp of dlib's 5 points to the chip template the face backbone was trained on."""

from __future__ import annotations

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
    return AlignedFace(chip, _chip_transform(details))


def _chip_transform(details: dlib.chip_details) -> np.ndarray:
    """dlib samples the chip from `rect` rotated by `angle` about the rect's centre."""
    rect = details.rect
    scale = rect.width() / details.cols
    cos, sin = np.cos(details.angle) * scale, np.sin(details.angle) * scale
    center = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
    chip_center = np.array([(details.cols - 1) / 2, (details.rows - 1) / 2])
    linear = np.array([[cos, -sin], [sin, cos]])
    return np.hstack([linear, (center - linear @ chip_center)[:, None]])
