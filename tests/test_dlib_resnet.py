"""The dlib ResNet port: the .dat reader on hand-made bytes and on the real file, and descriptor parity with dlib."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qface.model.backbones.dlib_resnet import (
    RECOGNITION_MODEL,
    DlibLayer,
    DlibResNet,
    DlibStream,
    add_padded,
    read_dlib_network,
)
from qface.resources import dlib_model_path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FACE_IMAGES = [
    *sorted((SHARED / "data" / "celeba" / "img_align_celeba").glob("*.jpg"))[:8],
    *sorted((SHARED / "data" / "utkface" / "UTKFace").glob("*.jpg"))[:4],
]


def model_file(name: str) -> Path:
    try:
        return dlib_model_path(name)
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def layers() -> list[DlibLayer]:
    return read_dlib_network(model_file(RECOGNITION_MODEL))


@pytest.fixture(scope="module")
def model() -> DlibResNet:
    model_file(RECOGNITION_MODEL)
    return DlibResNet.from_dlib().eval()


def test_integer_float_and_bool_decoding() -> None:
    stream = DlibStream(bytes.fromhex("0102 8111 00 0100 028012"))
    assert [stream.read_int() for _ in range(5)] == [2, -17, 0, 0, 0x1280]
    # 0.04 as dlib writes it: mantissa 0xa3d70a, exponent -28
    assert DlibStream(bytes.fromhex("030ad7a3 811c")).read_float() == pytest.approx(0.04, rel=1e-7)
    assert DlibStream(bytes.fromhex("0110 8104")).read_float() == 1.0
    flags = DlibStream(b"10")
    assert (flags.read_bool(), flags.read_bool()) == (True, False)
    assert DlibStream(bytes.fromhex("0104") + b"con_").read_str() == "con_"


def test_tensor_decoding() -> None:
    values = np.array([1.5, -2.0], dtype="<f4")
    stream = DlibStream(bytes.fromhex("0102 0102 0101 0101 0101") + values.tobytes())
    np.testing.assert_array_equal(stream.read_tensor(), values.reshape(2, 1, 1, 1))
    assert stream.pos == len(stream.data)


def test_reader_finds_dlib_network(layers: list[DlibLayer]) -> None:
    counts = Counter(layer.kind for layer in layers)
    assert counts["con_4"] == counts["affine_"] == counts["relu_"] == 29
    assert (counts["add_prev_"], counts["avg_pool_2"], counts["max_pool_2"], counts["tag"]) == (14, 5, 1, 22)
    assert sum(counts.values()) - counts["tag"] == 108 + 2  # computational layers, the input and the loss
    rgb, loss, fc = layers[0], layers[-1], layers[-2]
    assert rgb.kind == "input_rgb_image_sized" and (rgb.attrs["nr"], rgb.attrs["nc"]) == (150, 150)
    means = [rgb.attrs[f"avg_{c}"] for c in ("red", "green", "blue")]
    np.testing.assert_allclose(means, [122.782, 117.001, 104.298], atol=1e-4)
    assert loss.kind == "loss_metric_2"
    assert loss.attrs["margin"] == pytest.approx(0.04) and loss.attrs["distance_threshold"] == pytest.approx(0.6)
    assert fc.kind == "fc_2" and fc.attrs["num_outputs"] == 128 and set(fc.tensors) == {"weights"}
    stem = layers[1]
    assert stem.tensors["filters"].shape == (32, 3, 7, 7)
    assert (stem.attrs["stride_y"], stem.attrs["padding_y"]) == (2, 0)


def test_add_padded_zero_fills_at_the_end() -> None:
    small = torch.ones(1, 1, 1, 1)
    big = torch.zeros(1, 2, 2, 2)
    expected = torch.zeros(1, 2, 2, 2)
    expected[0, 0, 0, 0] = 1
    assert torch.equal(add_padded(small, big), expected)


def test_stage_shapes_and_taps(model: DlibResNet) -> None:
    with torch.no_grad():
        out = model(torch.rand(2, 3, 150, 150))
    shapes = [tuple(stage.shape[1:]) for stage in out.stages]
    assert shapes == [(32, 35, 35), (64, 17, 17), (128, 8, 8), (256, 4, 4), (256, 2, 2)]
    assert model.stage_channels == [32, 64, 128, 256, 256]
    assert out.embedding is not None and out.embedding.shape == (2, model.embedding_dim)
    picked = DlibResNet(taps=(1, 4))
    assert picked.stage_channels == [64, 256]
    with pytest.raises(ValueError):
        DlibResNet(taps=(3, 1))


@pytest.mark.slow
@pytest.mark.skipif(not FACE_IMAGES, reason=f"no face images under {SHARED / 'data'}")
def test_descriptor_parity_with_dlib(model: DlibResNet) -> None:
    dlib = pytest.importorskip("dlib", reason="dlib (dlib-bin) is needed as the reference")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))
    reference = dlib.face_recognition_model_v1(str(model_file(RECOGNITION_MODEL)))
    names, chips, expected = [], [], []
    for path in FACE_IMAGES:
        image = np.asarray(Image.open(path).convert("RGB"))
        faces = detector(image, 0) or detector(image, 1)
        if not faces:
            continue
        shape = predictor(image, faces[0])
        names.append(path.name)
        chips.append(dlib.get_face_chip(image, shape, size=150, padding=0.25))
        expected.append(np.asarray(reference.compute_face_descriptor(image, shape)))
    assert len(chips) >= 8, f"dlib found faces in only {len(chips)} of {len(FACE_IMAGES)} images"

    batch = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        out = model(batch)
    assert [tuple(s.shape[2:]) for s in out.stages] == [(35, 35), (17, 17), (8, 8), (4, 4), (2, 2)]
    diffs = np.abs(out.embedding.numpy() - np.stack(expected)).max(axis=1)
    for name, diff in zip(names, diffs, strict=True):
        print(f"dlib parity {name}: max |torch - dlib| = {diff:.3g}")
    print(f"dlib parity over {len(names)} faces: max |torch - dlib| = {diffs.max():.3g}")
    assert diffs.max() <= 1e-3, f"descriptor differs from dlib by up to {diffs.max():.3g}"
