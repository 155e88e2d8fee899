"""How well face tracks follow people: ID switches and IDF1 against known identities, and a test clip with known
identities made from face photos (people moving, two crossing, one leaving and coming back).

IDF1 (Ristani et al., 2016) is the F1 of detections carrying the right identity under the best one-to-one
mapping of true identities to track ids; an ID switch is a true identity matched to a different track than the
last time it was matched (CLEAR MOT).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.optimize import linear_sum_assignment

from qface.resources import require

Boxes = list[tuple[int, list[float]]]  # one frame: (identity or track id, [x1, y1, x2, y2])


def match_frames(truth: list[Boxes], predicted: list[Boxes]) -> list[list[tuple[int, int]]]:
    """Per frame, (true id, track id) pairs: one-to-one by least centre distance, a pair only when the centres are
    closer than half the true box's width."""
    frames = []
    for true, found in zip(truth, predicted, strict=True):
        pairs = []
        if true and found:
            distance = np.linalg.norm(_centres(true)[:, None] - _centres(found)[None], axis=2)
            widths = np.array([b[2] - b[0] for _, b in true])[:, None]
            cost = np.where(distance < widths / 2, distance, 1e9)
            for row, column in zip(*linear_sum_assignment(cost)):
                if cost[row, column] < 1e9:
                    pairs.append((true[row][0], found[column][0]))
        frames.append(pairs)
    return frames


def _centres(boxes: Boxes) -> np.ndarray:
    return np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2] for _, box in boxes])


def id_switches(matches: list[list[tuple[int, int]]]) -> int:
    last: dict[int, int] = {}
    switches = 0
    for pairs in matches:
        for true, track in pairs:
            switches += true in last and last[true] != track
            last[true] = track
    return switches


def idf1(matches: list[list[tuple[int, int]]], truth: list[Boxes], predicted: list[Boxes]) -> float:
    """2 · IDTP / (true detections + predicted detections), IDTP under the best identity → track mapping."""
    pairs = [pair for frame in matches for pair in frame]
    if not pairs:
        return 0.0
    trues = sorted({t for t, _ in pairs})
    tracks = sorted({k for _, k in pairs})
    counts = np.zeros((len(trues), len(tracks)))
    for true, track in pairs:
        counts[trues.index(true), tracks.index(track)] += 1
    rows, columns = linear_sum_assignment(-counts)
    total = sum(map(len, truth)) + sum(map(len, predicted))
    return float(2 * counts[rows, columns].sum() / total)


# ---------------------------------------------------------------------------------------------------------------
# A clip with known identities


@dataclass
class Walk:
    """One person: a face photo pasted from `start` to `end` (top-left corner, pixels) between two frames,
    absent in `away` frames (a range), pasted in list order (later ones in front)."""

    photo: np.ndarray
    start: tuple[float, float]
    end: tuple[float, float]
    away: range = range(0)
    scale: tuple[float, float] = (1.0, 1.0)


# The face inside a CelebA aligned photo (178 × 218): its box in the photo's pixels.
CELEBA_FACE_BOX = (45.0, 85.0, 133.0, 175.0)


def write_clip(
    path: Path,
    walks: list[Walk],
    frames: int = 60,
    size: tuple[int, int] = (640, 360),
    fps: float = 10.0,
    face_box: tuple[float, float, float, float] = CELEBA_FACE_BOX,
    noise: float = 4.0,
    seed: int = 0,
) -> list[Boxes]:
    """Write an mp4 of the walks on a textured background; return the true face boxes per frame (id = index in
    `walks`) of every face at least half visible. Photos are pasted through a soft elliptical mask; each frame
    gets fresh sensor-like noise."""
    cv2 = require("cv2", "video", "writing videos")
    random = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(60, 160, width)[None, :, None] * np.array([0.9, 1.0, 0.8])
    background = np.clip(ramp + random.normal(0, 12, (height, width, 3)), 0, 255)
    background = np.asarray(Image.fromarray(background.astype(np.uint8)).filter(ImageFilter.GaussianBlur(2)), float)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    truth = []
    try:
        for frame in range(frames):
            image, owner = background.copy(), np.full((height, width), -1)
            placed = []
            for number, walk in enumerate(walks):
                if frame in walk.away:
                    continue
                t = frame / max(frames - 1, 1)
                scale = walk.scale[0] + t * (walk.scale[1] - walk.scale[0])
                x, y = (round(a + t * (b - a)) for a, b in zip(walk.start, walk.end))
                photo = Image.fromarray(walk.photo)
                photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BILINEAR)
                alpha = _oval(photo.size)
                ys, xs = slice(max(y, 0), min(y + photo.height, height)), slice(max(x, 0), min(x + photo.width, width))
                inner = (slice(ys.start - y, ys.stop - y), slice(xs.start - x, xs.stop - x))
                a = alpha[inner][..., None]
                image[ys, xs] = a * np.asarray(photo, float)[inner] + (1 - a) * image[ys, xs]
                owner[ys, xs][alpha[inner] > 0.5] = number
                box = [corner + scale * edge for corner, edge in zip((x, y, x, y), face_box)]
                placed.append((number, box))
            truth.append([(n, box) for n, box in placed if _visible(owner, n, box) >= 0.5])
            noisy = np.clip(image + random.normal(0, noise, image.shape), 0, 255).astype(np.uint8)
            writer.write(np.ascontiguousarray(noisy[..., ::-1]))
    finally:
        writer.release()
    return truth


def _oval(size: tuple[int, int]) -> np.ndarray:
    mask = Image.new("L", size, 0)
    width, height = size
    ImageDraw.Draw(mask).ellipse([0.08 * width, 0.05 * height, 0.92 * width, 0.97 * height], fill=255)
    return np.asarray(mask.filter(ImageFilter.GaussianBlur(max(1, width // 30))), float) / 255


def _visible(owner: np.ndarray, number: int, box: list[float]) -> float:
    """The share of the face box whose top-most photo is this person's (outside the frame counts as hidden)."""
    x1, y1, x2, y2 = (round(v) for v in box)
    area = max((x2 - x1) * (y2 - y1), 1)
    return float(np.sum(owner[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] == number)) / area
