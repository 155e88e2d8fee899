"""Aligned 150×150 chips of a data set, cached once, aligned exactly like the inference pipeline.

Every face goes through what FaceAnalyzer does to a photo (qface.pipeline, DlibHogDetector + align): dlib's HOG
frontal detector (margin threshold 0) → dlib's 5-point shape predictor → `dlib.get_face_chip_details(shape, 150,
0.25)` → `dlib.extract_image_chip`. The data sets are pre-cropped and small, so before detection an image is upscaled
(bicubic) to DETECT_MIN_SIDE on its short side and, for the tight 48×48 FER2013 crops, given a black border (which
changes nothing in the chip: dlib fills outside the image with black too). Of several detections the one with the
best score, penalised by its distance from the image centre, is taken.

Where nothing is detected the face is aligned with the data set's *mean shape*: the mean of the 5 points (in
normalised image coordinates) over the faces where detection worked, as if the predictor had found those points.
The crops of these data sets are themselves registered, so this is close to what dlib would do (`aligned_by`
records which one was used).

Cache, per data set (`cache/` is git-ignored; the images are research-only and never leave it):

    <out_root>/<dataset>/chips.npy    uint8 (N, 150, 150, 3), RGB, written through a memmap
    <out_root>/<dataset>/labels.npz   per task `<task>` and `<task>_mask` (expression int64 with -1 where absent,
                                      other tasks float32 with 0; masks bool, False where absent);
                                      `split`, `aligned_by` ("dlib" / "mean-shape"), `source` (str) and the meta
                                      fields present (subject, identity, fold, gender, race, sequence, frame);
                                      `score` (detection probability, NaN for mean-shape), `coverage` (fraction of
                                      the chip inside the source image) and `chip_to_image` (N, 2, 3): affine from
                                      chip pixels to source-image pixels
    <out_root>/<dataset>/info.json    settings, counts, detection rate, time, the mean shape

    python -m qface.data.chips fer2013 ckplus utkface celeba     # all four (the default), skipping finished ones
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from functools import cache
from pathlib import Path

import dlib
import numpy as np

from qface.data.datasets import DATASETS
from qface.data.registry import open_dataset
from qface.pipeline.align import CHIP_PADDING, CHIP_SIZE, align, chip_to_image_transform
from qface.pipeline.crop import (
    CENTRE_PENALTY,
    DETECT_MIN_SIDE,
    DETECT_THRESHOLD,
    TIGHT_BORDER,
    central_face,
    prepare,
)
from qface.resources import dlib_model_path
from qface.tasks import TASKS

DETECT_BORDER = {"fer2013": TIGHT_BORDER}  # per data set (CK+48 is as small as FER2013 but not as tight)
META_FIELDS = ("subject", "identity", "fold", "gender", "race", "sequence", "frame")
CACHE_VERSION = 1


def _shape_points(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


def _coverage(chip_to_image: np.ndarray, size: tuple[int, int], grid: int = 16) -> float:
    """Fraction of the chip whose source lies inside the original image (the rest is dlib's black fill)."""
    steps = (np.arange(grid) + 0.5) * CHIP_SIZE / grid - 0.5
    points = np.stack(np.meshgrid(steps, steps), -1).reshape(-1, 2) @ chip_to_image[:, :2].T + chip_to_image[:, 2]
    inside = (points >= -0.5).all(1) & (points[:, 0] <= size[0] - 0.5) & (points[:, 1] <= size[1] - 0.5)
    return float(inside.mean())


def chip_from_points(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Align with five given (sub-pixel) points as if dlib's predictor had found them: (chip, chip_to_image).

    dlib shapes hold integer points, so the chip geometry is computed on the points scaled ×1024 (it is
    similarity-equivariant) and scaled back, which keeps the mean shape's sub-pixel precision."""
    k = 1024.0
    scaled = dlib.points([dlib.point(round(x * k), round(y * k)) for x, y in points])
    box = dlib.rectangle(*(round(v * k) for v in (points[:, 0].min(), points[:, 1].min())),
                         *(round(v * k) for v in (points[:, 0].max(), points[:, 1].max())))  # fmt: skip
    details = dlib.get_face_chip_details(dlib.full_object_detection(box, scaled), CHIP_SIZE, CHIP_PADDING)
    rect = details.rect
    exact = dlib.chip_details(
        dlib.drectangle(rect.left() / k, rect.top() / k, rect.right() / k, rect.bottom() / k),
        dlib.chip_dims(details.rows, details.cols),
        details.angle,
    )
    return dlib.extract_image_chip(image, exact), chip_to_image_transform(exact)


@cache
def template_points() -> np.ndarray:
    """Where dlib's chip template puts the 5 points, as fractions of the chip: the fallback's fallback (a data set
    where nothing was detected is taken to be crops already framed like a chip)."""
    points = np.array([[100.0, 80.0], [70.0, 81.0], [20.0, 80.0], [50.0, 81.0], [60.0, 130.0]])
    _, chip_to_image = chip_from_points(np.zeros((200, 200, 3), np.uint8), points)
    linear, offset = chip_to_image[:, :2], chip_to_image[:, 2]
    in_chip = (points - offset) @ np.linalg.inv(linear).T
    return (in_chip + 0.5) / CHIP_SIZE


class Chipper:
    """One face image → (chip, chip_to_image, detection score, normalised 5 points) or None when not detected.

    DlibHogDetector's steps with dlib called directly (frontal detector, then the 5-point predictor on the chosen
    box only), so the cache depends on nothing but dlib and its model file."""

    def __init__(self, dataset: str):
        self.dataset = dataset
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))

    def detect(self, image: np.ndarray):
        prepared = prepare(image, DETECT_BORDER.get(self.dataset, 0.0))
        found = central_face(self.detector, prepared)
        if found is None:
            return None
        rect, score = found
        shape = self.predictor(prepared.image, rect)
        aligned = align(prepared.image, shape)
        chip_to_image = prepared.to_original(aligned.chip_to_image)
        return aligned.chip, chip_to_image, score, prepared.normalise(_shape_points(shape))

    def with_mean_shape(self, image: np.ndarray, mean_points: np.ndarray):
        prepared = prepare(image, DETECT_BORDER.get(self.dataset, 0.0))
        chip, chip_to_image = chip_from_points(prepared.image, prepared.denormalise(mean_points))
        return chip, prepared.to_original(chip_to_image)


_worker_chipper: Chipper | None = None


def _worker_init(dataset: str) -> None:
    global _worker_chipper
    _worker_chipper = Chipper(dataset)


def _worker_detect(image: np.ndarray):
    return _worker_chipper.detect(image)


def _detect_in_pool(adapter, dataset: str, workers: int, block: int = 256):
    """(face, detection) in order, detected by `workers` processes, a bounded block of faces at a time."""
    import multiprocessing

    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with context.Pool(workers, _worker_init, (dataset,)) as pool:
        faces = iter(adapter)
        while batch := list(itertools.islice(faces, block)):
            yield from zip(batch, pool.map(_worker_detect, [face.image for face in batch], chunksize=16))


def _label_arrays(records: list[tuple[dict, dict]]) -> dict[str, np.ndarray]:
    """Per-task `<task>` and `<task>_mask` arrays over all faces (tasks in registry order)."""
    present = {task for labels, masks in records for task in (*labels, *masks)}
    arrays: dict[str, np.ndarray] = {}
    for task in (name for name in TASKS if name in present):
        width = len(TASKS[task].labels)
        example = next(labels[task] for labels, _ in records if task in labels)
        if task == "expression":
            values = np.full(len(records), -1, np.int64)
        else:
            values = np.zeros((len(records), *np.shape(example)), np.float32)
        mask = np.zeros((len(records), width), bool)
        for i, (labels, masks) in enumerate(records):
            if task in labels:
                values[i] = labels[task]
                mask[i] = masks.get(task, True)
        arrays[task], arrays[f"{task}_mask"] = values, mask
    return arrays


def to_chip_frame(arrays: dict[str, np.ndarray], chip_to_image: np.ndarray) -> dict[str, np.ndarray]:
    """Adapters give landmarks in image pixels and roll in the image; the model sees levelled chips, so the cache
    holds landmarks as fractions of the chip (pixel centres at integers, like the teacher's) and roll relative to
    the chip. `chip_to_image`: (N, 2, 3). The analyzer maps both back (analyzer.py)."""
    arrays = dict(arrays)
    if "landmarks" in arrays:
        linear, offset = chip_to_image[:, :, :2], chip_to_image[:, :, 2]
        relative = arrays["landmarks"] - offset[:, None, :]
        arrays["landmarks"] = (np.einsum("nij,npj->npi", np.linalg.inv(linear), relative) / CHIP_SIZE).astype(
            np.float32
        )
    if "pose" in arrays:
        angle = np.degrees(np.arctan2(chip_to_image[:, 1, 0], chip_to_image[:, 0, 0]))
        arrays["pose"] = arrays["pose"].copy()
        arrays["pose"][:, 2] = (arrays["pose"][:, 2] - angle + 180) % 360 - 180
    return arrays


def _meta_arrays(metas: list[dict]) -> dict[str, np.ndarray]:
    arrays = {
        "split": np.array([m.get("split", "") for m in metas], dtype=str),
        "source": np.array([str(m.get("source", "")) for m in metas], dtype=str),
    }
    for field in META_FIELDS:
        values = [m.get(field) for m in metas]
        if all(v is None for v in values):
            continue
        if all(isinstance(v, int | np.integer) for v in values if v is not None):
            arrays[field] = np.array([-1 if v is None else v for v in values], np.int64)
        else:
            arrays[field] = np.array(["" if v is None else str(v) for v in values], dtype=str)
    return arrays


def _settings(dataset: str) -> dict:
    return {
        "version": CACHE_VERSION,
        "chip_size": CHIP_SIZE,
        "chip_padding": CHIP_PADDING,
        "detect_min_side": DETECT_MIN_SIDE,
        "detect_border": DETECT_BORDER.get(dataset, 0.0),
        "detect_threshold": DETECT_THRESHOLD,
        "centre_penalty": CENTRE_PENALTY,
    }


def build_chip_cache(
    dataset: str,
    out_root: str | Path = "cache/chips",
    limit: int | None = None,
    workers: int = 1,
    root: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Detect, align and cache every face of `dataset`; returns the summary also written to info.json.

    A finished cache with the same settings and size is kept (so a rerun resumes with the data sets still to do)
    unless `overwrite`. Files are written under temporary names and renamed at the end, so an interrupted run
    never leaves a cache that looks finished."""
    adapter = open_dataset(dataset, root, limit)
    folder = Path(out_root) / dataset
    info_path = folder / "info.json"
    count = len(adapter)
    if info_path.exists() and not overwrite:
        info = json.loads(info_path.read_text())
        if info.get("settings") == _settings(dataset) and info.get("count") == count and info.get("limit") == limit:
            if progress:
                print(f"{dataset}: cached already ({info_path}); pass overwrite=True / --overwrite to rebuild")
            return info
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("info.json", "labels.npz", "chips.npy"):
        (folder / name).unlink(missing_ok=True)

    start = time.time()
    chips_tmp = folder / "chips.partial.npy"
    chips = np.lib.format.open_memmap(chips_tmp, mode="w+", dtype=np.uint8, shape=(count, CHIP_SIZE, CHIP_SIZE, 3))
    transforms = np.zeros((count, 2, 3), np.float32)
    scores = np.full(count, np.nan, np.float32)
    coverage = np.zeros(count, np.float32)
    records, metas, sizes, found_points, pending = [], [], [], [], []
    chipper = Chipper(dataset)

    if workers > 1:
        stream = _detect_in_pool(adapter, dataset, workers)
    else:
        stream = ((face, chipper.detect(face.image)) for face in adapter)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count, desc=dataset, unit="face", mininterval=2.0, smoothing=0.05, file=sys.stderr)
    try:
        for i, (face, result) in enumerate(stream):
            records.append((face.labels, face.masks))
            metas.append(face.meta)
            sizes.append((face.image.shape[1], face.image.shape[0]))
            if result is None:
                pending.append((i, face.image))
            else:
                chip, chip_to_image, score, points = result
                chips[i], transforms[i], scores[i] = chip, chip_to_image, score
                found_points.append(points)
            if bar is not None:
                bar.update(1)
                if i % 200 == 0:
                    bar.set_postfix(dlib=f"{len(found_points) / (i + 1):.1%}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
        stream.close()
    if len(records) != count:
        raise RuntimeError(f"{dataset}: the adapter yielded {len(records)} faces, its len() said {count}")

    mean_points = np.mean(found_points, axis=0) if found_points else template_points()
    for i, image in pending:
        chips[i], transforms[i] = chipper.with_mean_shape(image, mean_points)
    for i in range(count):
        coverage[i] = _coverage(transforms[i].astype(np.float64), sizes[i])
    chips.flush()
    del chips

    labels = to_chip_frame(_label_arrays(records), transforms.astype(np.float64))
    aligned_by = np.full(count, "dlib", dtype="<U10")
    aligned_by[[i for i, _ in pending]] = "mean-shape"
    arrays = {
        **labels,
        **_meta_arrays(metas),
        "aligned_by": aligned_by,
        "score": scores,
        "coverage": coverage,
        "chip_to_image": transforms,
    }
    labels_tmp = folder / "labels.partial.npz"
    with open(labels_tmp, "wb") as stream_out:
        np.savez(stream_out, **arrays)
    os.replace(chips_tmp, folder / "chips.npy")
    os.replace(labels_tmp, folder / "labels.npz")

    seconds = time.time() - start
    detected = count - len(pending)
    info = {
        "dataset": dataset,
        "root": str(adapter.root),
        "limit": limit,
        "count": count,
        "detected": detected,
        "detection_rate": detected / count if count else math.nan,
        "mean_shape": len(pending),
        "seconds": round(seconds, 1),
        "ms_per_face": round(1000 * seconds / max(count, 1), 2),
        "splits": {s: int(n) for s, n in zip(*np.unique(arrays["split"], return_counts=True))},
        "mean_points": np.round(mean_points, 5).tolist(),
        "mean_coverage": float(coverage.mean()) if count else math.nan,
        "arrays": sorted(arrays),
        "settings": _settings(dataset),
    }
    info_path.write_text(json.dumps(info, indent=1) + "\n")
    if progress:
        print(
            f"{dataset}: {count} faces, detected by dlib {detected} ({info['detection_rate']:.1%}), "
            f"mean-shape {len(pending)}, {seconds:.0f} s ({info['ms_per_face']} ms/face) → {folder}",
            flush=True,
        )
    return info


def load_chip_cache(dataset: str, out_root: str | Path = "cache/chips") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(chips memmap (N, 150, 150, 3), label arrays) of a built cache."""
    folder = Path(out_root) / dataset
    chips = np.load(folder / "chips.npy", mmap_mode="r")
    with np.load(folder / "labels.npz") as labels:
        return chips, {name: labels[name] for name in labels.files}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qface.data.chips", description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="*", metavar="DATASET", help=f"any of {', '.join(DATASETS)} (default: all)")
    parser.add_argument("--out", default="cache/chips", help="cache root (default: cache/chips)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N faces of each data set")
    parser.add_argument("--workers", type=int, default=1, help="detection processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="rebuild caches that are already finished")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.datasets) - set(DATASETS))
    if unknown:
        parser.error(f"unknown data set(s) {unknown}; known: {list(DATASETS)}")
    summary = []
    for dataset in args.datasets or list(DATASETS):
        info = build_chip_cache(dataset, args.out, args.limit, args.workers, overwrite=args.overwrite)
        summary.append(info)
    print("\ndetection success (dlib; the rest aligned with the data set's mean shape):")
    for info in summary:
        print(
            f"  {info['dataset']:<8} {info['detected']:>6}/{info['count']:<6} {info['detection_rate']:6.1%}"
            f"   {info['seconds']:7.1f} s"
        )


if __name__ == "__main__":
    main()
