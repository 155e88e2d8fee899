"""Plain ViT/16 backbone with block taps, loadable from CLIP/FaRL and MAE/timm checkpoints.

Face-pretrained ViTs come in two public layouts: OpenAI CLIP's (which FaRL inherits) and timm's (which MAE
uses). Both describe the same pre-norm transformer, so one module with a `style` flag covers them; the two
pure filter functions below only rename and reshape checkpoint tensors onto this module's parameter names.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .base import Backbone, BackboneOutput

Style = Literal["clip", "mae"]
PATCH = 16
SIZES: dict[str, tuple[int, int, int]] = {  # name: (width, depth, heads)
    "vit_b16": (768, 12, 12),
    "vit_s16": (384, 12, 6),
    "vit_ti16": (192, 12, 3),
}
# Each family was trained on inputs normalised with its own statistics; using the other's shifts features.
_MEAN_STD = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "mae": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class ViTConfig:
    """`style` fixes what differs between the families: CLIP/FaRL have `ln_pre`, QuickGELU, LayerNorm eps
    1e-5, a bias-free patch conv and a `proj` after the final norm; MAE/timm have none of these, exact GELU
    and eps 1e-6."""

    size: str = "vit_b16"
    style: Style = "clip"
    input_size: int = 224
    taps: tuple[int, ...] = (3, 5, 7, 11)
    proj_dim: int = 512  # CLIP visual projection width (0: none); MAE never has one
    mean: tuple[float, float, float] | None = None  # None: the style's training statistics
    std: tuple[float, float, float] | None = None


class QuickGELU(nn.Module):
    """The sigmoid approximation OpenAI CLIP (and hence FaRL) was trained with; exact GELU drifts features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (rows ordered q, k, v in both layouts)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, act: nn.Module, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(OrderedDict(fc1=nn.Linear(width, 4 * width), act=act, fc2=nn.Linear(4 * width, width)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def resize_pos_embed(pos: torch.Tensor, grid: int | tuple[int, int]) -> torch.Tensor:
    """(1 + g*g, C) -> (1 + gh*gw, C): bicubic resize of the patch grid; the class position is kept as is."""
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    old = math.isqrt(pos.shape[0] - 1)
    if old * old != pos.shape[0] - 1:
        raise ValueError(f"position embedding of {pos.shape[0]} tokens is not 1 + a square grid")
    if (old, old) == (gh, gw):
        return pos
    patches = pos[1:].T.reshape(1, -1, old, old)
    patches = F.interpolate(patches, size=(gh, gw), mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], patches.reshape(pos.shape[1], gh * gw).T])


class ViT(Backbone):
    """ViT with class token and learned positions; returns the tapped blocks' patch tokens as maps."""

    def __init__(self, cfg: ViTConfig = ViTConfig()) -> None:
        super().__init__()
        width, depth, heads = SIZES[cfg.size]
        if list(cfg.taps) != sorted(set(cfg.taps)) or not all(0 <= t < depth for t in cfg.taps):
            raise ValueError(f"taps {cfg.taps} must be increasing block indices in [0, {depth})")
        if cfg.input_size % PATCH:
            raise ValueError(f"input_size {cfg.input_size} is not a multiple of {PATCH}")
        clip = cfg.style == "clip"
        eps = 1e-5 if clip else 1e-6
        self.cfg = cfg
        self.grid = cfg.input_size // PATCH
        self.input_size = cfg.input_size
        self.stage_channels = [width] * len(cfg.taps)
        has_proj = clip and cfg.proj_dim > 0
        self.embedding_dim = cfg.proj_dim if has_proj else width
        mean, std = _MEAN_STD[cfg.style]
        self.register_buffer("mean", torch.tensor(cfg.mean or mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std or std).view(1, 3, 1, 1), persistent=False)

        self.patch_embed = nn.Conv2d(3, width, PATCH, stride=PATCH, bias=not clip)
        self.cls_token = nn.Parameter(torch.randn(width) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1 + self.grid**2, width) * 0.02)
        self.ln_pre = nn.LayerNorm(width, eps=eps) if clip else nn.Identity()
        self.blocks = nn.ModuleList(Block(width, heads, QuickGELU() if clip else nn.GELU(), eps) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=eps)
        self.proj = nn.Parameter(torch.randn(width, cfg.proj_dim) * width**-0.5) if has_proj else None
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def spec(self) -> dict:
        return {"name": "vit", **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.cfg).items()}}

    def forward(self, images: torch.Tensor, embedding: bool = True) -> BackboneOutput:
        x = self.patch_embed((images - self.mean) / self.std)
        b, c, gh, gw = x.shape
        pos = resize_pos_embed(self.pos_embed, (gh, gw))  # a no-op at the configured input size
        x = torch.cat([self.cls_token.expand(b, 1, c), x.flatten(2).transpose(1, 2)], dim=1) + pos
        x = self.ln_pre(x)
        stages = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.cfg.taps:
                stages.append(x[:, 1:].transpose(1, 2).reshape(b, c, gh, gw))
        if not embedding:
            return BackboneOutput(stages=stages)
        descriptor = self.norm(x[:, 0])
        return BackboneOutput(stages=stages, embedding=descriptor if self.proj is None else descriptor @ self.proj)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        size: str = "vit_b16",
        style: Style | None = None,
        input_size: int = 224,
        taps: tuple[int, ...] = (3, 5, 7, 11),
    ) -> ViT:
        """Build a ViT from a CLIP/FaRL or MAE/timm checkpoint (.safetensors, or .pt/.pth read without
        unpickling code); `style=None` detects the layout from the keys."""
        path = Path(path)
        if path.suffix == ".safetensors":
            raw = load_file(path)
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        style = style or detect_style(raw)
        grid = input_size // PATCH
        sd = filter_clip_checkpoint(raw, grid) if style == "clip" else filter_mae_checkpoint(raw, grid)
        proj_dim = sd["proj"].shape[1] if "proj" in sd else 0
        model = cls(ViTConfig(size=size, style=style, input_size=input_size, taps=taps, proj_dim=proj_dim))
        missing = sorted(model.state_dict().keys() - sd.keys())
        unexpected = sorted(sd.keys() - model.state_dict().keys())
        if missing or unexpected:
            raise ValueError(f"{path} does not fit {size} ({style} layout): missing {missing}, unexpected {unexpected}")
        model.load_state_dict(sd, strict=True)  # still checks shapes
        return model


def _unwrap(state_dict: Mapping[str, object]) -> Mapping[str, torch.Tensor]:
    """FaRL saves {"state_dict": ...}, MAE {"model": ...}; plain state dicts pass through."""
    for key in ("state_dict", "model"):
        if isinstance(state_dict.get(key), Mapping):
            return state_dict[key]
    return state_dict


def detect_style(state_dict: Mapping[str, object]) -> Style:
    keys = _unwrap(state_dict).keys()
    if any(k.endswith("attn.in_proj_weight") for k in keys):
        return "clip"
    if any(k.endswith("attn.qkv.weight") for k in keys):
        return "mae"
    raise ValueError("checkpoint matches neither the CLIP/FaRL nor the MAE/timm ViT layout")


def _rename(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        key = key.replace(old, new)
    return key


_CLIP_RENAMES = (
    ("conv1.", "patch_embed."),
    ("class_embedding", "cls_token"),
    ("positional_embedding", "pos_embed"),
    ("transformer.resblocks.", "blocks."),
    (".ln_1.", ".norm1."),
    (".ln_2.", ".norm2."),
    (".attn.in_proj_", ".attn.qkv."),  # in_proj_weight (3C, C) rows q, k, v: same as a fused qkv Linear
    (".attn.out_proj.", ".attn.proj."),
    (".mlp.c_fc.", ".mlp.fc1."),
    (".mlp.c_proj.", ".mlp.fc2."),
    ("ln_post.", "norm."),
)
# FaRL's visual tower also holds its masked-image-modelling head when pre-trained with MIM.
_CLIP_DROP = ("mask_token", "lm_transformer.", "ln_lm.", "lm_head.")


def filter_clip_checkpoint(state_dict: Mapping[str, object], model_grid: int) -> dict[str, torch.Tensor]:
    """CLIP/FaRL image tower -> ViT parameters. Keys may carry `visual.` (full CLIP model: the text tower is
    then dropped) or not (image tower saved alone); `proj` stays (C, out_dim), applied as x @ proj."""
    sd = _unwrap(state_dict)
    if any(k.startswith("visual.") for k in sd):
        sd = {k.removeprefix("visual."): v for k, v in sd.items() if k.startswith("visual.")}
    out = {_rename(k, _CLIP_RENAMES): v for k, v in sd.items() if not k.startswith(_CLIP_DROP)}
    if "pos_embed" in out:
        out["pos_embed"] = resize_pos_embed(out["pos_embed"], model_grid)
    return out


_MAE_RENAMES = (("patch_embed.proj.", "patch_embed."), ("fc_norm.", "norm."))
# The MAE pre-training decoder and any classifier head are not part of the backbone.
_MAE_DROP = ("decoder_", "mask_token", "head.")


def filter_mae_checkpoint(state_dict: Mapping[str, object], model_grid: int) -> dict[str, torch.Tensor]:
    """MAE/timm ViT -> ViT parameters. A global-pool fine-tune's `fc_norm` stands in for `norm` (it was
    trained on mean-pooled tokens, not the class token)."""
    sd = _unwrap(state_dict)
    out = {_rename(k, _MAE_RENAMES): v for k, v in sd.items() if not k.startswith(_MAE_DROP)}
    if "cls_token" in out:
        out["cls_token"] = out["cls_token"].reshape(-1)
    if "pos_embed" in out:
        out["pos_embed"] = resize_pos_embed(out["pos_embed"].reshape(-1, out["pos_embed"].shape[-1]), model_grid)
    return out
