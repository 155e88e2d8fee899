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

from qface.data.source import TEACHER_FILE, features_folder
from qface.model.qface import QFace, QFaceConfig
from qface.tasks import TASKS
from qface.train.config import TrainConfig
from qface.train.features import build_feature_cache

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
            if "maps" in batch:
                outputs.append(self.model.forward_cached(batch["maps"], batch["embedding"], batch["tasks"]).raw)
            else:
                outputs.append(self.model(batch["images"], batch["tasks"]).raw)
        return outputs


def learning_rate_factor(step: int, warmup: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))


def prepare_data(config: TrainConfig, model_config: QFaceConfig) -> None:
    """Builds whatever cache the config needs and lacks, so `qface train CONFIG` alone reproduces a model: aligned
    chips (from ../shared through the dataset adapters), teacher labels (`teacher: true`), frozen features."""
    for name, spec in config.datasets.items():
        folder = Path(spec["folder"])
        if not (folder / "labels.npz").exists():
            from qface.data.chips import build_chip_cache

            build_chip_cache(name, out_root=folder.parent)
        if spec.get("teacher") and not (folder / TEACHER_FILE).exists():
            from qface.teacher import label_chip_cache

            label_chip_cache(folder)
        features = features_folder(folder, model_config.backbone, model_config.grid) / "meta.json"
        if config.features and (not features.exists() or json.loads(features.read_text())["done"] < len_chips(folder)):
            build_feature_cache(folder, model_config.backbone, model_config.grid)


def len_chips(folder: Path) -> int:
    return len(np.load(folder / "chips.npy", mmap_mode="r"))


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> QFace:
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.__dict__, sort_keys=False))
    torch.manual_seed(config.seed)
    model_config = QFaceConfig(**config.model)
    model = QFace(model_config).to(device)
    frozen = config.features or config.backbone_lr == 0
    for name, parameter in model.backbone.named_parameters():
        prefixes = config.backbone_trainable
        parameter.requires_grad_(not frozen and (prefixes is None or name.startswith(tuple(prefixes))))
    if rank == 0:
        prepare_data(config, model_config)
    if distributed:
        dist.barrier()
    sources = config.sources("train", model_config.backbone, model_config.grid)
    validation = config.sources("val", model_config.backbone, model_config.grid)
    if blind := [name for name, source in validation.items() if not len(source)]:
        raise ValueError(f"no val faces in {blind}: give each a `val_holdout` (e.g. 0.1) so model selection can see it")
    runner = TrainingStep(model)
    if distributed:
        runner = torch.nn.parallel.DistributedDataParallel(runner, find_unused_parameters=True)
    head_params = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    groups = [{"params": head_params, "lr": config.lr}]
    if not frozen:
        trainable = [p for p in model.backbone.parameters() if p.requires_grad]
        groups.append({"params": trainable, "lr": config.backbone_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, config.warmup, config.steps)
    )
    start, best = 0, {"score": -math.inf}
    if resume and (out / CHECKPOINT / "state.pt").exists():
        start, best = load_checkpoint(out / CHECKPOINT, model, optimizer, scheduler)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    log = open(out / "log.csv", "a", newline="") if rank == 0 else None
    writer = csv.writer(log) if log else None
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, disable=not progress or rank > 0)
    model.train()
    for step in bar:
        rng = np.random.default_rng([config.seed, step, rank])
        total, parts, batches = 0.0, {}, []
        for name, source in sources.items():
            batch_size = config.datasets[name].get("batch_size", 64)
            batch = source.load(source.batch_indices(step, batch_size, config.seed)[rank::world], rng)
            batches.append(batch)
            batch["inputs"] = {k: v.to(device) for k, v in batch["inputs"].items()} | {"tasks": source.tasks}
        with amp:
            outputs = runner([batch["inputs"] for batch in batches])
        for (name, source), batch, raw in zip(sources.items(), batches, outputs):
            for task in source.tasks:
                loss = TASKS[task].loss(
                    raw[task].float(), batch["targets"][task].to(device), batch["masks"][task].to(device)
                )
                parts[f"{name}/{task}"] = loss.item()
                total = total + config.task_weights.get(task, 1.0) * loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{total.item():.3f}")
        if writer:
            writer.writerow([step, time.time(), f"{total.item():.5f}", json.dumps(parts)])
            log.flush()
        done = step + 1
        if rank == 0 and (done % config.eval_every == 0 or done == config.steps):
            from qface.eval.evaluate import evaluate_sources, selection_score

            model.eval()
            metrics = evaluate_sources(model, validation)
            model.train()
            score = selection_score(metrics)
            with (out / "eval.jsonl").open("a") as evaluations:
                evaluations.write(json.dumps({"step": done, "score": score, **metrics}) + "\n")
            if score > best["score"]:
                best = {"score": score, "step": done}
                model.save(out / "best")
        if rank == 0 and (done % config.checkpoint_every == 0 or done == config.steps):
            save_checkpoint(out / CHECKPOINT, model, optimizer, scheduler, done, best)
    if log:
        log.close()
    if distributed:
        dist.destroy_process_group()
    return model


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
