"""Faces that are already crops: find the face's 5 points on the crop and align it exactly as the training chips.

The training chips (qface/data/chips.py) come from pre-cropped data sets through these very steps, so a user's
crop given with `--detector crop` reaches the network framed like the faces the model learned from — however it
was cropped (CelebA's 178×218, FER's 48×48, a loose or tight box of the user's own):

1. `prepare`: small crops are upscaled (bicubic) to DETECT_MIN_SIDE on their short side, and tight ones (short side
   under TIGHT_SIDE) get a black border, because dlib's HOG detector needs some context around a face;
2. dlib's HOG detector; of several boxes the one with the best score, penalised by its distance from the centre;
3. dlib's 5-point predictor on that box, else (nothing detected) on the whole crop: the crop *is* the face;
4. the chip is cut from the prepared image, where the points were found, and its affine mapped back to the crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import dlib
import numpy as np
from PIL import Image

from qface.pipeline.align import AlignedFace, align

# Tuned on a few hundred faces per data set (detection rate at margin 0 / ms per face): upscaling the short side to
# 150 px detects as many as 200 or 250 px at half the time (FER2013 ~75 %, CK+ 100 %, UTKFace ~99 %, CelebA ~98 %);
# a 30 % black border lifts FER2013's 48×48 crops to ~80 % (they cut the face's outline) and does not help the others.
DETECT_MIN_SIDE = 150
TIGHT_BORDER = 0.3  # black border, as a fraction of the (upscaled) short side, for tight crops
TIGHT_SIDE = 64  # crops with a shorter short side are taken to be tight (FER2013's 48×48)
DETECT_THRESHOLD = 0.0  # HOG-SVM margin; DlibHogDetector's default. Lower margins gave visibly worse chips on FER.
CENTRE_PENALTY = 2.0  # detection choice: score − CENTRE_PENALTY × (distance of box centre from image centre) / side


@dataclass
class Prepared:
    """An image readied for detection: `image = border + upscale(original)`; maps coordinates both ways."""

    image: np.ndarray
    scale: float
    border: int
    size: tuple[int, int]  # original (width, height)

    def to_original(self, affine: np.ndarray) -> np.ndarray:
        """A 2×3 affine into prepared pixels → the same into original pixels (pixel centres at integers)."""
        linear = affine[:, :2] / self.scale
        offset = (affine[:, 2] - self.border + 0.5) / self.scale - 0.5
        return np.hstack([linear, offset[:, None]])

    def points_to_original(self, points: np.ndarray) -> np.ndarray:
        return (points - self.border + 0.5) / self.scale - 0.5

    def normalise(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) prepared pixels → original image coordinates as fractions of width and height."""
        return ((points - self.border + 0.5) / self.scale) / np.asarray(self.size, np.float64)

    def denormalise(self, points: np.ndarray) -> np.ndarray:
        return points * np.asarray(self.size, np.float64) * self.scale + self.border - 0.5

    @property
    def crop_rectangle(self) -> dlib.rectangle:
        """The original crop inside the prepared image."""
        width, height = (round(side * self.scale) for side in self.size)
        return dlib.rectangle(self.border, self.border, self.border + width - 1, self.border + height - 1)


def prepare(image: np.ndarray, border: float | None = None) -> Prepared:
    """`border`: a fraction of the short side; None picks TIGHT_BORDER for tight crops, else none."""
    height, width = image.shape[:2]
    if border is None:
        border = TIGHT_BORDER if min(height, width) < TIGHT_SIDE else 0.0
    scale = max(1.0, DETECT_MIN_SIDE / min(height, width))
    if scale > 1.0:
        size = (round(width * scale), round(height * scale))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
        scale = size[0] / width
    pixels = round(border * min(image.shape[:2]))
    if pixels:
        image = np.pad(image, ((pixels, pixels), (pixels, pixels), (0, 0)))
    return Prepared(np.ascontiguousarray(image), scale, pixels, (width, height))


def margin_to_probability(margin: float) -> float:
    """dlib's unbounded SVM / MMOD margin → [0, 1] (0.5 at −1, 0.88 at the default threshold 0)."""
    return float(1.0 / (1.0 + np.exp(-2.0 * (margin + 1.0))))


def central_face(detector: dlib.fhog_object_detector, prepared: Prepared) -> tuple[dlib.rectangle, float] | None:
    """The HOG box most likely to be the crop's own face: best score, penalised by distance from the centre."""
    rects, margins, _ = detector.run(prepared.image, 0, DETECT_THRESHOLD)
    if not rects:
        return None
    height, width = prepared.image.shape[:2]
    centre, side = np.array([width, height]) / 2.0, min(width, height)

    def preference(k: int) -> float:
        rect = rects[k]
        box_centre = np.array([rect.left() + rect.right() + 1, rect.top() + rect.bottom() + 1]) / 2.0
        return margin_to_probability(margins[k]) - CENTRE_PENALTY * float(np.linalg.norm(box_centre - centre)) / side

    best = max(range(len(rects)), key=preference)
    return rects[best], margin_to_probability(margins[best])


@dataclass
class CropAlignment:
    aligned: AlignedFace  # chip, and chip_to_image into the *original* crop's pixels
    shape: dlib.full_object_detection  # the 5 points, in prepared pixels
    box: np.ndarray  # [x1, y1, x2, y2] in the original crop's pixels
    score: float  # the detection's score; 0 where nothing was detected and the whole crop was taken
    detected: bool


def align_crop(
    image: np.ndarray,
    detector: dlib.fhog_object_detector,
    predictor: dlib.shape_predictor,
    prepared: Prepared | None = None,
) -> CropAlignment:
    """The crop's face aligned like a training chip (steps 1-4 of the module docstring)."""
    prepared = prepared or prepare(image)
    found = central_face(detector, prepared)
    rect, score = found if found else (prepared.crop_rectangle, 0.0)
    shape = predictor(prepared.image, rect)
    aligned = align(prepared.image, shape)
    corners = np.array([[rect.left(), rect.top()], [rect.right() + 1, rect.bottom() + 1]], np.float64)
    box = ((corners - prepared.border) / prepared.scale).reshape(-1)
    return CropAlignment(
        AlignedFace(aligned.chip, prepared.to_original(aligned.chip_to_image)),
        shape,
        box.astype(np.float32),
        score,
        found is not None,
    )
