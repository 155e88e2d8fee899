"""One honest training loop (in the spirit of nanoGPT): multi-dataset, partial-label, resumable, optionally DDP.

Every step draws one sub-batch from each dataset and runs only the queries of the tasks that dataset labels; each
loss counts only where labels exist (the task masks). Checkpoints hold model, optimizer, scheduler and RNG state;
batches are a pure function of (seed, step), so `--resume` after a kill continues with the very next batch.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from qface.data.base import SHARED_DATA
from qface.data.ferplus import FERPLUS_FILE, build_ferplus_labels
from qface.data.source import Source, features_key, finished_features
from qface.eval.evaluate import evaluate_sources, selection_score
from qface.model.qface import QFace, QFaceConfig
from qface.tasks import TASKS
from qface.train.config import TrainConfig
from qface.train.features import adopt_unkeyed_cache, build_feature_cache

CHECKPOINT = "checkpoint"


class TrainingStep(torch.nn.Module):
    """Every dataset's sub-batch in one forward call (DDP allows one forward per backward); each runs only the
    queries of the tasks its dataset labels. From cached maps (frozen backbone) or from images."""

    def __init__(self, model: QFace):
        super().__init__()
        self.model = model

    def forward(self, batches: list[dict]) -> list[dict[str, torch.Tensor]]:
        outputs = []
        for batch in batches:
            inputs, tasks = batch["inputs"], batch["tasks"]
            if "maps" in inputs:
                cached = (inputs["maps"], inputs["embedding"], tasks, inputs.get("tuned_input"))
                outputs.append(self.model.forward_cached(*cached).raw)
            else:
                outputs.append(self.model(inputs["images"], tasks).raw)
        return outputs


class MultiTaskLoss:
    """The sum over data sets, and over the tasks each labels, of weight × the task's own loss (`Task.loss`, which
    counts only labelled entries). Returns the total and every part by `dataset/task`, for the log."""

    def __init__(self, task_weights: dict[str, float]):
        self.task_weights = task_weights

    def __call__(self, outputs: list[dict[str, torch.Tensor]], batches: list[dict]) -> tuple[torch.Tensor, dict]:
        total, parts = 0.0, {}
        for batch, raw in zip(batches, outputs):
            for task in batch["tasks"]:
                loss = TASKS[task].loss(raw[task].float(), batch["targets"][task], batch["masks"][task])
                parts[f"{batch['name']}/{task}"] = loss.item()
                total = total + self.task_weights.get(task, 1.0) * loss
        return total, parts


def learning_rate_factor(step: int, warmup: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))


def configure_optimizer(model: QFace, config: TrainConfig):
    """AdamW over everything after the backbone at `lr`, plus the backbone parameters left trainable at
    `backbone_lr` (none when frozen); warm-up then cosine decay. From cached features only a backbone's
    `tuned_from` levels can train: the cache holds their input and nothing earlier."""
    frozen = config.backbone_lr == 0
    tuned_from = getattr(model.backbone, "tuned_from", None)
    if config.features and not frozen and tuned_from is None:
        raise ValueError("training from cached features fine-tunes only a backbone's `tuned_from` levels: set it")
    for name, parameter in model.backbone.named_parameters():
        prefixes = config.backbone_trainable
        if config.features and not frozen and prefixes is None:
            prefixes = [f"levels.{i}." for i in range(tuned_from, len(model.backbone.levels))]
        parameter.requires_grad_(not frozen and (prefixes is None or name.startswith(tuple(prefixes))))
    groups = [{"params": [p for n, p in model.named_parameters() if not n.startswith("backbone.")], "lr": config.lr}]
    if not frozen:
        groups.append({"params": [p for p in model.backbone.parameters() if p.requires_grad], "lr": config.backbone_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, config.warmup, config.steps)
    )
    return optimizer, scheduler


def prepare_data(config: TrainConfig, backbone: dict, grid: int) -> None:
    """Builds whatever cache the config needs and lacks, so `qface train CONFIG` alone reproduces a model: aligned
    chips (from ../shared through the dataset adapters), teacher labels (`teacher: true`; relabelled when the chips
    changed), frozen features (for exactly this backbone, grid and chips)."""
    for name, spec in config.datasets.items():
        folder = Path(spec["folder"])
        if not (folder / "labels.npz").exists():
            from qface.data.chips import build_chip_cache

            build_chip_cache(name, out_root=folder.parent)
        if spec.get("ferplus") and not (folder / FERPLUS_FILE).exists():
            build_ferplus_labels(folder, SHARED_DATA / "fer2013" / "ferplus_votes.csv")
        if spec.get("teacher"):
            from qface.teacher import label_chip_cache

            label_chip_cache(folder)  # returns at once when the labels of these chips exist
        if config.features and finished_features(folder, features_key(folder, backbone, grid)) is None:
            if adopt_unkeyed_cache(folder, backbone, grid) is None:
                build_feature_cache(folder, backbone, grid)


def next_batches(sources: dict[str, Source], config: TrainConfig, step: int, rank: int, world: int, device) -> list:
    """Batch `step` of every data set (this rank's share), on the device. A pure function of (seed, step)."""
    rng = np.random.default_rng([config.seed, step, rank])
    batches = []
    for name, source in sources.items():
        indices = source.batch_indices(step, config.datasets[name].get("batch_size", 64), config.seed)[rank::world]
        batch = source.load(indices, rng)
        on_device = {part: {k: v.to(device) for k, v in batch[part].items()} for part in ("inputs", "targets", "masks")}
        batches.append({"name": name, "tasks": source.tasks, **on_device})
    return batches


def evaluate(model: QFace, validation: dict[str, Source], out: Path, step: int, best: dict) -> dict:
    """Scores every validation split, logs it to eval.jsonl, and saves the model to `best` when it beats the best
    so far (by `selection_score`). Returns the (new) best."""
    model.eval()
    metrics = evaluate_sources(model, validation)
    model.train()
    score = selection_score(metrics)
    with (out / "eval.jsonl").open("a") as evaluations:
        evaluations.write(json.dumps({"step": step, "score": score, **metrics}) + "\n")
    if score > best["score"]:
        best = {"score": score, "step": step}
        model.save(out / "best")
    return best


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> QFace:
    rank, world, device = start_processes(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.__dict__, sort_keys=False))
    torch.manual_seed(config.seed)
    model = QFace(QFaceConfig(**config.model)).to(device)
    backbone, grid = config.backbone_spec(model.backbone), model.config.grid
    if rank == 0:
        with torch.random.fork_rng():  # building a cache or not must not change the training's random numbers
            prepare_data(config, backbone, grid)
    if world > 1:
        dist.barrier()
    sources, validation = (config.sources(split, backbone, grid) for split in ("train", "val"))
    if blind := [name for name, source in validation.items() if not len(source)]:
        raise ValueError(f"no val faces in {blind}: give each a `val_holdout` (e.g. 0.1) so model selection can see it")
    runner = TrainingStep(model)
    if world > 1:
        runner = torch.nn.parallel.DistributedDataParallel(runner, find_unused_parameters=True)
    optimizer, scheduler = configure_optimizer(model, config)
    loss_of = MultiTaskLoss(config.task_weights)
    start, best = 0, {"score": -math.inf}
    if resume and (out / CHECKPOINT / "state.pt").exists():
        start, best = load_checkpoint(out / CHECKPOINT, model, optimizer, scheduler)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, disable=not progress or rank > 0)
    model.train()
    for step in bar:
        batches = next_batches(sources, config, step, rank, world, device)
        with amp:
            outputs = runner(batches)
        total, parts = loss_of(outputs, batches)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{total.item():.3f}")
        done = step + 1
        if rank > 0:
            continue
        with (out / "log.csv").open("a", newline="") as log:  # closed every step: a killed run loses no line
            csv.writer(log).writerow([step, time.time(), f"{total.item():.5f}", json.dumps(parts)])
        if done % config.eval_every == 0 or done == config.steps:
            best = evaluate(model, validation, out, done, best)
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_checkpoint(out / CHECKPOINT, model, optimizer, scheduler, done, best)
    if world > 1:
        dist.destroy_process_group()
    return model


def start_processes(config: TrainConfig) -> tuple[int, int, torch.device]:
    """(rank, world size, device): one process, or DDP under torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    if config.threads:
        torch.set_num_threads(config.threads)
    return rank, world, device


def save_checkpoint(folder: Path, model, optimizer, scheduler, step: int, best: dict) -> None:
    """One file, written under a temporary name and renamed: a kill mid-write never leaves a checkpoint whose
    parts disagree. Loaded with `weights_only=True` (tensors and plain containers only, no pickled code)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "best": json.dumps(best),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    torch.save(state, folder / "state.tmp")
    os.replace(folder / "state.tmp", folder / "state.pt")


def load_checkpoint(folder: Path, model, optimizer, scheduler) -> tuple[int, dict]:
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["step"], json.loads(state["best"])
