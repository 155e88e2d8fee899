"""Label-aware augmentations: a horizontal flip must move the labels with the pixels.

Mirroring a face swaps its left and right landmarks (iBUG-68: the left eye's outer corner becomes the right eye's),
so flipped landmark arrays are re-indexed with FLIP_PERMUTATION as well as mirrored; yaw and roll change sign,
pitch does not. Expression, action units (bilateral codes), attributes, age and identity are unchanged.
"""

from __future__ import annotations

import numpy as np

from qface.data.base import LabelledFace
from qface.pipeline.align import CHIP_SIZE
from qface.tasks import POSE_ANGLES

# Left/right pairs of the 68 iBUG-300W points (0-indexed); the midline points (8, 27-30, 33, 51, 57, 62, 66) stay.
FLIP_PAIRS = (
    *((i, 16 - i) for i in range(8)),  # jaw 0↔16 … 7↔9
    *((17 + i, 26 - i) for i in range(5)),  # eyebrows 17↔26 … 21↔22
    (31, 35), (32, 34),  # nostrils
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),  # eyes
    (48, 54), (49, 53), (50, 52), (55, 59), (56, 58),  # outer lips
    (60, 64), (61, 63), (65, 67),  # inner lips
)  # fmt: skip


def _permutation(pairs, size: int = 68) -> np.ndarray:
    permutation = np.arange(size)
    for a, b in pairs:
        permutation[a], permutation[b] = b, a
    return permutation


# flipped[i] = original[FLIP_PERMUTATION[i]]; an involution (applying it twice is the identity).
FLIP_PERMUTATION = _permutation(FLIP_PAIRS)
POSE_NEGATED = [POSE_ANGLES.index("yaw"), POSE_ANGLES.index("roll")]  # the angles a mirror negates


def hflip_landmarks_normalised(points):
    """Mirror (..., 68, 2) landmarks in chip-normalised coordinates (chip pixel / CHIP_SIZE, pixel centres at
    integers, like the teacher's): pixel c → CHIP_SIZE − 1 − c, so x → (CHIP_SIZE − 1) / CHIP_SIZE − x; left/right
    swapped.
    Works on numpy arrays and torch tensors alike (a batch (B, 68, 2) as well as one face)."""
    flipped = points[..., FLIP_PERMUTATION, :]
    if isinstance(flipped, np.ndarray):
        flipped = flipped.copy()
    else:  # torch: advanced indexing already copied
        flipped = flipped.clone()
    flipped[..., 0] = (CHIP_SIZE - 1) / CHIP_SIZE - flipped[..., 0]
    return flipped


def hflip_landmark_mask(mask):
    """A (..., 68) per-landmark mask re-indexed like the points."""
    return mask[..., FLIP_PERMUTATION]


def hflip_pose(pose):
    """(..., 3) pitch, yaw, roll → the mirrored face's angles: yaw and roll negated, pitch kept (numpy or torch)."""
    flipped = pose * 1  # a copy, numpy or torch alike
    flipped[..., POSE_NEGATED] = -flipped[..., POSE_NEGATED]
    return flipped


def hflip(face: LabelledFace) -> LabelledFace:
    """A new LabelledFace with the image mirrored left-right and the geometric labels moved with it; the input is
    not modified. Landmarks are pixel coordinates with pixel centres at integers (dlib's and the teacher's
    convention): x → width − 1 − x."""
    labels = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in face.labels.items()}
    masks = {k: np.array(v, copy=True) for k, v in face.masks.items()}
    if "landmarks" in labels:
        points = np.asarray(face.labels["landmarks"], dtype=np.float32)[FLIP_PERMUTATION]
        points[:, 0] = face.image.shape[1] - 1 - points[:, 0]
        labels["landmarks"] = points
    if "landmarks" in masks:
        masks["landmarks"] = masks["landmarks"][FLIP_PERMUTATION]
    if "pose" in labels:
        labels["pose"] = hflip_pose(np.asarray(face.labels["pose"], dtype=np.float32))
    return LabelledFace(np.ascontiguousarray(face.image[:, ::-1]), labels, masks, dict(face.meta))
