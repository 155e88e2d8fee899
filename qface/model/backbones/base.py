"""The contract every backbone keeps, so fusion and decoder never care which one they got."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class BackboneOutput:
    """Features of the tapped stages, shallow to deep, each a (B, C_i, H_i, W_i) map,
    and the backbone's own global face descriptor (B, E) when it has one (identity)."""

    stages: list[torch.Tensor]
    embedding: torch.Tensor | None = None


class Backbone(nn.Module):
    """Takes RGB images as floats in [0, 1], shape (B, 3, input_size, input_size).

    Each backbone normalises its input itself (dlib and CLIP disagree on means), so callers never need to know
    which one they hold. Subclasses set `stage_channels` (one entry per tap, in the order of
    `BackboneOutput.stages`), `input_size` and `embedding_dim` (0 when there is no descriptor).
    """

    stage_channels: list[int]
    input_size: int
    embedding_dim: int

    def forward(self, images: torch.Tensor, embedding: bool = True) -> BackboneOutput:  # pragma: no cover
        """`embedding=False`: the descriptor is not wanted (None), so a backbone may skip what computes only it."""
        raise NotImplementedError

    def fold_for_inference(self) -> Backbone:
        """Rewrites the network into a cheaper form computing the same function, for inference only (it may no
        longer train or save). Backbones with nothing to fold keep this default."""
        return self

    def spec(self) -> dict:  # pragma: no cover - interface
        """The `build_backbone` arguments that rebuild this architecture (weights aside), for saved configs:
        what a checkpoint decided at load time (a ViT's style and projection width) must survive a save."""
        raise NotImplementedError
