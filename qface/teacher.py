"""Teacher labels from MediaPipe Face Landmarker: head pose and 68 iBUG-300W landmarks for face chips.

Our data carries no human head-pose or 68-landmark labels, so MediaPipe's Face Landmarker (Tasks API, model bundle
`face_landmarker.task`, see ../shared/models/README.md) produces *teacher* targets for them. Everything written here is
marked `source = "mediapipe-face-landmarker (teacher)"`: a training target, never evaluation ground truth.

    python -m qface.teacher cache/chips/celeba cache/chips/utkface

writes `teacher_mediapipe.npz` beside each folder's `chips.npy` (see `label_chip_cache`).
MediaPipe is an optional dependency (`pip install qface[teacher]`); it is imported only when a teacher is built.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qface.data.base import chips_fingerprint
from qface.resources import require

SOURCE = "mediapipe-face-landmarker (teacher)"
OUTPUT_NAME = "teacher_mediapipe.npz"
MODEL_ENV = "QFACE_FACE_LANDMARKER"  # overrides the model bundle's location
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "shared" / "models" / "face_landmarker.task"

# iBUG-300W 68-point index (0-based, the list position) → MediaPipe 478-point mesh indices; where two are given the
# point is their midpoint. Correspondence from Peizhi Yan, "Mediapipe_2_Dlib_Landmarks" (2024),
# https://github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks, file mediapipe2dlib/mp2dlib.py (`mp2dlib_correspondence`),
# checked here by drawing the 68 points with their numbers on real faces. iBUG's "right" is the subject's right
# (the image's left for a frontal face), as is MediaPipe's.
MEDIAPIPE_TO_IBUG68: tuple[tuple[int, ...], ...] = (
    # jaw 0-16, from the subject's right ear round the chin to the left ear
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,),
    (400,), (379,), (365,), (397, 288), (361,), (323,), (454,), (356,),
    # right brow 17-21 (outer → inner), left brow 22-26 (inner → outer)
    (70,), (63,), (105,), (66,), (107,),
    (336,), (296,), (334,), (293,), (300,),
    # nose bridge 27-30 (top → tip), nostril base 31-35 (subject's right → left)
    (168, 6), (197, 195), (5,), (4,),
    (75,), (97,), (2,), (326,), (305,),
    # right eye 36-41, left eye 42-47: outer/inner corner, upper lid, lower lid (iBUG's clockwise order)
    (33,), (160,), (158,), (133,), (153,), (144,),
    (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lip 48-59 (right corner, upper lip → left corner, lower lip back), inner lip 60-67
    (61,), (39,), (37,), (0,), (267,), (269,), (291,),
    (321,), (314,), (17,), (84,), (91,),
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)  # fmt: skip


@dataclass
class TeacherLabel:
    pose: np.ndarray  # (3,) float32: pitch, yaw, roll in degrees, qface's sign convention
    landmarks: np.ndarray  # (68, 2) float32: iBUG-68 points, x, y in image pixels (pixel centres at integers)


def pose_from_matrix(matrix: np.ndarray) -> np.ndarray:
    """(pitch, yaw, roll) in degrees, qface's convention, from MediaPipe's 4×4 facial transformation matrix.

    The matrix maps MediaPipe's canonical face model into the camera's metric space. Both frames are right-handed with
    x toward the image's right, y up and z toward the viewer (the camera looks along −z); the canonical face looks
    along +z, so the identity rotation is a frontal face. Its upper-left 3×3 block R is a rotation (orthonormal,
    det 1: checked on real faces; it is re-orthonormalised here all the same). We factor

        R = Rz(φ) · Ry(ψ) · Rx(θ)      θ = atan2(R21, R22),  ψ = asin(−R20),  φ = atan2(R10, R00)

    and read off qface's angles (yaw > 0: nose toward the image's right; pitch > 0: face looks up; roll > 0: face
    turned clockwise in the image as the viewer sees it):

    * yaw = +ψ. Ry(ψ) sends the face's forward axis z to (sin ψ, 0, cos ψ): toward +x, the image's right, for ψ > 0.
      Checked on 192 CelebA chips: a face and its mirror image give opposite yaws, and yaw follows the nose tip's
      horizontal offset from the eyes' midpoint, positive toward the image's right (correlation +0.98).
    * pitch = −θ. Rx(θ) sends z to (0, −sin θ, cos θ): the face looks up (+y) for θ < 0. Checked: the nose tip, which
      stands in front of the eye–mouth plane, projects higher between eyes and mouth as pitch grows: the ratio
      (nose − eyes)/(mouth − eyes) of image heights falls as pitch rises (correlation −0.92 over the same chips).
    * roll = −φ. Rz(φ) sends the face's up axis y to (−sin φ, cos φ, 0): tilted toward the image's left, i.e.
      counter-clockwise as the viewer sees it, for φ > 0. Checked: turning a chip 15° clockwise (PIL's
      `rotate(-15)`) raises roll by 15.2 ± 0.6° (range 13.3–16.9° over 60 chips).
    """
    rotation = np.asarray(matrix, dtype=np.float64)[:3, :3]
    u, _, vt = np.linalg.svd(rotation)
    rotation = u @ vt
    theta = np.arctan2(rotation[2, 1], rotation[2, 2])
    psi = np.arcsin(np.clip(-rotation[2, 0], -1.0, 1.0))
    phi = np.arctan2(rotation[1, 0], rotation[0, 0])
    return np.degrees(np.array([-theta, psi, -phi])).astype(np.float32)


def ibug68_from_mesh(mesh: np.ndarray) -> np.ndarray:
    """(478, D) MediaPipe mesh points → (68, D) iBUG-300W points (midpoints where the mapping gives two)."""
    return np.stack([mesh[list(indices)].mean(axis=0) for indices in MEDIAPIPE_TO_IBUG68])


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    return np.ascontiguousarray(image)


class MediaPipeTeacher:
    """MediaPipe Face Landmarker (IMAGE mode, one face) → `TeacherLabel` (pose + 68 points) or None.

    teacher = MediaPipeTeacher();  label = teacher(chip)   # chip: RGB uint8 (H, W, 3), e.g. a 150×150 face chip
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        min_detection_confidence: float = 0.5,
        min_presence_confidence: float = 0.5,
    ):
        path = Path(model_path or os.environ.get(MODEL_ENV) or DEFAULT_MODEL)
        if not path.is_file():
            raise FileNotFoundError(
                f"MediaPipe face landmarker bundle not found at {path}; pass model_path or set {MODEL_ENV}"
            )
        mp = require("mediapipe", "teacher", "the MediaPipe teacher")
        from mediapipe.tasks.python import BaseOptions, vision

        self.model_path = path
        self._mp = mp
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(path)),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=1,
            min_face_detection_confidence=min_detection_confidence,
            min_face_presence_confidence=min_presence_confidence,
            output_facial_transformation_matrixes=True,
        )
        self._landmarker = vision.FaceLandmarker.create_from_options(options)

    def __call__(self, image: np.ndarray) -> TeacherLabel | None:
        """Pose and 68 landmarks of the (most confident) face in an RGB uint8 image, or None when none is found."""
        image = _as_rgb(image)
        height, width = image.shape[:2]
        result = self._landmarker.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=image))
        if not result.face_landmarks or not result.facial_transformation_matrixes:
            return None
        # MediaPipe's normalised coordinates span the image's full extent [0, W] × [0, H]; qface's pixel coordinates
        # (like dlib's) put pixel centres at integers, hence the half-pixel shift.
        mesh = np.array([(p.x, p.y) for p in result.face_landmarks[0]], dtype=np.float64)
        mesh = mesh * (width, height) - 0.5
        landmarks = ibug68_from_mesh(mesh).astype(np.float32)
        pose = pose_from_matrix(np.asarray(result.facial_transformation_matrixes[0]))
        return TeacherLabel(pose=pose, landmarks=landmarks)

    label = __call__

    def close(self) -> None:
        """Free MediaPipe's graph. Close (or use `with`) before exit: an unclosed landmarker's __del__ prints a
        harmless traceback at interpreter shutdown (MediaPipe 1.2.2)."""
        self._landmarker.close()

    def __enter__(self) -> MediaPipeTeacher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------------------
# Labelling a chip cache


def _save_npz(path: Path, **arrays) -> None:
    """Write atomically: a killed run leaves the previous file intact."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def label_chip_cache(
    folder: str | Path,
    teacher: MediaPipeTeacher | None = None,
    checkpoint_every: int = 2000,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Label every chip in `folder/chips.npy` (uint8 (N, 150, 150, 3)) and write `folder/teacher_mediapipe.npz`:

    pose            (N, 3) float32   pitch, yaw, roll in degrees (qface convention); 0 where masked
    pose_mask       (N, 3) bool      False where MediaPipe found no face
    landmarks       (N, 68, 2) float32  iBUG-68 x, y in chip-normalised coordinates (pixel / chip size, pixel
                                      centres at integers); 0 where masked
    landmarks_mask  (N, 68) bool
    source          str              "mediapipe-face-landmarker (teacher)"
    model_sha256, mediapipe_version  provenance
    chips_fingerprint  str           `chips_fingerprint(chips)`: the chips these labels belong to

    Progress is checkpointed every `checkpoint_every` chips to `teacher_mediapipe.partial.npz`, from which an
    interrupted run resumes. An existing complete file for the same chips (same fingerprint) is kept unless `force`.
    Returns {"folder", "n", "labelled", "success_rate", "seconds", "ms_per_chip"}.
    """
    from tqdm import tqdm

    folder = Path(folder)
    chips = np.load(folder / "chips.npy", mmap_mode="r")
    if chips.ndim != 4 or chips.shape[3] != 3 or chips.dtype != np.uint8:
        raise ValueError(f"{folder / 'chips.npy'}: expected uint8 (N, H, W, 3), got {chips.dtype} {chips.shape}")
    n, height, width = chips.shape[:3]
    out, partial = folder / OUTPUT_NAME, folder / (Path(OUTPUT_NAME).stem + ".partial.npz")
    fingerprint = chips_fingerprint(chips)

    if out.exists() and not force:
        with np.load(out) as done:
            if "chips_fingerprint" in done and str(done["chips_fingerprint"]) == fingerprint:
                labelled = int(done["pose_mask"][:, 0].sum())
                return {"folder": str(folder), "n": n, "labelled": labelled, "success_rate": labelled / max(n, 1),
                        "seconds": 0.0, "ms_per_chip": float("nan"), "skipped": True}  # fmt: skip

    pose = np.zeros((n, 3), np.float32)
    landmarks = np.zeros((n, 68, 2), np.float32)
    found = np.zeros(n, bool)
    start = 0
    if partial.exists() and not force:
        with np.load(partial) as state:
            if "chips_fingerprint" in state and str(state["chips_fingerprint"]) == fingerprint:
                start = int(state["done"])
                pose[:start], landmarks[:start], found[:start] = (
                    state["pose"][:start],
                    state["landmarks"][:start],
                    state["found"][:start],
                )

    mediapipe = require("mediapipe", "teacher", "the MediaPipe teacher")
    own_teacher = teacher is None
    teacher = teacher or MediaPipeTeacher()
    scale = np.array([width, height], np.float32)

    def checkpoint(done: int) -> None:
        _save_npz(partial, pose=pose, landmarks=landmarks, found=found, done=np.int64(done),
                  chips_fingerprint=np.array(fingerprint))  # fmt: skip

    began, done = time.perf_counter(), start
    interval = 0.1 if sys.stderr.isatty() else 30.0  # a log file (nohup) gets a line every 30 s, not every chip
    bar = tqdm(total=n, initial=start, desc=f"teacher {folder.name}", unit="chip", disable=not progress,
               mininterval=interval)  # fmt: skip
    try:
        for i in range(start, n):
            label = teacher(np.asarray(chips[i]))
            if label is not None:
                pose[i], landmarks[i], found[i] = label.pose, label.landmarks / scale, True
            done = i + 1
            bar.update()
            if done % checkpoint_every == 0:
                bar.set_postfix(found=f"{found[:done].mean():.1%}")
                if done < n:
                    checkpoint(done)
    except BaseException:
        if done > start:
            checkpoint(done)  # Ctrl-C or an error: keep what is labelled (a hard kill keeps the last checkpoint)
        raise
    finally:
        bar.close()
        if own_teacher:
            teacher.close()
    seconds = time.perf_counter() - began

    _save_npz(
        out,
        pose=pose,
        pose_mask=np.repeat(found[:, None], 3, axis=1),
        landmarks=landmarks,
        landmarks_mask=np.repeat(found[:, None], 68, axis=1),
        source=np.array(SOURCE),
        model_sha256=np.array(MODEL_SHA256),
        mediapipe_version=np.array(mediapipe.__version__),
        chips_fingerprint=np.array(fingerprint),
    )
    partial.unlink(missing_ok=True)
    labelled = int(found.sum())
    return {
        "folder": str(folder),
        "n": n,
        "labelled": labelled,
        "success_rate": labelled / max(n, 1),
        "seconds": seconds,
        "ms_per_chip": 1000 * seconds / max(n - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qface.teacher",
        description=f"Write {OUTPUT_NAME} (MediaPipe teacher pose + 68 landmarks) beside each folder's chips.npy.",
    )
    parser.add_argument("folders", nargs="+", type=Path, help="chip-cache folders, e.g. cache/chips/celeba")
    parser.add_argument("--model", type=Path, help=f"face_landmarker.task (default: ${MODEL_ENV} or {DEFAULT_MODEL})")
    parser.add_argument("--checkpoint-every", type=int, default=2000, help="chips between resumable checkpoints")
    parser.add_argument("--force", action="store_true", help="relabel even when a complete output exists")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    status = 0
    for folder in args.folders:
        if not (folder / "chips.npy").is_file():
            print(f"error: {folder / 'chips.npy'} not found", file=sys.stderr)
            status = 1
            continue
        with MediaPipeTeacher(args.model) as teacher:
            stats = label_chip_cache(folder, teacher, args.checkpoint_every, args.force, not args.no_progress)
        speed = "already labelled (--force to redo)" if stats.get("skipped") else f"{stats['ms_per_chip']:.1f} ms/chip"
        print(
            f"{folder}: {stats['labelled']}/{stats['n']} chips labelled, success rate {stats['success_rate']:.2%}, "
            f"{speed}",
            flush=True,
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
