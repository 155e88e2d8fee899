"""Multi-stage Feature Fusion (MFF): early stages see local detail (wrinkles, eye corners), late stages see the
whole face; projecting every tapped stage to one width and one token grid lets each label query use both."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def resample(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Average-pool larger maps (no aliasing), bilinearly upsample smaller ones, to a grid × grid map."""
    if x.shape[-1] >= grid and x.shape[-2] >= grid:
        return F.adaptive_avg_pool2d(x, grid)
    return F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=False)


def sine_position_encoding(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine/cosine encoding (half the channels for y, half for x), shape (grid*grid, dim)."""
    quarter = dim // 4
    frequencies = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    coords = torch.arange(grid, dtype=torch.float32)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    angles_y = y.reshape(-1, 1) * frequencies
    angles_x = x.reshape(-1, 1) * frequencies
    encoding = torch.cat([angles_y.sin(), angles_y.cos(), angles_x.sin(), angles_x.cos()], dim=1)
    return F.pad(encoding, (0, dim - encoding.shape[1])) / math.sqrt(2.0)


class MultiStageFusion(nn.Module):
    """stages (B, C_i, H_i, W_i) → tokens (B, grid², dim). `last_stage_only` is the ablation switch.

    Resampling comes before the learned projection, so with a frozen backbone the resampled maps can be computed
    once and cached (qface/train/features.py) and training runs only from here on."""

    def __init__(self, stage_channels: list[int], dim: int, grid: int, last_stage_only: bool = False):
        super().__init__()
        self.grid = grid
        self.stage_ids = [len(stage_channels) - 1] if last_stage_only else list(range(len(stage_channels)))
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(stage_channels[i], dim, 1), nn.GroupNorm(1, dim)) for i in self.stage_ids
        )
        self.fuse = nn.Sequential(nn.Linear(dim * len(self.stage_ids), dim), nn.GELU(), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.register_buffer("position", sine_position_encoding(grid, dim), persistent=False)

    def resample(self, stages: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every stage on the common grid: parameter-free, hence cacheable."""
        return [resample(stage, self.grid) for stage in stages]

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """maps: the output of `resample` (all stages); the ablation uses only the last."""
        maps = [proj(maps[i]) for proj, i in zip(self.projections, self.stage_ids)]
        tokens = torch.cat(maps, dim=1).flatten(2).transpose(1, 2)  # (B, grid², dim * n_stages)
        return self.norm(self.fuse(tokens)) + self.position
