"""The trainer: partial labels, frozen-feature cache, resume after a kill, DDP on CPU (gloo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_CONFIG

from qface.train.config import TrainConfig
from qface.train.features import build_feature_cache
from qface.train.trainer import learning_rate_factor, train

REPO = Path(__file__).resolve().parents[1]


def write_chip_cache(folder: Path, count: int, labelled: dict[str, int], seed: int) -> None:
    """A chip cache in the layout qface.data.chips writes, with random faces and the given tasks labelled."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    np.save(folder / "chips.npy", rng.integers(0, 256, (count, 150, 150, 3), dtype=np.uint8))
    arrays = {"split": np.array(["train"] * (count - 8) + ["val"] * 8)}
    for task, width in labelled.items():
        if task == "expression":
            arrays["expression"] = rng.integers(0, 7, count)
            arrays["expression_mask"] = np.tile(np.arange(8) < 7, (count, 1))
        elif task == "age":
            arrays["age"] = rng.uniform(1, 80, count).astype(np.float32)
            arrays["age_mask"] = np.ones((count, 1), bool)
        else:
            arrays[task] = (rng.random((count, width)) < 0.5).astype(np.float32)
            arrays[f"{task}_mask"] = np.ones((count, width), bool)
    np.savez(folder / "labels.npz", **arrays)


@pytest.fixture
def config(tmp_path) -> TrainConfig:
    backbone = {k: v for k, v in TINY_CONFIG["backbone"].items()}
    write_chip_cache(tmp_path / "expr", 40, {"expression": 8}, seed=1)
    write_chip_cache(tmp_path / "faces", 40, {"attributes": 40, "age": 1}, seed=2)
    for name in ("expr", "faces"):
        build_feature_cache(tmp_path / name, backbone, TINY_CONFIG["grid"], batch_size=16)
    return TrainConfig(
        model=dict(TINY_CONFIG),
        datasets={
            "expr": {"folder": str(tmp_path / "expr"), "batch_size": 8},
            "faces": {"folder": str(tmp_path / "faces"), "batch_size": 8},
        },
        out=str(tmp_path / "run"),
        steps=12,
        lr=3e-3,
        warmup=2,
        eval_every=6,
        checkpoint_every=2,
    )


def test_learning_rate_warms_up_then_decays_to_zero():
    assert learning_rate_factor(0, 10, 100) == pytest.approx(0.1)
    assert learning_rate_factor(9, 10, 100) == pytest.approx(1.0)
    assert learning_rate_factor(55, 10, 100) == pytest.approx(0.5)
    assert learning_rate_factor(100, 10, 100) == pytest.approx(0.0)


@pytest.mark.slow
def test_training_on_partial_labels_lowers_the_loss_and_saves_the_best_model(config):
    train(config, progress=False)
    out = Path(config.out)
    rows = [line.split(",", 3) for line in (out / "log.csv").read_text().splitlines()]
    losses = [float(r[2]) for r in rows]
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert "expr/expression" in rows[0][3] and "faces/age" in rows[0][3] and "expr/age" not in rows[0][3]
    assert (out / "best" / "model.safetensors").exists()
    evaluations = (out / "eval.jsonl").read_text().splitlines()
    assert len(evaluations) == 2 and "expression_accuracy" in evaluations[0]


def run_cli(config_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "qface.cli", "train", str(config_path), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_a_killed_run_resumes_at_the_same_step_and_ends_bit_identical(config, tmp_path):
    config.steps, config.eval_every = 40, 1000
    reference = train(TrainConfig(**{**config.__dict__, "out": str(tmp_path / "reference")}), progress=False)

    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(config.__dict__))
    state = Path(config.out) / "checkpoint" / "state.pt"
    process = run_cli(config_path)
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    log = (Path(config.out) / "log.csv").read_text().splitlines()
    assert 0 < len(log) < 40, "the run should have been killed part-way"
    resumed = run_cli(config_path, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    final = torch.load(Path(config.out) / "checkpoint" / "state.pt", weights_only=True)["model"]
    for name, value in reference.state_dict().items():
        assert (final[name] == value).all(), name


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_trains_and_checkpoints(config, tmp_path):
    config.steps, config.eval_every = 4, 1000
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(config.__dict__))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29731",
        "-m",
        "qface.cli",
        "train",
        str(config_path),
    ]
    done = subprocess.run(
        command,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len((Path(config.out) / "log.csv").read_text().splitlines()) == 4  # rank 0 logs every step once
    assert (Path(config.out) / "checkpoint" / "state.pt").exists()


@pytest.mark.slow
def test_fine_tuning_only_the_last_backbone_blocks_from_images(config):
    config.features, config.steps, config.eval_every = False, 2, 1000
    config.backbone_lr, config.backbone_trainable = 1e-3, ["blocks.3", "norm"]
    model = train(config, progress=False)
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("blocks.3", "norm")) for n in trainable)
    initial = train(TrainConfig(**{**config.__dict__, "steps": 0, "out": config.out + "-0"}), progress=False)
    moved = {n for n, p in model.backbone.named_parameters() if not torch.equal(p, initial.backbone.state_dict()[n])}
    assert moved and moved <= trainable
