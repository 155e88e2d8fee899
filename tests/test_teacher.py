"""MediaPipe teacher: pose signs in qface's convention, the 68-point mapping on real faces, the cache writer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image

from qface.teacher import MEDIAPIPE_TO_IBUG68, SOURCE, pose_from_matrix

# iBUG-68 point seen at the same place in the mirror image (left ↔ right)
IBUG68_MIRROR = (
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # brows
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]  # nose
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lip
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lip
)


def _rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    matrix = np.eye(4)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


# ---------------------------------------------------------------------------------------------------------------
# Pure maths: no MediaPipe needed


def test_pose_from_matrix_follows_qface_convention():
    """MediaPipe's frame: x right, y up, z toward the viewer; the canonical face looks along +z."""
    assert np.allclose(pose_from_matrix(np.eye(4)), 0, atol=1e-5)
    # looking up: forward axis tilts to +y, a rotation about x by a negative angle
    assert np.allclose(pose_from_matrix(_rotation("x", -10)), [10, 0, 0], atol=1e-4)
    # nose toward the image's right: forward axis tilts to +x
    assert np.allclose(pose_from_matrix(_rotation("y", 20)), [0, 20, 0], atol=1e-4)
    # clockwise as the viewer sees it (looking along −z): a negative angle about z
    assert np.allclose(pose_from_matrix(_rotation("z", -5)), [0, 0, 5], atol=1e-4)
    combined = _rotation("z", -5) @ _rotation("y", 20) @ _rotation("x", -10)
    assert np.allclose(pose_from_matrix(combined), [10, 20, 5], atol=1e-4)


def test_mapping_shape():
    assert len(MEDIAPIPE_TO_IBUG68) == 68 == len(IBUG68_MIRROR)
    assert sorted(IBUG68_MIRROR) == list(range(68))
    assert all(1 <= len(group) <= 2 and all(0 <= i < 468 for i in group) for group in MEDIAPIPE_TO_IBUG68)


# ---------------------------------------------------------------------------------------------------------------
# Real faces through MediaPipe


@pytest.fixture(scope="module")
def teacher():
    if importlib.util.find_spec("mediapipe") is None:
        pytest.skip("needs mediapipe (pip install 'qface[teacher]'), which is not installed")
    from qface.teacher import MediaPipeTeacher

    model = shared_path("models", "face_landmarker.task")
    with MediaPipeTeacher(model) as instance:
        yield instance


@pytest.fixture(scope="module")
def celeba_chips() -> list[np.ndarray]:
    """Aligned 150×150 chips of the first few CelebA images (dlib HOG + 5 points, as the cache builds them)."""
    from qface.pipeline.align import align
    from qface.pipeline.detect import DlibHogDetector

    folder = shared_path("data", "celeba", "img_align_celeba")
    detector, chips = DlibHogDetector(), []
    for path in sorted(folder.glob("*.jpg"))[:8]:
        image = np.asarray(Image.open(path).convert("RGB"))
        detections = detector(image)
        if detections:
            chips.append(align(image, detections[0].shape).chip)
    if len(chips) < 3:
        pytest.skip(f"fewer than 3 faces found by dlib among the first CelebA images in {folder}")
    return chips


def test_landmarks_land_on_the_face(teacher, celeba_chips):
    label = teacher(celeba_chips[0])
    assert label is not None
    points = label.landmarks
    assert points.shape == (68, 2) and points.dtype == np.float32
    assert np.all((points > -15) & (points < 165)), "points far outside the 150×150 chip"
    eyes, nose, mouth = points[36:48], points[27:36], points[48:68]
    assert eyes[:, 1].mean() < points[30, 1] < mouth[:, 1].mean()  # eyes above nose tip above mouth
    assert nose[:, 1].min() > points[17:27, 1].mean()  # nose below the brows
    assert points[36:42, 0].max() < points[42:48, 0].min()  # iBUG "right" eye is on the image's left
    assert points[48, 0] < points[51, 0] < points[54, 0]  # mouth corners either side of the philtrum
    assert points[0, 0] < points[8, 0] < points[16, 0] and points[8, 1] > mouth[:, 1].max()  # jaw round the chin


def test_mirror_flips_yaw_and_landmarks(teacher, celeba_chips):
    labels = [teacher(chip) for chip in celeba_chips]
    index = int(np.argmax([abs(label.pose[1]) if label is not None else -1 for label in labels]))
    chip, label = celeba_chips[index], labels[index]
    assert abs(label.pose[1]) > 5, "want a visibly turned face among the first CelebA chips"
    mirrored = teacher(np.ascontiguousarray(chip[:, ::-1]))
    assert mirrored is not None
    assert np.sign(mirrored.pose[1]) == -np.sign(label.pose[1])
    assert abs(mirrored.pose[1] + label.pose[1]) < 4  # about the same magnitude
    # the nose points the way yaw says: toward the image's right when yaw > 0
    nose_offset = label.landmarks[30, 0] - (label.landmarks[36, 0] + label.landmarks[45, 0]) / 2
    assert np.sign(nose_offset) == np.sign(label.pose[1])
    # mirrored points, flipped back and renumbered, fall on the original ones
    width = chip.shape[1]
    back = mirrored.landmarks[IBUG68_MIRROR] * [-1, 1] + [width - 1, 0]
    assert np.abs(back - label.landmarks).mean() < 3.0


def test_clockwise_rotation_raises_roll(teacher, celeba_chips):
    chip = celeba_chips[0]
    label = teacher(chip)
    turned = teacher(np.asarray(Image.fromarray(chip).rotate(-15, resample=Image.BILINEAR)))  # PIL: + is CCW
    assert label is not None and turned is not None
    assert turned.pose[2] - label.pose[2] == pytest.approx(15, abs=4)
    assert abs(turned.pose[1] - label.pose[1]) < 4 and abs(turned.pose[0] - label.pose[0]) < 4


def test_no_face_gives_none(teacher):
    assert teacher(np.full((150, 150, 3), 128, np.uint8)) is None


def test_label_chip_cache(teacher, celeba_chips, tmp_path: Path):
    from qface.teacher import OUTPUT_NAME, label_chip_cache

    chips = np.stack([celeba_chips[0], np.zeros((150, 150, 3), np.uint8), celeba_chips[1]])
    np.save(tmp_path / "chips.npy", chips)
    stats = label_chip_cache(tmp_path, teacher, checkpoint_every=2, progress=False)
    assert stats["n"] == 3 and stats["labelled"] == 2
    assert not (tmp_path / "teacher_mediapipe.partial.npz").exists()
    with np.load(tmp_path / OUTPUT_NAME) as out:
        assert str(out["source"]) == SOURCE
        assert out["pose"].shape == (3, 3) and out["pose"].dtype == np.float32
        assert out["landmarks"].shape == (3, 68, 2) and out["landmarks"].dtype == np.float32
        assert out["pose_mask"].dtype == bool and out["landmarks_mask"].shape == (3, 68)
        assert out["pose_mask"].all(axis=1).tolist() == [True, False, True]
        assert out["landmarks_mask"].all(axis=1).tolist() == [True, False, True]
        assert np.all(out["landmarks"][1] == 0) and np.all(out["pose"][1] == 0)
        expected = teacher(chips[2]).landmarks / 150
        assert np.allclose(out["landmarks"][2], expected, atol=1e-5)  # chip-normalised
    again = label_chip_cache(tmp_path, teacher, progress=False)
    assert again.get("skipped") and again["labelled"] == 2
    # a rebuilt cache of the same size is relabelled, not paired with the stale labels
    np.save(tmp_path / "chips.npy", chips[[1, 1, 2]])
    rebuilt = label_chip_cache(tmp_path, teacher, progress=False)
    assert not rebuilt.get("skipped") and rebuilt["labelled"] == 1
