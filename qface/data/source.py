"""Training data as the trainer sees it: one `Source` per dataset split, from the chip cache (labels.npz, optional
teacher_mediapipe.npz) and either the frozen-backbone feature cache or the chips themselves."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch

from qface.data.transforms import hflip_landmark_mask, hflip_landmarks_normalised, hflip_pose
from qface.tasks import TASKS

TEACHER_FILE = "teacher_mediapipe.npz"


def features_folder(chips_folder: str | Path, backbone: dict, grid: int) -> Path:
    """Where the frozen-backbone features of a chip cache live (qface/train/features.py builds them)."""
    return Path(chips_folder) / f"features-{backbone['name']}-g{grid}"


def split_with_holdout(arrays: dict[str, np.ndarray], fraction: float) -> np.ndarray:
    """The cache's `split` column with a fixed `fraction` of its train faces moved to "val", for data sets that have
    no validation split of their own. Whole groups move together (the subject where the data set names one, else
    the source file), chosen by a hash of the group's name, so no person is on both sides and the choice never
    changes between runs."""
    split = arrays["split"].copy()
    if fraction <= 0:
        return split
    subjects = arrays.get("subject", np.full(len(split), "", dtype=str))
    groups = np.where(subjects != "", subjects, arrays["source"])
    held_out = np.array([zlib.crc32(str(group).encode()) % 10_000 < fraction * 10_000 for group in groups], bool)
    split[(split == "train") & held_out] = "val"
    return split


class Source:
    """One dataset split. Knows which tasks it labels, and draws deterministic batches: batch `step` is a
    pure function of (seed, step), so a resumed run sees exactly the batches an uninterrupted one would."""

    def __init__(
        self,
        folder: str | Path,
        split: str,
        features: str | None = None,
        flip: bool = False,
        tasks: list[str] | None = None,
        val_holdout: float = 0.0,
    ):
        """`val_holdout`: the fraction of train faces that serve as "val" (see `split_with_holdout`)."""
        self.folder, self.name, self.flip = Path(folder), Path(folder).name, flip
        arrays = dict(np.load(self.folder / "labels.npz", allow_pickle=False))
        taught = {}
        if (self.folder / TEACHER_FILE).exists():
            taught = dict(np.load(self.folder / TEACHER_FILE))
            arrays.update(taught)
        self.index = np.flatnonzero(split_with_holdout(arrays, val_holdout) == split)
        self.arrays = {k: v[self.index] for k, v in arrays.items() if v.ndim and len(v) == len(arrays["split"])}
        labelled = [t for t in TASKS if f"{t}_mask" in self.arrays and self.arrays[f"{t}_mask"].any()]
        self.tasks = [t for t in labelled if tasks is None or t in tasks]  # `tasks`: train only these
        self.teacher_tasks = [t for t in self.tasks if f"{t}_mask" in taught]  # never reported as ground truth
        if features:
            cached = self.folder / features
            self.maps, self.maps_flipped = (np.load(cached / f"maps{s}.npy", mmap_mode="r") for s in ("", "_flipped"))
            self.embedding, self.embedding_flipped = (
                np.load(cached / f"embedding{s}.npy", mmap_mode="r") for s in ("", "_flipped")
            )
        else:
            self.chips = np.load(self.folder / "chips.npy", mmap_mode="r")
        self.uses_features = features is not None

    def __len__(self) -> int:
        return len(self.index)

    def batch_indices(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """Positions (into this split) of batch `step`: walks a fresh permutation each epoch."""
        per_epoch = max(len(self) // batch_size, 1)
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng([seed, epoch, len(self)]).permutation(len(self))
        return np.sort(order[position * batch_size : (position + 1) * batch_size])

    def load(self, positions: np.ndarray, rng: np.random.Generator | None = None) -> dict:
        """Inputs, targets and masks of the faces at `positions`. With `rng` and `flip`, half are mirrored: the
        chip itself, or its mirrored features (cached beside the plain ones), and the pose and landmark labels."""
        rows = self.index[positions]
        targets = {t: torch.from_numpy(np.array(self.arrays[t][positions])) for t in self.tasks}
        masks = {t: torch.from_numpy(np.array(self.arrays[f"{t}_mask"][positions])).bool() for t in self.tasks}
        mirrored = np.zeros(len(rows), bool)
        if rng is not None and self.flip:
            mirrored = rng.random(len(rows)) < 0.5
        if self.uses_features:
            inputs = {
                name: torch.from_numpy(
                    np.where(mirrored.reshape(-1, *[1] * (plain.ndim - 1)), flipped[rows], plain[rows])
                ).float()
                for name, plain, flipped in (
                    ("maps", self.maps, self.maps_flipped),
                    ("embedding", self.embedding, self.embedding_flipped),
                )
            }
        else:
            images = torch.from_numpy(np.array(self.chips[rows])).permute(0, 3, 1, 2).float() / 255
            images[mirrored] = images[mirrored].flip(-1)
            inputs = {"images": images}
        mirrored = torch.from_numpy(mirrored)
        if "pose" in targets:
            targets["pose"][mirrored] = hflip_pose(targets["pose"][mirrored])
        if "landmarks" in targets:
            targets["landmarks"][mirrored] = hflip_landmarks_normalised(targets["landmarks"][mirrored])
            masks["landmarks"][mirrored] = hflip_landmark_mask(masks["landmarks"][mirrored])
        return {"inputs": inputs, "targets": targets, "masks": masks}
