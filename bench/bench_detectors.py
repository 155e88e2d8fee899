"""Detection rate, speed and landmark agreement of qface's face detectors on real and synthetic images.

    python bench/bench_detectors.py [--n 300] [--cnn-n 300] [--yunet PATH] [--out bench/detectors.md]
    python bench/bench_detectors.py --fit-template [--n 300]     # re-measure detect.FIVE_POINT_TEMPLATE
    python bench/bench_detectors.py --fit-box [--n 300]          # re-measure LibFaceDetectionDetector.HOG_BOX
    python bench/bench_detectors.py --only libfacedetection      # its rows and dlib-hog's default

Needs ../shared (CelebA img_align_celeba, UTKFace, models/yunet_s_640_640.onnx) beside the repository.

Sets (fixed seeds, so the numbers reproduce):
- celeba, utkface: N images drawn at random (seed 0) from each; one face each. "found" = at least one detection
  whose box centre lies in the middle half of the image; "extra" = other detections per image.
- astronaut: qface/assets/astronaut.png (one face).
- group: 12 CelebA images (not from the sample) tiled 4 × 3 at scales 0.5 to 1.6 on a grey canvas; a face counts
  when a detection's centre falls in the central 60 % of its tile; detections on no tile are false positives.
- tiny: 24 CelebA images shrunk so the face (about half the image width) is 24 to 40 px wide, on a 960 × 720
  canvas; scored as group.
- photo: the astronaut resized to 480 px on a grey 640 × 480 canvas (bench/common.py's one-face photo);
  median of 20 calls (3 for dlib-cnn).
Time = wall clock of `detector(image)` (detection + landmarks + mapping), median over the images after one warm-up,
image decoding excluded. "order ok": fraction of found faces with left-eye x < right-eye x, left mouth x < right
mouth x and eyes above nose above mouth, on the images and on their mirror images. Alignment: chips of each detector
against dlib-hog's. Landmarks: our 5 points against MediaPipe Face Landmarker's (needs mediapipe and
../shared/models/face_landmarker.task; skipped otherwise).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import dlib
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import cpu_name, photo_640x480  # noqa: E402

from qface.pipeline.align import align  # noqa: E402
from qface.pipeline.detect import (  # noqa: E402
    DLIB5_TEMPLATE,
    get_detector,
    shape_points,
    similarity_transform,
)
from qface.pipeline.io import load_image  # noqa: E402

SHARED = ROOT.parent / "shared"
CELEBA = SHARED / "data/celeba/img_align_celeba"
UTKFACE = SHARED / "data/utkface/UTKFace"
YUNET = SHARED / "models/yunet_s_640_640.onnx"
ASTRONAUT = ROOT / "qface/assets/astronaut.png"


def sample(folder: Path, n: int, seed: int = 0, skip: int = 0) -> list[Path]:
    files = sorted(folder.glob("*.jpg"))
    random.Random(seed).shuffle(files)
    return files[skip : skip + n]


def place(canvas_size: tuple[int, int], images: list[np.ndarray], grid: tuple[int, int], scales: list[float],
          seed: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:  # fmt: skip
    """Paste images scaled by `scales` into the cells of a grid (jittered); returns canvas and pasted rectangles."""
    width, height = canvas_size
    canvas = np.full((height, width, 3), 128, np.uint8)
    cols, rows = grid
    cell_w, cell_h = width // cols, height // rows
    rng = random.Random(seed)
    rects = []
    for i, (image, scale) in enumerate(zip(images, scales)):
        h, w = image.shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
        cx, cy = (i % cols) * cell_w, (i // cols) * cell_h
        x = cx + rng.randint(0, max(0, cell_w - size[0]))
        y = cy + rng.randint(0, max(0, cell_h - size[1]))
        canvas[y : y + size[1], x : x + size[0]] = small[: height - y, : width - x]
        rects.append((x, y, x + size[0], y + size[1]))
    return canvas, rects


def group_photo(files: list[Path]) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    scales = list(np.linspace(0.5, 1.6, 12))
    random.Random(1).shuffle(scales)
    return place((1200, 1050), [load_image(f) for f in files[:12]], (4, 3), scales, seed=2)


def tiny_faces(files: list[Path]) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    # a CelebA face is about half the image width (dlib boxes: ~90 of 178 px), so width w needs scale 2w / 178
    widths = np.linspace(24, 40, 24)
    return place((960, 720), [load_image(f) for f in files[:24]], (6, 4), [2 * w / 178 for w in widths], seed=3)


def match(detections, rects: list[tuple[int, int, int, int]], inner: float = 0.6) -> tuple[int, int]:
    """(true positives, false positives): a detection hits a rect when its centre is in the rect's central part."""
    hit, false = set(), 0
    for d in detections:
        cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
        for i, (x1, y1, x2, y2) in enumerate(rects):
            mx, my = (x2 - x1) * (1 - inner) / 2, (y2 - y1) * (1 - inner) / 2
            if i not in hit and x1 + mx <= cx <= x2 - mx and y1 + my <= cy <= y2 - my:
                hit.add(i)
                break
        else:
            false += 1
    return len(hit), false


def timed(detector, image: np.ndarray):
    start = time.perf_counter()
    found = detector(image)
    return found, (time.perf_counter() - start) * 1000


def upright_ok(points: np.ndarray) -> bool:
    eyes_y, nose_y, mouth_y = points[:2, 1].mean(), points[2, 1], points[3:, 1].mean()
    return bool(points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0] and eyes_y < nose_y < mouth_y)


def run_dataset(detector, files: list[Path]) -> dict:
    images = [load_image(f) for f in files]
    detector(images[0])  # warm-up: loads the models
    found, extra, order, times, best = 0, 0, [], [], []
    for image in images:
        h, w = image.shape[:2]
        detections, ms = timed(detector, image)
        times.append(ms)
        central = [d for d in detections if w / 4 <= (d.box[0] + d.box[2]) / 2 <= 3 * w / 4
                   and h / 4 <= (d.box[1] + d.box[3]) / 2 <= 3 * h / 4]  # fmt: skip
        found += bool(central)
        extra += len(detections) - bool(central)
        best.append(central[0] if central else None)
        if central:
            order.append(upright_ok(central[0].points))
            mirrored = detector(np.ascontiguousarray(image[:, ::-1]))
            if mirrored:
                order.append(upright_ok(mirrored[0].points))
    return {"n": len(images), "found": found, "extra": extra, "ms": statistics.median(times),
            "order": float(np.mean(order)) if order else float("nan"), "best": best}  # fmt: skip


def to_chip_frame(shape: dlib.full_object_detection, points: np.ndarray) -> np.ndarray:
    """Points in dlib's 5-point chip frame (FIVE_POINT_TEMPLATE's frame) of the face with this dlib shape."""
    chip_to_image = similarity_transform(DLIB5_TEMPLATE, shape_points(shape))
    linear, offset = chip_to_image[:, :2], chip_to_image[:, 2]
    return (np.asarray(points, np.float64) - offset) @ np.linalg.inv(linear).T


def fit_box(n: int) -> None:
    """Print LibFaceDetectionDetector.HOG_BOX: dlib-hog's box centre offset (fractions of the libfacedetection box's
    width and height) and side (fraction of its width), mean over faces both find."""
    hog, lfd = get_detector("dlib-hog"), get_detector("libfacedetection")
    rows = []
    for folder in (CELEBA, UTKFACE):
        for file in sample(folder, n):
            image = load_image(file)
            a, b = hog(image), lfd(image)
            if a and b:
                (x1, y1, x2, y2), (u1, v1, u2, v2) = a[0].box, b[0].box
                w, h = u2 - u1, v2 - v1
                rows.append([((x1 + x2) - (u1 + u2)) / 2 / w, ((y1 + y2) - (v1 + v2)) / 2 / h, (x2 - x1) / w])
    print(f"HOG_BOX ({len(rows)} faces): mean {np.round(np.mean(rows, 0), 3)}, sd {np.round(np.std(rows, 0), 3)}")


def fit_template(n: int, yunet: Path) -> None:
    """Print detect.FIVE_POINT_TEMPLATE (our 5 points from dlib's 68, in dlib's 5-point chip frame), BOX_TEMPLATE
    (dlib-hog's box in that frame) and, for information, where YuNet's own points fall, over faces both find."""
    hog = get_detector("dlib-hog")
    net = get_detector("yunet", model=yunet, landmarks="yunet")
    frames = {"FIVE_POINT_TEMPLATE (dlib 68)": [], "BOX_TEMPLATE (dlib-hog box corners)": [], "yunet's own": []}
    for folder in (CELEBA, UTKFACE):
        for file in sample(folder, n):
            image = load_image(file)
            a, b = hog(image), net(image)
            if a and b:
                frames["FIVE_POINT_TEMPLATE (dlib 68)"].append(to_chip_frame(a[0].shape, a[0].points))
                frames["BOX_TEMPLATE (dlib-hog box corners)"].append(to_chip_frame(a[0].shape, a[0].box.reshape(2, 2)))
                frames["yunet's own"].append(to_chip_frame(a[0].shape, b[0].points))
    for name, values in frames.items():
        mean = np.mean(values, 0)
        print(f"{name} ({len(values)} faces): mean\n{np.array2string(mean, precision=2, separator=', ')}"
              f"\n  sd {np.array2string(np.std(values, 0), precision=2, separator=', ')}")  # fmt: skip


def chip_agreement(hog_best, other_best, images) -> tuple[float, float]:
    """Mean displacement (chip px) of the chip corners and centre, and mean |pixel difference| (0..255), between
    chips aligned by dlib-hog's detections and another detector's, on faces both found."""
    moves, diffs = [], []
    probe = np.array([[0, 0], [149, 0], [0, 149], [149, 149], [74.5, 74.5]])
    for a, b, image in zip(hog_best, other_best, images):
        if a is None or b is None:
            continue
        ca, cb = align(image, a.shape), align(image, b.shape)
        moves.append(np.linalg.norm(ca.to_image(probe) - cb.to_image(probe), axis=1).mean()
                     / np.linalg.norm(ca.chip_to_image[:, 0]))  # fmt: skip
        diffs.append(np.abs(ca.chip.astype(float) - cb.chip.astype(float)).mean())
    return float(np.mean(moves)), float(np.mean(diffs))


def landmark_table(sets: dict, images: dict, yunet: Path) -> list[str]:
    """Our 5 points from each detector against MediaPipe Face Landmarker's (its 478-point mesh mapped to the 68
    iBUG points by qface.teacher, then to our 5 as for dlib's 68): mean distance / inter-ocular distance."""
    try:
        from qface.teacher import MediaPipeTeacher

        teacher = MediaPipeTeacher(SHARED / "models/face_landmarker.task")
    except (ImportError, FileNotFoundError) as error:
        return ["", f"(Landmark comparison skipped: {error})"]
    from qface.pipeline.detect import points_from_dlib68

    variants = [
        ("dlib-hog", {}, 'landmarks="68" (default)'),
        ("dlib-hog", {"landmarks": "5"}, 'landmarks="5"'),
        ("dlib-cnn", {}, 'landmarks="68" (default)'),
        ("yunet", {"model": yunet}, 'landmarks="68" (default)'),
        ("yunet", {"model": yunet, "landmarks": "yunet"}, 'landmarks="yunet" (its own)'),
        ("libfacedetection", {}, 'landmarks="68" (default)'),
    ]
    lines = ["", "Landmarks: our 5 points vs MediaPipe Face Landmarker's (mesh → iBUG 68 → our 5, the same eye-centre "
             "definition as from dlib's 68), mean distance / inter-ocular distance (NME), faces found by both:", "",
             "| detector | points | CelebA NME | UTKFace NME |", "|---|---|---|---|"]  # fmt: skip
    with teacher:
        references = {}
        for set_name, set_images in images.items():
            references[set_name] = []
            for image in set_images:
                label = teacher(image)
                references[set_name].append(None if label is None else points_from_dlib68(label.landmarks))
        for name, options, note in variants:
            detector = get_detector(name, **options)
            cells = []
            for set_name, set_images in images.items():
                count = 60 if name == "dlib-cnn" else len(set_images)
                errors = []
                for image, reference in zip(set_images[:count], references[set_name][:count]):
                    found = detector(image) if reference is not None else []
                    if found:
                        iod = np.linalg.norm(reference[0] - reference[1])
                        errors.append(np.linalg.norm(found[0].points - reference, axis=1).mean() / iod)
                cells.append(f"{np.mean(errors):.3f} (n={len(errors)})")
            lines.append(f"| {name} | {note} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300, help="images per data set")
    parser.add_argument("--cnn-n", type=int, default=None, help="images per data set for dlib-cnn (slow)")
    parser.add_argument("--yunet", type=Path, default=YUNET)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    parser.add_argument("--fit-template", action="store_true")
    parser.add_argument("--fit-box", action="store_true")
    parser.add_argument("--only", help="only this detector's rows (and dlib-hog's default, the reference)")
    args = parser.parse_args()
    if args.fit_template:
        fit_template(args.n, args.yunet)
        return
    if args.fit_box:
        fit_box(args.n)
        return
    configs = [
        ("dlib-hog", {}, "upsample 1, margin ≥ 0 (default)"),
        ("dlib-hog", {"upsample": 0}, "upsample 0"),
        ("dlib-cnn", {}, "upsample 0 (default)"),
        ("dlib-cnn", {"upsample": 1}, "upsample 1"),
        ("yunet", {"model": args.yunet}, "score ≥ 0.6 (default)"),
        ("libfacedetection", {}, "score ≥ 0.6 (default)"),
        ("libfacedetection", {"max_side": 480}, "detected at ≤ 480 px"),
        ("libfacedetection", {"max_side": 320}, "detected at ≤ 320 px"),
    ]
    if args.only:  # dlib-hog stays: the alignment table measures every detector against its chips
        configs = [c for c in configs if c[0] in ("dlib-hog", args.only) and (c[0] == args.only or not c[1])]
    load_before = os.getloadavg()[0]
    group_img, group_rects = group_photo(sample(CELEBA, 12, skip=args.n))
    tiny_img, tiny_rects = tiny_faces(sample(CELEBA, 24, skip=args.n + 12))
    astronaut = load_image(ASTRONAUT)
    photo = photo_640x480()
    sets = {"celeba": sample(CELEBA, args.n), "utkface": sample(UTKFACE, args.n)}
    rows, bests = [], {}
    for name, options, note in configs:
        detector = get_detector(name, **options)
        row = {"name": name, "note": note}
        slow = name == "dlib-cnn"
        for set_name, files in sets.items():
            if slow and options.get("upsample", 0) > 0:
                continue  # upsample 1 costs ~2 s per CelebA image; measured on the synthetic sets only
            count = args.cnn_n if slow and args.cnn_n is not None else len(files)
            result = run_dataset(detector, files[:count])
            row[set_name] = result
            bests[(name, note, set_name)] = result.pop("best")
            print(name, note, set_name, {k: v for k, v in result.items()}, flush=True)
        for set_name, image, rects in (("astronaut", astronaut, [(150, 40, 290, 200)]),
                                       ("group", group_img, group_rects), ("tiny", tiny_img, tiny_rects)):  # fmt: skip
            detector(image)
            detections, ms = timed(detector, image)
            tp, fp = match(detections, rects)
            row[set_name] = {"tp": tp, "fp": fp, "of": len(rects), "ms": ms}
            print(name, note, set_name, row[set_name], flush=True)
        times = [timed(detector, photo)[1] for _ in range(3 if slow else 20)]
        row["photo"] = {"faces": len(detector(photo)), "ms": statistics.median(times)}
        print(name, note, "photo", row["photo"], flush=True)
        rows.append(row)
    lines = [
        f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()}, dlib {dlib.__version__}, "
        f"numbers from `python bench/bench_detectors.py --n {args.n}"
        + (f" --cnn-n {args.cnn_n}`" if args.cnn_n else "`")
        + f"; load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} after the detection table",
        "",
        "| detector | settings | CelebA found | CelebA extra | CelebA ms | UTKFace found | UTKFace extra | UTKFace ms "
        "| order ok | astronaut (1 face) | group (12 faces) | tiny 24–40 px (24 faces) | photo 640×480 (1 face) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row["name"], row["note"]]
        for set_name in ("celeba", "utkface"):
            r = row.get(set_name)
            cells += [f"{r['found']}/{r['n']} ({100 * r['found'] / r['n']:.1f} %)", str(r["extra"]),
                      f"{r['ms']:.1f}"] if r else ["–", "–", "–"]  # fmt: skip
        orders = [row[s]["order"] for s in ("celeba", "utkface") if s in row]
        cells.append(f"{100 * np.mean(orders):.1f} %" if orders else "–")
        for set_name in ("astronaut", "group", "tiny"):
            r = row[set_name]
            cells.append(f"{r['tp']}/{r['of']} found, {r['fp']} false, {r['ms']:.0f} ms")
        cells.append(f"{row['photo']['faces']} found, {row['photo']['ms']:.1f} ms")
        lines.append("| " + " | ".join(cells) + " |")
    images = {set_name: [load_image(f) for f in files] for set_name, files in sets.items()}
    lines += [
        "",
        "Alignment: chips from each detector vs dlib-hog's (dlib 5-point shape on the HOG box), faces both found: mean "
        "displacement of the chip corners and centre in chip px (of 150), and mean |pixel difference| (of 255).",
        "",
    ]
    for name, _, note in configs[1:]:
        for set_name in sets:
            other = bests.get((name, note, set_name))
            if other is None:
                continue
            move, diff = chip_agreement(bests[("dlib-hog", configs[0][2], set_name)], other, images[set_name])
            lines.append(f"- {name} ({note}) on {set_name}: {move:.2f} chip px, {diff:.1f} / 255")
    lines += landmark_table(sets, images, args.yunet)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
