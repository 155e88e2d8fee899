"""Frozen-backbone feature cache: on a CPU the backbone is nearly all the cost, so with it frozen its resampled
stage maps are computed once per face and every training epoch after that only runs fusion, decoder and heads.

Layout of one cache folder (one per dataset, beside the chips it was made from):
    maps.npy       float16 (N, sum of stage channels, grid, grid): `MultiStageFusion.resample` of every stage
    embedding.npy  float32 (N, E): the backbone's own descriptor
    maps_flipped.npy, embedding_flipped.npy   the same for the horizontally mirrored chips
    tuned_input.npy, tuned_input_flipped.npy  float16 (N, C, H, W), only for a backbone with `tuned_from`: the input
                   of its first tuned level, from which training runs the tuned levels live
    meta.json      the key it was made from (backbone spec, grid, chips fingerprint) and how far it got;
                   the folder's name ends in a digest of that key, and a reader refuses any other
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from qface.data.source import features_folder, features_key
from qface.model.backbones import Backbone, build_backbone
from qface.model.fusion import resample
from qface.model.qface import backbone_input


@torch.inference_mode()
def build_feature_cache(chips_folder: str | Path, backbone: dict, grid: int, batch_size: int = 64) -> Path:
    """Runs the backbone over `chips.npy` and over its mirror image once, into the folder of its `features_key`
    (this backbone's spec completed by the built backbone's, the grid, these chips); resumable: it continues after
    the last finished batch of the same key. The mirrored features let training flip faces without running the
    backbone again."""
    chips = np.load(Path(chips_folder) / "chips.npy", mmap_mode="r")
    model = build_backbone(**backbone).eval()
    key = features_key(chips_folder, {**backbone, **model.spec()}, grid)  # as TrainConfig.backbone_spec
    out = features_folder(chips_folder, key)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"key": key, "count": len(chips), "done": 0}
    if (out / "meta.json").exists() and json.loads((out / "meta.json").read_text()).get("key") == key:
        meta["done"] = json.loads((out / "meta.json").read_text())["done"]
    mode = "r+" if meta["done"] else "w+"
    shapes = {"maps": (sum(model.stage_channels), grid, grid), "embedding": (max(model.embedding_dim, 1),)}
    tuned_from, captured = getattr(model, "tuned_from", None), {}
    if tuned_from is not None:  # the tuned levels' input, caught on its way in
        model.levels[tuned_from].register_forward_pre_hook(lambda _, inputs: captured.update(x=inputs[0]))
        model(torch.zeros(1, 3, model.input_size, model.input_size))
        shapes["tuned_input"] = tuple(captured["x"].shape[1:])
    arrays = {
        name + suffix: np.lib.format.open_memmap(
            out / f"{name}{suffix}.npy", mode, np.float32 if name == "embedding" else np.float16, (len(chips), *shape)
        )
        for name, shape in shapes.items()
        for suffix in ("", "_flipped")
    }
    for start in tqdm(range(meta["done"], len(chips), batch_size), desc=f"features {chips_folder}"):
        batch = torch.from_numpy(np.array(chips[start : start + batch_size])).permute(0, 3, 1, 2).float() / 255
        batch = backbone_input(batch, model.input_size)
        for suffix, images in (("", batch), ("_flipped", batch.flip(-1))):
            maps, embedding = features_of(model, images, grid)
            arrays["maps" + suffix][start : start + len(batch)] = maps
            if embedding is not None:
                arrays["embedding" + suffix][start : start + len(batch)] = embedding
            if tuned_from is not None:
                arrays["tuned_input" + suffix][start : start + len(batch)] = captured["x"].numpy()
        meta["done"] = start + len(batch)
        if (start // batch_size) % 20 == 0 or meta["done"] == len(chips):
            for array in arrays.values():
                array.flush()
            (out / "meta.json").write_text(json.dumps(meta))
    return out


def features_of(model: Backbone, images: torch.Tensor, grid: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One cache row per image: every stage resampled to the grid, concatenated; and the backbone's descriptor."""
    features = model(images)
    maps = torch.cat([resample(stage, grid) for stage in features.stages], 1).numpy()
    return maps, None if features.embedding is None else features.embedding.numpy()


@torch.inference_mode()
def adopt_unkeyed_cache(chips_folder: str | Path, backbone: dict, grid: int, samples: int = 8) -> Path | None:
    """A complete cache from before caches had keys (`features-<name>-g<grid>`, meta.json without a key) becomes the
    cache of this key, without recomputing it, when it has a row per chip and the backbone reproduces its stored maps
    and descriptors on `samples` evenly spaced chips (other taps or weights would not). Else None."""
    legacy = Path(chips_folder) / f"features-{backbone['name']}-g{grid}"
    meta = json.loads((legacy / "meta.json").read_text()) if (legacy / "meta.json").exists() else {}
    chips = np.load(Path(chips_folder) / "chips.npy", mmap_mode="r")
    if "key" in meta or meta.get("grid") != grid or not meta.get("done") == meta.get("count") == len(chips) > 0:
        return None
    if "tuned_from" in backbone and not (legacy / "tuned_input.npy").exists():
        return None
    model = build_backbone(**backbone).eval()
    rows = np.unique(np.linspace(0, len(chips) - 1, min(samples, len(chips))).round().astype(int))
    images = backbone_input(torch.from_numpy(chips[rows].copy()).permute(0, 3, 1, 2).float() / 255, model.input_size)
    maps, embedding = features_of(model, images, grid)
    stored = np.load(legacy / "maps.npy", mmap_mode="r")
    if stored.shape[1:] != maps.shape[1:] or not np.allclose(stored[rows], maps, rtol=1e-2, atol=1e-2):
        return None
    if embedding is not None and not np.allclose(np.load(legacy / "embedding.npy")[rows], embedding, atol=1e-3):
        return None
    key = features_key(chips_folder, {**backbone, **model.spec()}, grid)
    (legacy / "meta.json").write_text(json.dumps({"key": key, "count": len(chips), "done": len(chips)}))
    return legacy.rename(features_folder(chips_folder, key))


if __name__ == "__main__":  # python -m qface.train.features GRID FOLDER... (dlib backbone)
    for folder in sys.argv[2:]:
        build_feature_cache(folder, {"name": "dlib_resnet"}, int(sys.argv[1]))
