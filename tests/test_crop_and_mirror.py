"""Faces given as crops are aligned like the training chips; mirror averaging makes a face and its mirror agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image

from qface.analyzer import FaceAnalyzer, average_with_mirror, chips_to_tensor
from qface.data.transforms import hflip_landmarks_normalised, hflip_pose
from qface.pipeline.align import align
from qface.pipeline.detect import get_detector
from qface.pipeline.io import load_image


@pytest.fixture(scope="module")
def celeba_crop() -> np.ndarray:
    folder = shared_path("data", "celeba", "img_align_celeba")
    return load_image(sorted(folder.iterdir())[0])


def test_a_celeba_crop_is_aligned_where_the_detector_aligns_the_face(celeba_crop):
    crop = get_detector("crop")(celeba_crop)
    found = get_detector("dlib-hog")(celeba_crop)
    assert len(crop) == 1 and crop[0].score > 0.5
    assert np.abs(crop[0].points[:2] - found[0].points[:2]).max() < 4  # eye centres, pixels in a 178×218 crop
    chip_difference = np.abs(
        crop[0].aligned.chip.astype(int) - align(celeba_crop, found[0].shape).chip.astype(int)
    ).mean()
    assert chip_difference < 12  # grey levels: the same face, framed the same way


def test_a_tiny_crop_is_upscaled_and_still_found(celeba_crop):
    tiny = np.asarray(Image.fromarray(celeba_crop).resize((48, 59), Image.Resampling.BILINEAR))
    (face,) = get_detector("crop")(tiny)
    assert face.score > 0  # found by the detector after upscaling
    x1, y1, x2, y2 = face.box
    assert 0 <= x1 < x2 <= 48 and 0 <= y1 < y2 <= 59
    assert face.aligned.chip.shape == (150, 150, 3)


def test_a_crop_without_a_detectable_face_falls_back_to_the_whole_crop():
    (face,) = get_detector("crop")(np.full((48, 48, 3), 128, np.uint8))
    assert face.score == 0.0  # nothing detected: the crop itself is the face's box
    assert face.box.tolist() == pytest.approx([0, 0, 48, 48], abs=1)
    assert np.isfinite(face.aligned.chip_to_image).all()


def test_mirror_averaging_maps_the_mirror_back_so_a_face_and_its_mirror_agree(celeba_crop):
    chip = get_detector("crop")(celeba_crop)[0].aligned.chip
    model = FaceAnalyzer(detector="none").model
    x = chips_to_tensor([chip])
    plain, flipped = model.predict(x), model.predict(x.flip(-1))
    face, mirror = average_with_mirror(plain, flipped), average_with_mirror(flipped, plain)
    assert torch.allclose(mirror["age"]["years"], face["age"]["years"])
    assert torch.allclose(mirror["expression"]["probs"], face["expression"]["probs"])
    assert torch.allclose(mirror["pose"]["degrees"], hflip_pose(face["pose"]["degrees"]), atol=1e-5)
    assert torch.allclose(mirror["landmarks"]["points"], hflip_landmarks_normalised(face["landmarks"]["points"]))
    assert torch.equal(face["identity"]["embedding"], plain["identity"]["embedding"])  # calibrated on plain faces
