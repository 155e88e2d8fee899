"""A training run as one YAML file: the model (QFaceConfig fields), the data sets with their chip caches, and the
optimisation settings. `qface train` and `qface eval` both read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from qface.resources import require

if TYPE_CHECKING:
    from qface.data.source import Source
    from qface.model.backbones import Backbone


DATASET_OPTIONS = ("folder", "batch_size", "tasks", "teacher", "ferplus", "val_holdout")


@dataclass
class TrainConfig:
    """Every setting of a run; `datasets` maps an adapter name (qface.data.registry) to its chip-cache folder,
    batch size and options: `tasks` (train only these), `teacher: true` (add MediaPipe labels), `ferplus: true`
    (FER2013: learn FER+'s vote distributions), `val_holdout` (the fraction of train faces, whole subjects, that
    validate a data set without a val split of its own)."""

    model: dict = field(default_factory=dict)  # QFaceConfig fields
    datasets: dict = field(default_factory=dict)  # name → {"folder": ..., "batch_size": ...}
    out: str = "runs/default"
    steps: int = 1000
    lr: float = 1e-3
    backbone_lr: float = 0.0  # 0 freezes the backbone
    backbone_trainable: list[str] | None = None  # with backbone_lr: only parameters under these prefixes train
    weight_decay: float = 0.05
    warmup: int = 100
    task_weights: dict = field(default_factory=dict)
    features: bool = True  # train from the frozen-backbone feature cache (the CPU path)
    flip: bool = True  # mirror half the chips (image path only)
    eval_every: int = 250
    checkpoint_every: int = 250
    seed: int = 0
    grad_clip: float = 1.0
    threads: int = 0  # torch CPU threads (0: torch's default)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        yaml = require("yaml", "train", "reading a training config")
        return cls(**yaml.safe_load(Path(path).read_text()))

    def check(self) -> None:
        """Refuses, before any work, a config whose data sets are unknown or could not be validated."""
        from qface.data.registry import ADAPTERS

        for name, spec in self.datasets.items():
            if name not in ADAPTERS:
                raise ValueError(f"unknown data set {name!r}; known: {list(ADAPTERS)}")
            unknown = sorted(set(spec) - set(DATASET_OPTIONS))
            if unknown or "folder" not in spec:
                raise ValueError(f"{name}: needs a `folder`; options are {DATASET_OPTIONS}, got unknown {unknown}")
            if not set(spec.get("tasks") or ()) <= set(ADAPTERS[name].tasks):
                raise ValueError(f"{name} labels only {ADAPTERS[name].tasks}, not all of {spec['tasks']}")
            if "val" not in ADAPTERS[name].splits and not spec.get("val_holdout"):
                raise ValueError(
                    f"{name} has no val split ({ADAPTERS[name].splits}): set `val_holdout` (e.g. 0.1) in its entry"
                )

    def backbone_spec(self, backbone: Backbone) -> dict:
        """The config's backbone entry completed by what the built backbone reports (taps, a checkpoint's style):
        what a feature cache is keyed by."""
        return {**self.model.get("backbone", {}), **backbone.spec()}

    def sources(self, split: str, backbone: dict, grid: int) -> dict[str, Source]:
        """One `Source` per data set for `split`, reading the features of this backbone spec and grid when
        `features` (refused if they are not built for exactly these chips, backbone and grid)."""
        from qface.data.source import Source, features_key

        return {
            name: Source(
                spec["folder"],
                split,
                features_key(spec["folder"], backbone, grid) if self.features else None,
                self.flip and split == "train",
                spec.get("tasks"),
                spec.get("val_holdout", 0.0),
            )
            for name, spec in self.datasets.items()
        }
