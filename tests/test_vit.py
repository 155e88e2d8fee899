"""ViT backbone: both public checkpoint layouts load strictly and reproduce an independent reference forward.

The fake checkpoints below use the exact key names and shapes of OpenAI CLIP / FaRL (`visual.conv1.weight`,
`visual.transformer.resblocks.N.attn.in_proj_weight`, ...) and of MAE / timm (`patch_embed.proj.weight`,
`blocks.N.attn.qkv.weight`, ...), filled with random values.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from qface.model.backbones.vit import (
    ViT,
    ViTConfig,
    filter_clip_checkpoint,
    filter_mae_checkpoint,
    resize_pos_embed,
)

W, DEPTH, HEADS, OUT = 192, 12, 3, 32  # vit_ti16, a small CLIP projection
TAPS = (3, 5, 7, 11)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IN_MEAN, IN_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _rand(*shape: int, scale: float = 0.05, offset: float = 0.0) -> torch.Tensor:
    return torch.randn(*shape) * scale + offset


def _ln(prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": _rand(W, scale=0.1, offset=1.0), f"{prefix}.bias": _rand(W)}


def _linear(prefix: str, out: int, inp: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": _rand(out, inp), f"{prefix}.bias": _rand(out)}


def clip_checkpoint(grid: int) -> dict[str, torch.Tensor]:
    """A full CLIP model's state dict as FaRL saves it: image tower under `visual.`, text tower beside it."""
    sd = {
        "visual.conv1.weight": _rand(W, 3, 16, 16),
        "visual.class_embedding": _rand(W, scale=0.5),
        "visual.positional_embedding": _rand(1 + grid * grid, W, scale=0.5),
        **_ln("visual.ln_pre"),
        **_ln("visual.ln_post"),
        "visual.proj": _rand(W, OUT),
    }
    for i in range(DEPTH):
        p = f"visual.transformer.resblocks.{i}"
        sd |= _ln(f"{p}.ln_1") | _ln(f"{p}.ln_2")
        sd |= {f"{p}.attn.in_proj_weight": _rand(3 * W, W), f"{p}.attn.in_proj_bias": _rand(3 * W)}
        sd |= _linear(f"{p}.attn.out_proj", W, W)
        sd |= _linear(f"{p}.mlp.c_fc", 4 * W, W) | _linear(f"{p}.mlp.c_proj", W, 4 * W)
    sd |= {  # text tower: same names as the image tower's blocks, but no `visual.` prefix
        "token_embedding.weight": _rand(100, W),
        "positional_embedding": _rand(77, W),
        "transformer.resblocks.0.attn.in_proj_weight": _rand(3 * W, W),
        "transformer.resblocks.0.ln_1.weight": _rand(W),
        "ln_final.weight": _rand(W),
        "text_projection": _rand(W, OUT),
        "logit_scale": torch.tensor(4.6),
    }
    return sd


def mae_checkpoint(grid: int) -> dict[str, torch.Tensor]:
    """An MAE pre-training state dict: encoder in timm names, plus the decoder and mask token."""
    sd = {
        "cls_token": _rand(1, 1, W, scale=0.5),
        "pos_embed": _rand(1, 1 + grid * grid, W, scale=0.5),
        "patch_embed.proj.weight": _rand(W, 3, 16, 16),
        "patch_embed.proj.bias": _rand(W),
        **_ln("norm"),
    }
    for i in range(DEPTH):
        p = f"blocks.{i}"
        sd |= _ln(f"{p}.norm1") | _ln(f"{p}.norm2")
        sd |= _linear(f"{p}.attn.qkv", 3 * W, W) | _linear(f"{p}.attn.proj", W, W)
        sd |= _linear(f"{p}.mlp.fc1", 4 * W, W) | _linear(f"{p}.mlp.fc2", W, 4 * W)
    sd |= {
        "mask_token": _rand(1, 1, 64),
        "decoder_pos_embed": _rand(1, 1 + grid * grid, 64),
        "decoder_embed.weight": _rand(64, W),
        "decoder_blocks.0.norm1.weight": _rand(64),
        "decoder_norm.weight": _rand(64),
        "decoder_pred.weight": _rand(16 * 16 * 3, 64),
    }
    return sd


def _attention(x: torch.Tensor, w_in, b_in, w_out, b_out) -> torch.Tensor:
    b, n, c = x.shape
    q, k, v = (t.reshape(b, n, HEADS, c // HEADS).transpose(1, 2) for t in (x @ w_in.T + b_in).chunk(3, -1))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // HEADS), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(b, n, c) @ w_out.T + b_out


def reference_clip(sd: dict[str, torch.Tensor], images: torch.Tensor):
    """OpenAI CLIP's VisionTransformer.forward written out functionally on the raw tensors."""
    t = {k.removeprefix("visual."): v for k, v in sd.items() if k.startswith("visual.")}

    def ln(x, name):
        return F.layer_norm(x, (W,), t[f"{name}.weight"], t[f"{name}.bias"], eps=1e-5)

    x = (images - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    x = F.conv2d(x, t["conv1.weight"], stride=16)
    b, _, gh, gw = x.shape
    x = x.reshape(b, W, -1).permute(0, 2, 1)
    x = torch.cat([t["class_embedding"].expand(b, 1, W), x], dim=1) + t["positional_embedding"]
    x = ln(x, "ln_pre")
    maps = []
    for i in range(DEPTH):
        p = f"transformer.resblocks.{i}"
        x = x + _attention(
            ln(x, f"{p}.ln_1"),
            t[f"{p}.attn.in_proj_weight"],
            t[f"{p}.attn.in_proj_bias"],
            t[f"{p}.attn.out_proj.weight"],
            t[f"{p}.attn.out_proj.bias"],
        )
        h = ln(x, f"{p}.ln_2") @ t[f"{p}.mlp.c_fc.weight"].T + t[f"{p}.mlp.c_fc.bias"]
        x = x + (h * torch.sigmoid(1.702 * h)) @ t[f"{p}.mlp.c_proj.weight"].T + t[f"{p}.mlp.c_proj.bias"]
        maps.append(x[:, 1:].permute(0, 2, 1).reshape(b, W, gh, gw))
    return maps, ln(x[:, 0], "ln_post") @ t["proj"]


def reference_mae(t: dict[str, torch.Tensor], images: torch.Tensor):
    """MAE's models_vit.VisionTransformer (timm blocks, no global pool) written out functionally."""

    def ln(x, name):
        return F.layer_norm(x, (W,), t[f"{name}.weight"], t[f"{name}.bias"], eps=1e-6)

    x = (images - torch.tensor(IN_MEAN).view(3, 1, 1)) / torch.tensor(IN_STD).view(3, 1, 1)
    x = F.conv2d(x, t["patch_embed.proj.weight"], t["patch_embed.proj.bias"], stride=16)
    b, _, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([t["cls_token"].expand(b, -1, -1), x], dim=1) + t["pos_embed"]
    maps = []
    for i in range(DEPTH):
        p = f"blocks.{i}"
        x = x + _attention(
            ln(x, f"{p}.norm1"),
            t[f"{p}.attn.qkv.weight"],
            t[f"{p}.attn.qkv.bias"],
            t[f"{p}.attn.proj.weight"],
            t[f"{p}.attn.proj.bias"],
        )
        h = ln(x, f"{p}.norm2") @ t[f"{p}.mlp.fc1.weight"].T + t[f"{p}.mlp.fc1.bias"]
        x = x + F.gelu(h) @ t[f"{p}.mlp.fc2.weight"].T + t[f"{p}.mlp.fc2.bias"]
        maps.append(x.transpose(1, 2)[:, :, 1:].reshape(b, W, gh, gw))
    return maps, ln(x, "norm")[:, 0]


def _assert_matches(out, ref_maps, ref_embedding) -> None:
    assert len(out.stages) == len(TAPS)
    for stage, tap in zip(out.stages, TAPS, strict=True):
        torch.testing.assert_close(stage, ref_maps[tap], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.embedding, ref_embedding, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_clip_layout_matches_reference() -> None:
    torch.manual_seed(0)
    sd = clip_checkpoint(grid=4)
    model = ViT(ViTConfig(size="vit_ti16", style="clip", input_size=64, proj_dim=OUT)).eval()
    model.load_state_dict(filter_clip_checkpoint({"state_dict": sd}, model_grid=4), strict=True)
    images = torch.rand(2, 3, 64, 64)
    _assert_matches(model(images), *reference_clip(sd, images))


@torch.no_grad()
def test_mae_layout_matches_reference() -> None:
    torch.manual_seed(1)
    sd = mae_checkpoint(grid=4)
    filtered = filter_mae_checkpoint({"model": sd}, model_grid=4)
    assert not any(k.startswith(("decoder_", "mask_token")) for k in filtered)
    model = ViT(ViTConfig(size="vit_ti16", style="mae", input_size=64)).eval()
    model.load_state_dict(filtered, strict=True)
    images = torch.rand(2, 3, 64, 64)
    _assert_matches(model(images), *reference_mae(sd, images))


def test_mae_global_pool_norm_and_head_map() -> None:
    sd = {"fc_norm.weight": torch.ones(W), "head.weight": torch.zeros(10, W), "head.bias": torch.zeros(10)}
    assert filter_mae_checkpoint(sd, model_grid=4).keys() == {"norm.weight"}


@pytest.mark.parametrize("grid", [2, 3])
@pytest.mark.parametrize("style", ["clip", "mae"])
@torch.no_grad()
def test_pos_embed_is_interpolated_to_the_model_grid(style: str, grid: int) -> None:
    torch.manual_seed(2)
    make, filt = (
        (clip_checkpoint, filter_clip_checkpoint) if style == "clip" else (mae_checkpoint, filter_mae_checkpoint)
    )
    sd = make(grid=4)
    filtered = filt(sd, model_grid=grid)
    source = sd["visual.positional_embedding"] if style == "clip" else sd["pos_embed"][0]
    assert filtered["pos_embed"].shape == (1 + grid * grid, W)
    torch.testing.assert_close(filtered["pos_embed"][0], source[0])  # class position kept
    model = ViT(ViTConfig(size="vit_ti16", style=style, input_size=16 * grid, proj_dim=OUT)).eval()
    model.load_state_dict(filtered, strict=True)
    out = model(torch.rand(2, 3, 16 * grid, 16 * grid))
    assert [s.shape for s in out.stages] == [(2, W, grid, grid)] * len(TAPS)
    assert out.embedding.shape == (2, model.embedding_dim)


def test_resize_follows_the_deit_mae_farl_recipe() -> None:
    """Patch positions resized as the public loaders do: (g, g, C) grid, bicubic, align_corners=False."""
    pos = torch.randn(1 + 16, 8)
    grid = pos[1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(3, 5), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    resized = resize_pos_embed(pos, (3, 5))
    torch.testing.assert_close(resized, torch.cat([pos[:1], want.reshape(15, 8)]))
    assert resize_pos_embed(pos, 4) is pos


def test_filters_are_pure() -> None:
    for make, filt, wrap in [
        (clip_checkpoint, filter_clip_checkpoint, "state_dict"),
        (mae_checkpoint, filter_mae_checkpoint, "model"),
    ]:
        ckpt = {wrap: make(grid=4)}
        before = {k: v.clone() for k, v in ckpt[wrap].items()}
        filt(ckpt, model_grid=3)
        assert list(ckpt) == [wrap] and ckpt[wrap].keys() == before.keys()
        assert all(torch.equal(ckpt[wrap][k], v) for k, v in before.items())


def test_taps_shapes_and_gradients() -> None:
    model = ViT(ViTConfig(size="vit_ti16", style="mae", input_size=32, taps=(0, 6, 11)))
    assert model.stage_channels == [W, W, W] and model.embedding_dim == W
    out = model(torch.rand(2, 3, 32, 32))
    assert [s.shape for s in out.stages] == [(2, W, 2, 2)] * 3
    other = model(torch.rand(1, 3, 48, 64))  # other sizes run on interpolated positions
    assert other.stages[0].shape == (1, W, 3, 4)
    (sum(s.mean() for s in out.stages) + out.embedding.pow(2).mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert p.grad.abs().sum() > 0


@pytest.mark.parametrize("taps", [(3, 12), (5, 3), (1, 1)])
def test_bad_taps_are_rejected(taps: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="taps"):
        ViT(ViTConfig(size="vit_ti16", taps=taps))


@pytest.mark.parametrize("style", ["clip", "mae"])
@torch.no_grad()
def test_from_checkpoint_round_trip_detects_style(tmp_path, style: str) -> None:
    torch.manual_seed(3)
    sd = clip_checkpoint(grid=4) if style == "clip" else mae_checkpoint(grid=4)
    save_file(sd, tmp_path / "ckpt.safetensors")
    torch.save({"state_dict" if style == "clip" else "model": sd}, tmp_path / "ckpt.pth")
    expected = ViT(ViTConfig(size="vit_ti16", style=style, input_size=48, proj_dim=OUT)).eval()
    filt = filter_clip_checkpoint if style == "clip" else filter_mae_checkpoint
    expected.load_state_dict(filt(sd, model_grid=3), strict=True)
    images = torch.rand(1, 3, 48, 48)
    for name in ("ckpt.safetensors", "ckpt.pth"):
        model = ViT.from_checkpoint(tmp_path / name, size="vit_ti16", input_size=48).eval()
        assert model.cfg.style == style
        got, want = model(images), expected(images)
        torch.testing.assert_close(got.embedding, want.embedding)
        for a, b in zip(got.stages, want.stages, strict=True):
            torch.testing.assert_close(a, b)


def test_from_checkpoint_reports_missing_and_unexpected(tmp_path) -> None:
    sd = mae_checkpoint(grid=4)
    del sd["blocks.4.norm1.bias"]
    sd["blocks.4.extra"] = torch.zeros(1)
    save_file(sd, tmp_path / "broken.safetensors")
    with pytest.raises(ValueError, match=r"missing \['blocks.4.norm1.bias'\], unexpected \['blocks.4.extra'\]"):
        ViT.from_checkpoint(tmp_path / "broken.safetensors", size="vit_ti16", input_size=64)
