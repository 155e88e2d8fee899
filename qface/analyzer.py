"""FaceAnalyzer: images → faces → aligned chips → one batched Q-Face pass → Face results.

    analyzer = FaceAnalyzer()                      # the bundled default model, detector "auto"
    faces = analyzer.analyze("photo.jpg")          # a path, bytes, PIL image or RGB array (bgr=True for OpenCV)
    batch = analyzer.analyze_batch([a, b, c])      # per input: its face list, or the error it raised

Every face of a batch of images goes through the network together, and one backbone pass serves every task.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qface.data.transforms import hflip_landmarks_normalised, hflip_pose
from qface.model.qface import QFace, QFaceConfig, QFaceOutput, precision_context
from qface.pipeline import io as image_io
from qface.pipeline.align import AlignedFace, align
from qface.pipeline.detect import DEFAULT_DETECTOR, Detection, get_detector
from qface.pipeline.io import ImageInput, check_pixels, check_regular_file, load_image
from qface.pipeline.results import SAME_PERSON_THRESHOLD, Face
from qface.resources import DEFAULT_WEIGHTS, require
from qface.tasks import TASKS, rounded


def load_model(weights: str | Path | None = None, device: str = "cpu") -> QFace:
    """The given weights folder, else the bundled default; with neither, an untrained model on the
    pretrained dlib backbone (its outputs are then labelled `@untrained`)."""
    check_device(device)
    folder = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if (folder / "config.json").exists():
        return QFace.load(folder, device)
    if weights is not None:
        raise FileNotFoundError(f"no config.json in {folder}")
    torch.manual_seed(0)
    return QFace(QFaceConfig()).to(device).eval()


BACKENDS = ("torch", "onnx", "onnx-int8")
MIRROR_IN_ONE_CALL = 4  # faces: up to this many, a face and its mirror image share one network call
INT8_FILE = "model-int8.onnx"  # a weights folder's int8 export (`qface export onnx FOLDER/model-int8.onnx --int8`)


def network(
    model: QFace,
    backend: str,
    onnx: str | Path | None = None,
    attention: bool = False,
    weights: str | Path | None = None,
):
    """What runs `model`'s forward pass: the model itself ("torch"), or onnxruntime on an ONNX export of it, which
    has no attention maps: "onnx" (`onnx`: the file; None: an fp32 export in qface.onnx's cache) or "onnx-int8"
    (`onnx`: the file; None: the weights folder's model-int8.onnx, which the bundled default ships)."""
    if backend == "torch":
        return model
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "onnx-int8" and onnx is None:
        onnx = Path(weights or DEFAULT_WEIGHTS) / INT8_FILE
        if not onnx.is_file():
            raise FileNotFoundError(f"{onnx}: no int8 export here; make one with `qface export onnx {onnx} --int8`")
    if attention:
        raise ValueError("attention maps are not in the ONNX graph: use backend='torch' for them")
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("the onnx backend runs on the CPU: use device='cpu'")
    from qface.onnx import OnnxModel

    return OnnxModel(model, onnx)


def check_device(device: str | torch.device) -> None:
    """A clear ValueError for a CUDA device this torch build or machine cannot give (torch's own error comes
    late and cryptic, from pin_memory or a lazy CUDA init)."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r}: CUDA is not available here (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda or 'none'}); use device='cpu'"
        )


def chips_to_tensor(chips: list[np.ndarray]) -> torch.Tensor:
    """RGB uint8 chips → (N, 3, H, W) floats in [0, 1] (QFace resizes to its backbone's input size)."""
    return torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() / 255.0


@dataclass
class VideoFrame:
    index: int
    seconds: float
    fps: float
    image: np.ndarray  # RGB
    faces: list[Face]


@dataclass
class _Pending:
    """A detected, aligned face waiting for its network pass."""

    image: int
    detection: Detection
    aligned: AlignedFace
    size: tuple[int, int]  # the image's (width, height): Face.box is clipped to it


class FaceAnalyzer:
    """Photos in, `Face`s out: detection, alignment and one batched network pass over every face found. Holds the
    model and the detector, so build one and reuse it (a detector is not thread-safe: one analyzer per thread)."""

    def __init__(
        self,
        weights: str | Path | None = None,
        tasks: list[str] | None = None,
        detector: str = DEFAULT_DETECTOR,
        device: str = "cpu",
        batch_size: int = 32,
        attention: bool = False,
        mirror: bool = True,
        precision: str = "fp32",
        backend: str = "torch",
        onnx: str | Path | None = None,
        **detector_options,
    ):
        """`attention=True` keeps each face's decoder cross-attention maps (Face.attention) for visualisation.
        `mirror=True` (the default) averages every answer with the mirrored face's: one more network pass per face
        (+19 % end to end on a 640×480 photo) for 2.6× steadier ages and expressions between a face and its mirror
        image (weights/MODEL_CARD.md); the identity embedding stays the plain face's (its threshold was calibrated
        on plain faces). The network's arithmetic: `precision="bf16"` (torch autocast), or `backend="onnx"` (an ONNX
        export in onnxruntime, `onnx`: its file, else one cached per weights digest; answers within 1e-4) or
        `backend="onnx-int8"` (`onnx`, else the weights folder's model-int8.onnx): faster, no attention maps.
        Speed and accuracy of each: bench/performance.md."""
        check_positive("batch_size", batch_size)
        precision_context(precision)  # an unknown precision fails here, not at the first face
        if backend != "torch" and precision != "fp32":
            raise ValueError(f"precision {precision!r} is for the torch backend (an int8 ONNX file is int8 itself)")
        model = load_model(weights, device)
        self.network = network(model, backend, onnx, attention, weights)  # ONNX files: keyed by unfolded weights
        self.model = model.fold_for_inference()
        self.tasks = self.model.task_names(tasks)
        self.detector = get_detector(detector, **detector_options)
        self.device, self.batch_size, self.keep_attention, self.mirror = device, batch_size, attention, mirror
        self.precision = precision

    def analyze(self, image: ImageInput, bgr: bool = False) -> list[Face]:
        """One image → its faces (none: an empty list). For several images use `analyze_batch`."""
        if isinstance(image, list | tuple):
            raise TypeError("analyze() takes one image; analyze_batch() takes a list of them")
        return self.analyze_arrays([load_image(image, bgr=bgr)])[0]

    def analyze_batch(self, images: Iterable[ImageInput], bgr: bool = False) -> list[list[Face] | Exception]:
        """Several images → one entry per image, in order: its face list (no face: an empty list), or, for an image
        that could not be read or analysed, the exception itself in its place, so that one bad file never loses the
        good ones (`[f for f in results if not isinstance(f, Exception)]`). Their faces share network batches.
        Only a wrong argument type (TypeError) raises for the whole batch."""
        return [faces for _, faces in self.analyze_files(list(images), bgr)]

    def analyze_arrays(self, images: list[np.ndarray], detectors: list | None = None) -> list[list[Face]]:
        """RGB uint8 arrays → faces per image; faces of all images share network batches. `detectors` (one per
        image, default: the analyzer's own) lets a server honour each request's choice within one batch."""
        detectors = detectors or [self.detector] * len(images)
        return self._analyze_detected([self._detect(image, d) for image, d in zip(images, detectors, strict=True)])

    def _detect(self, image: np.ndarray, detector=None) -> list[tuple[Detection, AlignedFace, tuple[int, int]]]:
        """(detection, aligned face, the image's width and height) for each face found in `image`."""
        found = (detector or self.detector)(image)
        size = image.shape[1::-1]
        return [(detection, detection.aligned or align(image, detection.shape), size) for detection in found]

    def _analyze_detected(self, found: list[list[tuple[Detection, AlignedFace, tuple[int, int]]]]) -> list[list[Face]]:
        """The network part: detected and aligned faces, per image → their Face results, per image."""
        pending = [_Pending(index, *face) for index, faces in enumerate(found) for face in faces]
        results: list[list[Face]] = [[] for _ in found]
        for start in range(0, len(pending), self.batch_size):
            part = pending[start : start + self.batch_size]
            for item, face in zip(part, self._run([p.aligned.chip for p in part], part)):
                results[item.image].append(face)
        return results

    def analyze_files(
        self, paths: list[ImageInput], bgr: bool = False
    ) -> list[tuple[np.ndarray | None, list[Face] | Exception]]:
        """Image files (or any ImageInput) → (decoded image, its faces) each, their faces sharing network batches.
        Whatever goes wrong with one file (undecodable, too many pixels, or a detector/alignment error) comes back
        as its exception in place of the faces, and the other files go on."""
        return self._analyze_found(self._find_faces(paths, bgr))

    def _find_faces(self, paths: list[ImageInput], bgr: bool) -> list[tuple[np.ndarray, list] | Exception]:
        """Decode and detect each file: (image, its detected and aligned faces), or the file's exception."""
        found: list[tuple[np.ndarray, list] | Exception] = []
        for path in paths:
            try:
                image = load_image(path, bgr=bgr)  # a wrong argument type (TypeError) raises for the whole call
            except (OSError, ValueError) as error:
                found.append(error)
                continue
            try:
                found.append((image, self._detect(image)))
            except Exception as error:  # the caller reports it as this file's error; the other files go on
                found.append(error)
        return found

    def _analyze_found(
        self, found: list[tuple[np.ndarray, list] | Exception]
    ) -> list[tuple[np.ndarray | None, list[Face] | Exception]]:
        """The network part of `analyze_files`; if one file's faces break the shared batch, the files are redone
        one at a time so that only that file is lost."""
        detected = [item for item in found if not isinstance(item, Exception)]
        try:
            faces = iter(self._analyze_detected([item[1] for item in detected]))
        except Exception:
            faces = iter([self._analyze_one_detected(item[1]) for item in detected])
        return [(None, item) if isinstance(item, Exception) else (item[0], next(faces)) for item in found]

    def _analyze_one_detected(self, found: list) -> list[Face] | Exception:
        try:
            return self._analyze_detected([found])[0]
        except Exception as error:  # the caller reports it as this file's error
            return error

    def analyze_video(
        self, path: str | Path, stride: int = 1, track: bool = True, smooth: float = 0.0
    ) -> Iterator[VideoFrame]:
        """Every `stride`-th frame with its faces, streamed. A worker thread decodes and detects while the network
        runs on the previous batch; a batch is at most `batch_size` frames and at most MAX_VIDEO_BATCH_PIXELS pixels
        (at least one frame), and at most 2 batches + 2 frames are held at once, so memory stays bounded however
        long the video and however large its frames. `track`: each face gets a `track` id (qface.pipeline.video);
        `smooth` > 0: probabilities, age and pose are smoothed per track with that time constant in seconds, the
        frame's own values kept in `face.raw`."""
        from qface.pipeline.video import FaceTracker, Smoother, prefetched

        check_positive("stride", stride)

        if smooth > 0 and not track:
            raise ValueError("smoothing is per track: it needs track=True")
        fps, frames = read_video(path)
        chosen = ((index, frame) for index, frame in frames if index % stride == 0)
        first = next(chosen)  # frame 0 (a video without frames raises here); its size sets the batch
        per_batch = max(1, min(self.batch_size, image_io.MAX_VIDEO_BATCH_PIXELS // first[1][..., 0].size))
        chosen = itertools.chain([first], chosen)
        detected = prefetched(((index, frame, self._detect(frame)) for index, frame in chosen), per_batch)
        tracker = FaceTracker() if track else None
        smoother = Smoother(smooth) if smooth > 0 else None
        batch = []
        for item in detected:
            batch.append(item)
            if len(batch) == per_batch:
                yield from self._video_batch(batch, fps, tracker, smoother)
                batch = []
        yield from self._video_batch(batch, fps, tracker, smoother)

    def _video_batch(self, batch: list, fps: float, tracker, smoother) -> Iterator[VideoFrame]:
        for (index, image, _), faces in zip(batch, self._analyze_detected([found for _, _, found in batch])):
            frame = VideoFrame(index, index / fps, fps, image, faces)
            if tracker:
                tracker.update(faces, frame.seconds)
            if smoother:
                smoother.update(faces, frame.seconds)
            yield frame

    @staticmethod
    def compare(a: Face, b: Face, threshold: float = SAME_PERSON_THRESHOLD) -> dict[str, float | bool]:
        """Verification: Euclidean distance of the two identity embeddings and the same-person call."""
        if a.embedding is None or b.embedding is None:
            raise ValueError("both faces need an identity embedding (analyze with the identity task)")
        distance = float(np.linalg.norm(np.asarray(a.embedding) - np.asarray(b.embedding)))
        return {"distance": round(distance, 4), "same_person": distance < threshold, "threshold": threshold}

    @torch.inference_mode()
    def _run(self, chips: list[np.ndarray], part: list[_Pending]) -> list[Face]:
        images = chips_to_tensor(chips).to(self.device)
        with precision_context(self.precision, self.device):
            output, mirrored = self._network_pass(images)
        decoded = output.decoded(identity="identity" in self.tasks)
        if mirrored:
            decoded = average_with_mirror(decoded, mirrored.decoded(identity=False))
        decoded = {task: {k: v.float().cpu() for k, v in values.items()} for task, values in decoded.items()}
        attention = [layer[: len(chips)].cpu() for layer in output.attention]
        faces = []
        for i, item in enumerate(part):
            face = self._face(item, {task: {k: v[i] for k, v in values.items()} for task, values in decoded.items()})
            if self.keep_attention and attention:
                face.attention = {
                    name: torch.stack([layer[i, rows] for layer in attention]).numpy()
                    for name, rows in output.query_slices.items()
                }
            faces.append(face)
        return faces

    def _network_pass(self, images: torch.Tensor) -> tuple[QFaceOutput, QFaceOutput | None]:
        """The network's output for the faces and, with the mirror on, for their mirror images. Up to
        MIRROR_IN_ONE_CALL faces both go through one call: a call's fixed cost outweighs the identity copy's work on
        the mirrored half (19.4 vs 22.9 ms for one face). For more faces the mirror pass runs alone and skips the
        identity copy, whose embedding is never used (bench/performance.md)."""
        if not self.mirror:
            return self.network(images, self.tasks), None
        if len(images) <= MIRROR_IN_ONE_CALL:
            both = self.network(torch.cat([images, images.flip(-1)]), self.tasks)
            return both.rows(slice(0, len(images))), both.rows(slice(len(images), None))
        mirror_tasks = [task for task in self.tasks if task != "identity"]  # the embedding stays the plain face's
        return self.network(images, self.tasks), self.network(images.flip(-1), mirror_tasks)

    def _face(self, item: _Pending, out: dict[str, dict[str, torch.Tensor]]) -> Face:
        detection, aligned = item.detection, item.aligned
        face = Face(
            box=rounded(np.clip(detection.box, 0, np.tile(item.size, 2)), 2),  # a face cut by the border
            score=round(float(detection.score), 4),
            points=rounded(detection.points, 2),
            model=self.model.model_id,
            chip=aligned.chip,
            chip_to_image=aligned.chip_to_image,
        )
        for name, decoded in out.items():
            face.outputs |= TASKS[name].read({key: value.numpy() for key, value in decoded.items()}, aligned)
        return face


def average_with_mirror(
    plain: dict[str, dict[str, torch.Tensor]], mirrored: dict[str, dict[str, torch.Tensor]]
) -> dict[str, dict[str, torch.Tensor]]:
    """Decoded outputs of faces and of their mirror images → their average, the mirror's geometry mapped back
    (yaw and roll negated, landmarks mirrored and re-indexed left↔right). The identity embedding stays the plain
    face's: the same-person threshold was calibrated on plain faces."""
    unmirror = {"pose": {"degrees": hflip_pose}, "landmarks": {"points": hflip_landmarks_normalised}}
    averaged = {}
    for task, values in plain.items():
        if task not in mirrored or task == "identity":
            averaged[task] = values
            continue
        averaged[task] = {
            key: (value + unmirror.get(task, {}).get(key, lambda x: x)(mirrored[task][key])) / 2
            for key, value in values.items()
        }
    return averaged


def check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def read_video(path: str | Path) -> tuple[float, Iterator[tuple[int, np.ndarray]]]:
    """(frames per second, a generator of (index, RGB frame)); OpenCV decodes. Frames over io.MAX_PIXELS are
    refused from the container's frame size before any is decoded (and each decoded frame is checked again, in
    case the container understates it); a video that opens but yields no frame raises ValueError."""
    cv2 = require("cv2", "video", "reading videos")
    check_regular_file(path)  # a FIFO would block the decoder forever
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: cannot open as a video")
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    try:
        check_pixels(size, image_io.MAX_PIXELS, f"{path}: video frame")
    except ValueError:
        capture.release()
        raise
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        index = 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                check_pixels(frame.shape[1::-1], image_io.MAX_PIXELS, f"{path}: video frame {index}")
                yield index, np.ascontiguousarray(frame[..., ::-1])
                index += 1
        finally:
            capture.release()
        if index == 0:
            raise ValueError(f"{path}: opens as a video but no frame could be decoded")

    return fps, frames()


def to_dataframe(results: list[list[Face] | Exception], sources: list[str] | None = None):
    """One row per face (flattened columns, e.g. `expression.happy`, `pose.yaw`), and one row with an `error`
    column for each input that failed; needs pandas."""
    pd = require("pandas", "dataframe", "to_dataframe")
    rows = []
    for index, faces in enumerate(results):
        source = sources[index] if sources else index
        if isinstance(faces, Exception):
            rows.append({"source": source, "error": f"{type(faces).__name__}: {faces}"})
            continue
        for number, face in enumerate(faces):
            rows.append({"source": source, "face": number, **face.flat()})
    return pd.DataFrame(rows)
