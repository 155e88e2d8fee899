"""The ONNX export and the onnxruntime backend: the same outputs as torch on real faces, through the API and the CLI;
int8 quantization; the cache and the checks that keep a file tied to its weights."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path

from qface.analyzer import FaceAnalyzer, chips_to_tensor, load_model
from qface.cli import main
from qface.onnx import OnnxModel, default_onnx_path, quantize_int8, training_chips
from qface.pipeline.align import align
from qface.pipeline.detect import get_detector
from qface.pipeline.io import load_image
from qface.resources import SAMPLE_IMAGE


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "qface.onnx"
    assert main(["export", "onnx", str(path)]) == 0  # the bundled weights
    return path


@pytest.fixture(scope="module")
def chips() -> torch.Tensor:
    """Aligned chips of real faces: the bundled sample's (dlib HOG) and four CelebA crops (the crop detector)."""
    found = [(get_detector("dlib-hog"), load_image(SAMPLE_IMAGE))]
    folder = shared_path("data", "celeba", "img_align_celeba")
    found += [(get_detector("crop"), load_image(path)) for path in sorted(folder.iterdir())[:4]]
    faces = []
    for detector, image in found:
        detection = detector(image)[0]
        faces.append((detection.aligned or align(image, detection.shape)).chip)
    return chips_to_tensor(faces)


def test_onnxruntime_gives_the_torch_outputs_within_1e4_on_real_faces(model, exported, chips):
    with torch.inference_mode():
        expected = model(chips)
    output = OnnxModel(model, exported)(chips)
    tasks = ["expression", "action_units", "attributes", "age", "pose", "landmarks"]
    assert list(output.raw) == list(expected.raw) == tasks
    for name, raw in expected.raw.items():
        assert output.raw[name].shape == raw.shape
        assert (output.raw[name] - raw).abs().max() <= 1e-4, name
    assert (output.embedding - expected.embedding).abs().max() <= 1e-4
    decoded, reference = output.decoded(), expected.decoded()
    assert decoded["age"]["years"] == pytest.approx(reference["age"]["years"], abs=1e-3)


def test_a_subset_of_tasks_and_any_batch_size_come_out_alike(model, exported, chips):
    network = OnnxModel(model, exported, threads=1)
    full = network(chips)
    one = network(chips[:1], ["age", "identity"])
    assert list(one.raw) == ["age"] and one.attention == []
    assert (one.raw["age"] - full.raw["age"][:1]).abs().max() <= 1e-5
    assert (one.embedding - full.embedding[:1]).abs().max() <= 1e-5


def test_the_cli_rows_of_the_onnx_backend_match_torchs(exported, tmp_path):
    rows = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / f"{backend}.csv"
        extra = ["--onnx", str(exported)] if backend == "onnx" else []
        assert main(["analyze", str(SAMPLE_IMAGE), "--detector", "dlib-hog", "--out", str(out), "--backend", backend]
                    + extra) == 0  # fmt: skip
        rows[backend] = list(csv.DictReader(out.open()))
    assert len(rows["torch"]) == len(rows["onnx"]) >= 1
    for plain, onnx in zip(rows["torch"], rows["onnx"], strict=True):
        assert plain.keys() == onnx.keys()
        for key, value in plain.items():
            try:
                number = float(value)
            except ValueError:
                assert onnx[key] == value, key
                continue
            tolerance = 0.02 if key.startswith(("age", "pose.", "landmarks")) else 2e-4  # years, degrees, pixels
            assert float(onnx[key]) == pytest.approx(number, abs=tolerance), key


def test_eval_through_the_onnx_backend_scores_like_torch(exported, chips, tmp_path):
    folder = tmp_path / "utkface"
    folder.mkdir()
    count = len(chips)
    np.save(folder / "chips.npy", np.rint(chips.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8))
    ages = np.linspace(20, 60, count, dtype=np.float32)
    np.savez(folder / "labels.npz", split=np.array(["val"] * count), age=ages, age_mask=np.ones((count, 1), bool))
    config = tmp_path / "c.yaml"
    config.write_text(f"datasets:\n  utkface: {{folder: {folder}}}\n")
    scores = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / f"{backend}.json"
        extra = ["--onnx", str(exported)] if backend == "onnx" else ["--no-cache"]
        assert main(["eval", "--config", str(config), "--backend", backend, "--out", str(out), *extra]) == 0
        scores[backend] = json.loads(out.read_text())["results"]["utkface"]
    assert scores["torch"].keys() == scores["onnx"].keys() and "age_mae" in scores["torch"]
    for key, value in scores["torch"].items():
        assert scores["onnx"][key] == pytest.approx(value, abs=1e-3), key


def test_export_int8_without_chip_caches_is_refused_before_the_model_loads(tmp_path, capsys):
    assert main(["export", "onnx", str(tmp_path / "q.onnx"), "--int8", "--chips", str(tmp_path)]) == 2
    assert "no chip cache" in capsys.readouterr().err


def test_attention_maps_are_refused_with_the_onnx_backend():
    with pytest.raises(ValueError, match="attention"):
        FaceAnalyzer(detector="none", attention=True, backend="onnx")
    with pytest.raises(ValueError, match="backend"):
        FaceAnalyzer(detector="none", backend="tensorflow")
    assert main(["analyze", str(SAMPLE_IMAGE), "--backend", "onnx", "--attention", "x"]) == 2


def test_a_file_from_other_weights_is_refused(tiny_model, exported):
    with pytest.raises(ValueError, match="other weights"):
        OnnxModel(tiny_model, exported)


def test_without_a_path_the_export_is_cached_per_weights_digest(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = OnnxModel(tiny_model)
    assert first.path == default_onnx_path(tiny_model) and first.path.is_relative_to(tmp_path)
    made = first.path.stat().st_mtime_ns
    assert OnnxModel(tiny_model).path.stat().st_mtime_ns == made  # found, not exported again
    with torch.no_grad():
        tiny_model.heads["age"].linear.bias += 1
    assert default_onnx_path(tiny_model) != first.path  # other weights, another file


def test_calibration_draws_evenly_from_the_training_split_only(tmp_path):
    for name, count in (("a", 10), ("b", 6)):
        folder = tmp_path / name
        folder.mkdir()
        values = np.arange(count, dtype=np.uint8) + (100 if name == "b" else 0)
        np.save(folder / "chips.npy", np.broadcast_to(values[:, None, None, None], (count, 4, 4, 3)).copy())
        split = np.array(["train", "val"] * (count // 2))
        np.savez(folder / "labels.npz", split=split)
    chips = training_chips([tmp_path / "a", tmp_path / "b"], 5)
    assert chips.shape == (5, 3, 4, 4) and chips.dtype == np.float32
    drawn = np.rint(chips[:, 0, 0, 0] * 255).astype(int)
    assert len(set(drawn)) == 5 and all(v % 2 == 0 for v in drawn % 100)  # train rows are the even ones
    assert sum(v < 100 for v in drawn) == 3 and sum(v >= 100 for v in drawn) == 2


@pytest.mark.slow
def test_int8_quantization_stays_close_to_fp32(model, exported, chips, tmp_path):
    quantized = quantize_int8(exported, tmp_path / "int8.onnx", chips.numpy())
    assert quantized.stat().st_size < exported.stat().st_size / 2
    fp32, int8 = OnnxModel(model, exported)(chips).decoded(), OnnxModel(model, quantized)(chips).decoded()
    assert (int8["expression"]["probs"] - fp32["expression"]["probs"]).abs().max() < 0.1
    assert (int8["age"]["years"] - fp32["age"]["years"]).abs().max() < 3
    assert (int8["identity"]["embedding"] - fp32["identity"]["embedding"]).norm(dim=1).max() < 0.1


def test_the_bundled_int8_export_belongs_to_the_bundled_weights_and_reads_the_sample_face_alike():
    exact = max(FaceAnalyzer(detector="dlib-hog").analyze(SAMPLE_IMAGE), key=lambda face: face.score)
    fast = FaceAnalyzer(detector="dlib-hog", backend="onnx-int8")  # refused if the file came from other weights
    face = max(fast.analyze(SAMPLE_IMAGE), key=lambda face: face.score)
    assert face.box == exact.box and face.top_expression == exact.top_expression
    assert face.age == pytest.approx(exact.age, abs=1.5)
    assert np.dot(face.embedding, exact.embedding) > 0.99


def test_onnx_int8_without_a_file_says_how_to_make_one(tmp_path, model):
    model.save(tmp_path / "mine", pretrained_backbone=True)
    with pytest.raises(FileNotFoundError, match="qface export onnx .*model-int8.onnx --int8"):
        FaceAnalyzer(tmp_path / "mine", detector="none", backend="onnx-int8")
