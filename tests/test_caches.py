"""Every derived cache is keyed by what it was made from: features by backbone spec (taps included), grid and
chips; teacher labels by chips. A mismatch is rebuilt or refused, never silently reused. Teacher labels fill only
faces without a human label, and the evaluation keeps the two apart."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qface.data.source import Source, features_folder, features_key, finished_features, merge_teacher
from qface.eval.evaluate import score_source
from qface.model.backbones import build_backbone
from qface.train.features import adopt_unkeyed_cache, build_feature_cache
from qface.train.trainer import MultiTaskLoss

BACKBONE = {"name": "vit", "size": "vit_ti16", "input_size": 32, "taps": [1, 3], "pretrained": False}
SPEC = {**BACKBONE, **build_backbone(**BACKBONE).spec()}  # what the trainer keys by (TrainConfig.backbone_spec)


def chip_cache(folder, count: int = 6, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "chips.npy", rng.integers(0, 256, (count, 150, 150, 3), dtype=np.uint8))
    np.savez(
        folder / "labels.npz",
        split=np.array(["train"] * count),
        age=rng.uniform(1, 80, count).astype(np.float32),
        age_mask=np.ones((count, 1), bool),
    )


def test_features_are_keyed_by_taps_grid_and_chips(tmp_path):
    chip_cache(tmp_path)
    torch.manual_seed(0)
    built = build_feature_cache(tmp_path, BACKBONE, 2, batch_size=4)
    key = features_key(tmp_path, SPEC, 2)
    assert built == features_folder(tmp_path, key) and finished_features(tmp_path, key) == built
    assert len(Source(tmp_path, "train", key)) == 6
    other_taps = features_key(tmp_path, {**SPEC, "taps": [2, 3]}, 2)  # same channel total, other features
    for other in (other_taps, features_key(tmp_path, SPEC, 3)):
        assert features_folder(tmp_path, other) != built and finished_features(tmp_path, other) is None
        with pytest.raises(ValueError, match="no finished feature cache"):
            Source(tmp_path, "train", other)
    chip_cache(tmp_path, seed=1)  # the chips are rebuilt: the old features no longer belong to them
    assert features_key(tmp_path, SPEC, 2) != key
    with pytest.raises(ValueError, match="no finished feature cache"):
        Source(tmp_path, "train", features_key(tmp_path, SPEC, 2))


def test_teacher_labels_of_other_chips_are_refused(tmp_path):
    chip_cache(tmp_path)
    np.savez(
        tmp_path / "teacher_mediapipe.npz",
        pose=np.zeros((6, 3), np.float32),
        pose_mask=np.ones((6, 3), bool),
        chips_fingerprint=np.array("made-from-other-chips"),
    )
    with pytest.raises(ValueError, match="labels other chips"):
        Source(tmp_path, "train")


def test_teacher_labels_never_overwrite_human_labels_and_are_scored_apart():
    human_pose = np.array([[1, 2, 3], [0, 0, 0], [7, 8, 9]], np.float32)
    arrays = {"pose": human_pose.copy(), "pose_mask": np.array([[True] * 3, [False] * 3, [True] * 3])}
    taught = {"pose": np.full((3, 3), 50, np.float32), "pose_mask": np.array([[True] * 3, [True] * 3, [False] * 3])}
    assert merge_teacher(arrays, taught) == ["pose"]
    assert arrays["pose"].tolist() == [[1, 2, 3], [50, 50, 50], [7, 8, 9]]
    assert arrays["pose_mask"].all() and arrays["pose_taught"].tolist() == [False, True, False]

    class Split:
        tasks, teacher_tasks = ["pose"], ["pose"]

    Split.arrays = arrays
    scores = score_source(Split, {"pose": np.array([[1, 2, 3], [40, 40, 40], [7, 8, 9]], np.float32)})
    assert scores["pose_mae"] == 0.0 and scores["teacher_pose_mae"] == 10.0


def test_the_multitask_loss_returns_the_weighted_total_and_every_part():
    raw = {"age": torch.zeros(2, 1, 101), "pose": torch.zeros(2, 3, 1)}
    batch = {
        "name": "faces",
        "tasks": ["age", "pose"],
        "targets": {"age": torch.tensor([20.0, 30.0]), "pose": torch.zeros(2, 3)},
        "masks": {"age": torch.ones(2, 1, dtype=torch.bool), "pose": torch.ones(2, 3, dtype=torch.bool)},
    }
    total, parts = MultiTaskLoss({"age": 0.5})([raw], [batch])
    assert set(parts) == {"faces/age", "faces/pose"} and parts["faces/pose"] == 0.0
    assert total.item() == pytest.approx(0.5 * parts["faces/age"])


@pytest.mark.slow
def test_a_cache_from_before_keys_is_adopted_only_when_the_backbone_reproduces_it(tmp_path):
    chip_cache(tmp_path, count=4)
    level3 = {"name": "dlib_resnet", "taps": [3]}
    built = build_feature_cache(tmp_path, level3, 2, batch_size=4)
    key = json.loads((built / "meta.json").read_text())["key"]
    legacy = built.rename(tmp_path / "features-dlib_resnet-g2")  # the name and meta.json of a cache before keys
    (legacy / "meta.json").write_text(json.dumps({"backbone": level3, "grid": 2, "count": 4, "done": 4}))
    level4 = {"name": "dlib_resnet", "taps": [4]}  # 256 channels too, but other features
    assert adopt_unkeyed_cache(tmp_path, level4, 2, samples=2) is None
    assert adopt_unkeyed_cache(tmp_path, level3, 2, samples=2) == built and finished_features(tmp_path, key) == built
    assert len(Source(tmp_path, "train", key)) == 4
