"""Face detectors behind one small interface: image in, boxes + scores + dlib 5-point shapes out."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import dlib
import numpy as np

from qface.model.backbones.dlib_resnet import dlib_model_path


@dataclass
class Detection:
    box: np.ndarray  # [x1, y1, x2, y2] in image pixels
    score: float  # in [0, 1]
    shape: dlib.full_object_detection  # dlib's 5 points: the alignment input


class DlibHogDetector:
    """dlib's HOG + linear SVM frontal detector followed by dlib's 5-point shape predictor (both offline)."""

    name = "dlib-hog"

    def __init__(self, upsample: int = 1, threshold: float = 0.0):
        self.upsample, self.threshold = upsample, threshold

    @cached_property
    def _detector(self) -> dlib.fhog_object_detector:
        return dlib.get_frontal_face_detector()

    @cached_property
    def _landmarker(self) -> dlib.shape_predictor:
        return dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))

    def __call__(self, image: np.ndarray) -> list[Detection]:
        """image: RGB uint8 (H, W, 3)."""
        rects, scores, _ = self._detector.run(image, self.upsample, self.threshold)
        detections = []
        for rect, score in zip(rects, scores):
            box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float32)
            # The SVM margin is unbounded; a logistic squashes it to [0, 1] (0 at margin -2, 0.88 at margin 0).
            probability = float(1.0 / (1.0 + np.exp(-2.0 * (score + 1.0))))
            detections.append(Detection(box, probability, self._landmarker(image, rect)))
        return detections
