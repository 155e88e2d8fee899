"""The task registry drives the product: a task declared once, here in the test and nowhere else, is trained,
appears in JSON, CSV, summaries and pictures, and is scored by the evaluation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG

from qface import metrics
from qface.analyzer import FaceAnalyzer
from qface.data.source import Source
from qface.eval.evaluate import predict_source, score_source, selection_score
from qface.model.qface import QFace, QFaceConfig
from qface.pipeline.output import ResultWriter, csv_columns
from qface.pipeline.results import Face
from qface.tasks import TASKS, Field, Marks, Task
from qface.viz.draw import annotate


def brightness_loss(raw: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return ((raw[..., 0] - target) ** 2 * mask).sum() / mask.sum().clamp(min=1)


TOY = Task(
    name="brightness",
    labels=("brightness",),
    outputs_per_label=1,
    loss=brightness_loss,
    decode=lambda raw: {"level": raw[..., 0]},
    read=lambda out, aligned: {"brightness": round(float(out["level"][0]), 3)},
    fields=(Field("brightness", "value"),),
    scored="level",
    score=lambda level, truth, mask: {"brightness_mae": metrics.mae(level[mask[:, 0], 0], truth[mask[:, 0], 0])},
    selection=("brightness_mae", lambda error: max(0.0, 1 - error)),
    describe=lambda face: f"brightness {face.brightness:.1f}",
    annotate=lambda face: Marks(text=f"b={face.brightness:.1f}"),
)


@pytest.fixture
def toy_model(monkeypatch, tmp_path):
    monkeypatch.setitem(TASKS, "brightness", TOY)
    torch.manual_seed(0)
    model = QFace(QFaceConfig(**{**TINY_CONFIG, "tasks": ["expression", "brightness"]})).eval()
    model.save(tmp_path / "toy")
    return tmp_path / "toy"


def chips(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 150, 150, 3), dtype=np.uint8)


def test_a_task_declared_once_reaches_json_csv_summary_and_pictures(toy_model, tmp_path, capsys):
    analyzer = FaceAnalyzer(toy_model, detector="none")
    [face] = analyzer.analyze(chips(1)[0])
    assert isinstance(face.brightness, float) and face.to_dict()["brightness"] == face.brightness
    assert face.flat()["brightness"] == face.brightness and face.age is None

    for name in ("out.jsonl", "out.csv"):
        writer = ResultWriter(tmp_path / name, analyzer.tasks, model=analyzer.model)
        writer.faces("chip.png", [face])
        writer.close()
    assert json.loads((tmp_path / "out.jsonl").read_text())["brightness"] == face.brightness
    [row] = csv.DictReader((tmp_path / "out.csv").open())
    assert float(row["brightness"]) == face.brightness and "expression.happy" in row
    assert "brightness" in csv_columns(["brightness"])

    capsys.readouterr()
    ResultWriter(None, analyzer.tasks, summary=True, model=analyzer.model).faces("chip.png", [face])
    assert f"brightness {face.brightness:.1f}" in capsys.readouterr().out
    assert annotate(chips(1)[0], [face]).size == (150, 150)


def test_a_field_without_a_column_is_an_error_not_a_silent_drop(tmp_path):
    writer = ResultWriter(tmp_path / "out.csv", ["age"])
    face = Face(box=[0, 0, 1, 1], score=1.0, points=[[0, 0]] * 5, model="m", outputs={"age": 3.0, "stray": 1})
    with pytest.raises(ValueError, match="stray"):
        writer.faces("x.png", [face])
    writer.close()


def test_a_task_declared_once_is_scored_by_the_evaluation(toy_model, tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    images = chips(12, seed=1)
    np.save(folder / "chips.npy", images)
    truth = images.mean(axis=(1, 2, 3))[:, None].astype(np.float32) / 255
    np.savez(
        folder / "labels.npz", split=np.array(["val"] * 12), brightness=truth, brightness_mask=np.ones((12, 1), bool)
    )
    source = Source(folder, "val")
    assert source.tasks == ["brightness"]
    model = QFace.load(toy_model)
    predictions = predict_source(model, source)
    scores = score_source(source, predictions)
    assert scores["brightness_mae"] == pytest.approx(np.abs(predictions["brightness"][:, 0] - truth[:, 0]).mean())
    assert selection_score({"cache": scores}) == pytest.approx(max(0.0, 1 - scores["brightness_mae"]))
