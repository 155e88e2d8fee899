"""Video: face tracks across frames, per-track smoothing and summaries, and a reader thread that keeps detection
running while the network works.

    tracker, smoother = FaceTracker(), Smoother(seconds=0.5)
    for frame in frames:                            # faces of one frame, frames in order
        tracker.update(frame.faces, frame.seconds)  # sets face.track
        smoother.update(frame.faces, frame.seconds) # smoothed values in place, the frame's own in face.raw

Why an association of our own and not a tracking library: on PyPI (checked 2026-11) norfair 2.3 requires
numpy < 2, bytetracker 0.3.2 pins torch 1.13, boxmot is AGPL and pulls torchvision and opencv-python, Roboflow's
trackers and supervision pull opencv-python (a second OpenCV), and motpy has had no release since 2021. None of
them uses the identity embedding every face already has, and that embedding is what keeps two people apart when
their boxes cross. What is left is small: a cost mixing box overlap and embedding distance, solved by the
Hungarian algorithm (scipy), and a buffer of lost tracks that a face can rejoin.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Full, Queue
from typing import Any, TypeVar

import numpy as np

from qface.pipeline.results import SAME_PERSON_THRESHOLD, Face
from qface.resources import require
from qface.tasks import TASKS, rounded

SMOOTHED_TASKS = ("expression", "action_units", "attributes", "age", "pose")  # their fields, per track
_FORBIDDEN = 1e6


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in `a` (N, 4) with every box in `b` (M, 4), [x1, y1, x2, y2]."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=2)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)


@dataclass
class _Track:
    id: int
    box: np.ndarray
    seconds: float  # when last seen
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # box change per second
    embedding: np.ndarray | None = None  # running mean of clean matches, L2-normalised

    def predicted(self, seconds: float) -> np.ndarray:
        return self.box + self.velocity * min(seconds - self.seconds, 1.0)  # constant velocity, at most 1 s ahead


class FaceTracker:
    """Gives each face a `track` id that stays with the same person across frames.

    Per frame, every kept track (seen within `max_lost_seconds`) is paired with at most one face by minimising
    the summed cost (1 − IoU of the track's predicted box and the face's box) + distance / `same_person` between
    the track's embedding and the face's. A pair is allowed when the embeddings say same person (distance below
    `same_person`, anywhere in the frame: a face that comes back after an occlusion or a detector miss rejoins
    its track), or when the boxes overlap (IoU ≥ `min_iou`) and the distance is below `max_distance` (a blurred
    or half-hidden face of the same person). Without embeddings (the identity task not run) overlap alone
    decides. A face left unpaired starts a new track; ids count from 1 in order of appearance."""

    def __init__(
        self,
        max_lost_seconds: float = 3.0,
        min_iou: float = 0.2,
        same_person: float = SAME_PERSON_THRESHOLD,
        max_distance: float = 0.65,
    ):
        self.max_lost_seconds, self.min_iou = max_lost_seconds, min_iou
        self.same_person, self.max_distance = same_person, max_distance
        self.tracks: list[_Track] = []
        self.next_id = 1

    def update(self, faces: list[Face], seconds: float) -> None:
        linear_sum_assignment = require("scipy.optimize", "video", "face tracks").linear_sum_assignment
        self.tracks = [t for t in self.tracks if seconds - t.seconds <= self.max_lost_seconds]
        embeddings = [_unit(face.embedding) for face in faces]
        cost = self._cost(faces, embeddings, seconds)
        paired: dict[int, _Track] = {}
        for row, column in zip(*linear_sum_assignment(cost)):
            if cost[row, column] < _FORBIDDEN:
                paired[column] = self.tracks[row]
        for column, (face, embedding) in enumerate(zip(faces, embeddings)):
            box = np.asarray(face.box, float)
            track = paired.get(column)
            if track is None:
                track = _Track(self.next_id, box, seconds, embedding=embedding)
                self.tracks.append(track)
                self.next_id += 1
            else:
                self._follow(track, box, embedding, seconds)
            face.track = track.id

    def _cost(self, faces: list[Face], embeddings: list[np.ndarray | None], seconds: float) -> np.ndarray:
        cost = np.full((len(self.tracks), len(faces)), _FORBIDDEN)
        if not self.tracks or not faces:
            return cost
        predicted = np.stack([track.predicted(seconds) for track in self.tracks])
        overlap = box_iou(predicted, [face.box for face in faces])
        for row, track in enumerate(self.tracks):
            for column, embedding in enumerate(embeddings):
                iou = overlap[row, column]
                if track.embedding is None or embedding is None:
                    if iou >= self.min_iou:
                        cost[row, column] = 1 - iou
                    continue
                distance = float(np.linalg.norm(track.embedding - embedding))
                if distance < self.same_person or (iou >= self.min_iou and distance < self.max_distance):
                    cost[row, column] = (1 - iou) + distance / self.same_person
        return cost

    def _follow(self, track: _Track, box: np.ndarray, embedding: np.ndarray | None, seconds: float) -> None:
        elapsed = seconds - track.seconds
        if 0 < elapsed <= 1.0:  # velocity from consecutive sightings only, smoothed
            track.velocity = 0.5 * track.velocity + 0.5 * (box - track.box) / elapsed
        elif elapsed > 1.0:
            track.velocity = np.zeros(4)
        track.box, track.seconds = box, seconds
        if embedding is not None:
            if track.embedding is None:
                track.embedding = embedding
            elif np.linalg.norm(track.embedding - embedding) < self.same_person:  # a clean view: learn from it
                track.embedding = _unit(0.8 * track.embedding + 0.2 * embedding)


def _unit(vector) -> np.ndarray | None:
    if vector is None:
        return None
    vector = np.asarray(vector, float)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


class Smoother:
    """Per-track exponential smoothing of probabilities (expression, action units, attributes), age and pose.

    Each value moves toward the frame's own by 1 − exp(−Δt / `seconds`), Δt the time since the track was last
    seen, so the smoothing means the same at any frame rate or stride; angles move along the shorter way round.
    The frame's own values are kept in `face.raw` (same keys as the face), `top_expression` follows the smoothed
    probabilities. Faces without a track are left as they are."""

    def __init__(self, seconds: float):
        if seconds <= 0:
            raise ValueError(f"the smoothing time must be positive, got {seconds}")
        self.seconds = seconds
        self.state: dict[int, tuple[float, dict[str, Any]]] = {}  # track → (last seen, smoothed values)

    def update(self, faces: list[Face], seconds: float) -> None:
        for face in faces:
            if face.track is None:
                continue
            fields = (f.name for task in SMOOTHED_TASKS for f in TASKS[task].fields)
            face.raw = {name: face.outputs[name] for name in fields if face.outputs.get(name) is not None}
            previous = self.state.get(face.track)
            weight = 1.0 if previous is None else 1 - math.exp(-max(seconds - previous[0], 0.0) / self.seconds)
            old = previous[1] if previous else {}
            smoothed = {
                name: _blend(old.get(name), value, weight, name == "pose")
                for name, value in face.raw.items()
                if name != "top_expression"
            }
            self.state[face.track] = (seconds, smoothed)
            face.outputs |= smoothed
            if face.expression:
                face.top_expression = max(face.expression, key=face.expression.get)


def _blend(old, new, weight: float, angles: bool):
    """old + weight · (new − old) for a number or a dict of numbers; angles by their wrapped difference."""
    if old is None:
        return new
    if isinstance(new, dict):
        return {key: _blend(old[key], value, weight, angles) for key, value in new.items()}
    step = (new - old + 180) % 360 - 180 if angles else new - old
    value = old + weight * step
    return round((value + 180) % 360 - 180 if angles else value, 4)


# ---------------------------------------------------------------------------------------------------------------
# Per-track summaries

POSE_LABELS = TASKS["pose"].labels
TRACK_COLUMNS = [
    "file", "track", "first_frame", "last_frame", "first_time", "last_time", "frames", "median_age",
    *(f"expression.{label}" for label in TASKS["expression"].labels), "top_expression",
    *(f"pose.{label}" for label in POSE_LABELS), "crop",
]  # fmt: skip


@dataclass
class TrackSummary:
    """One person in one video, from the frames' own (unsmoothed) values. `best` is the representative face:
    the most confident, most frontal sighting (detection score − (|yaw| + |pitch|) / 90)."""

    track: int
    first_frame: int
    first_time: float
    last_frame: int = 0
    last_time: float = 0.0
    frames: int = 0
    ages: list[float] = field(default_factory=list)
    expression_sum: np.ndarray | None = None
    pose_sum: np.ndarray | None = None
    best: Face | None = None
    best_quality: float = -math.inf

    def add(self, face: Face, frame: int, seconds: float) -> None:
        values = face.raw or {}
        age, expression, pose = (values.get(k, getattr(face, k)) for k in ("age", "expression", "pose"))
        self.last_frame, self.last_time, self.frames = frame, seconds, self.frames + 1
        if age is not None:
            self.ages.append(age)
        if expression is not None:
            self.expression_sum = _accumulate(self.expression_sum, list(expression.values()))
        if pose is not None:
            self.pose_sum = _accumulate(self.pose_sum, [pose[label] for label in POSE_LABELS])
        quality = face.score - (abs(pose["yaw"]) + abs(pose["pitch"])) / 90 if pose else face.score
        if quality > self.best_quality:
            self.best, self.best_quality = face, quality

    def row(self) -> dict[str, Any]:
        row = {
            "track": self.track,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "first_time": round(self.first_time, 3),
            "last_time": round(self.last_time, 3),
            "frames": self.frames,
        }
        if self.ages:
            row["median_age"] = round(float(np.median(self.ages)), 2)
        if self.expression_sum is not None:
            mean = self.expression_sum / self.frames
            labels = TASKS["expression"].labels
            row |= {f"expression.{label}": p for label, p in zip(labels, rounded(mean))}
            row["top_expression"] = labels[int(np.argmax(mean))]
        if self.pose_sum is not None:
            row |= {f"pose.{label}": v for label, v in zip(POSE_LABELS, rounded(self.pose_sum / self.frames, 2))}
        return row


def _accumulate(total: np.ndarray | None, values: list[float]) -> np.ndarray:
    return np.asarray(values, float) + (0 if total is None else total)


class TrackSummaries:
    """Summaries of every track of one video, fed frame by frame; memory grows with tracks and frames seen by a
    track (one age each), not with pixels: one face (with its chip) is kept per track."""

    def __init__(self):
        self.tracks: dict[int, TrackSummary] = {}

    def add(self, faces: list[Face], frame: int, seconds: float) -> None:
        for face in faces:
            if face.track is not None:
                summary = self.tracks.setdefault(face.track, TrackSummary(face.track, frame, seconds))
                summary.add(face, frame, seconds)

    def __iter__(self) -> Iterator[TrackSummary]:
        return iter(sorted(self.tracks.values(), key=lambda summary: summary.track))


# ---------------------------------------------------------------------------------------------------------------
# Pipelining

T = TypeVar("T")


@dataclass
class _Failed:
    error: BaseException


def prefetched(items: Iterable[T], size: int) -> Iterator[T]:
    """`items` computed by a worker thread, at most `size` ahead of the consumer, in order. The worker's work
    overlaps the consumer's wherever either releases the GIL (OpenCV decoding, dlib, YuNet and torch all do). An
    exception in the worker is raised in the consumer; closing the iterator stops the worker."""
    queue: Queue = Queue(maxsize=size)
    stop, done = threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def work() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(done)
        except BaseException as error:  # handed to the consumer, which raises it
            put(_Failed(error))
        finally:
            close = getattr(iterator, "close", None)
            if close:
                close()

    worker = threading.Thread(target=work, name="qface-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = queue.get()  # the worker always ends with `done` or a failure unless told to stop
            if item is done:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()


def frame_count(path) -> int:
    """The container's frame count (CAP_PROP_FRAME_COUNT; an estimate for some formats), 0 when unknown."""
    cv2 = require("cv2", "video", "reading videos")
    if not Path(path).is_file():  # a FIFO would block the decoder forever; read_video reports what it is
        return 0
    capture = cv2.VideoCapture(str(path))
    try:
        return max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0) if capture.isOpened() else 0
    finally:
        capture.release()
