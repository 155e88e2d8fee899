"""Every shipped config can run: it loads, its model config is valid, its data sets are real adapters, and each has
a validation split (its own, or a held-out share of train). No data is needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qface.data.source import split_with_holdout
from qface.model.qface import QFaceConfig
from qface.tasks import TASKS
from qface.train.config import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert {path.name for path in CONFIGS} >= {"cpu_default.yaml", "paper_vit_b16.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_a_shipped_config_loads_and_names_real_data_sets_with_a_val_split(path):
    config = TrainConfig.from_yaml(path)
    config.check()
    model = QFaceConfig(**config.model)
    assert set(model.tasks) <= set(TASKS) and model.backbone["name"]
    assert set(config.task_weights) <= set(TASKS)


def test_a_data_set_without_val_split_is_refused_until_it_holds_some_out():
    config = TrainConfig(datasets={"rafdb": {"folder": "cache/chips/rafdb"}})
    with pytest.raises(ValueError, match="val_holdout"):
        config.check()
    config.datasets["rafdb"]["val_holdout"] = 0.1
    config.check()
    with pytest.raises(ValueError, match="unknown data set 'morph'"):
        TrainConfig(datasets={"morph": {"folder": "x"}}).check()
    with pytest.raises(ValueError, match="labels only"):
        TrainConfig(datasets={"celeba": {"folder": "x", "tasks": ["age"]}}).check()


def test_holdout_moves_whole_subjects_from_train_to_val_and_never_from_test():
    subjects = np.array([f"s{i // 5}" for i in range(2000)])  # 400 subjects of 5 faces
    arrays = {
        "split": np.array(["train"] * 1800 + ["test"] * 200),
        "subject": subjects,
        "source": np.array([f"{i}.jpg" for i in range(2000)]),
    }
    split = split_with_holdout(arrays, 0.1)
    val = split == "val"
    assert 0.05 < val[:1800].mean() < 0.15 and not val[1800:].any()
    for subject in np.unique(subjects):
        assert len(set(split[subjects == subject])) == 1
    assert (split_with_holdout(arrays, 0.1) == split).all()
    assert (split_with_holdout(arrays, 0.0) == arrays["split"]).all()
