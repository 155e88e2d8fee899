"""Training data as the trainer sees it: one `Source` per dataset split, from the chip cache (labels.npz, optional
teacher_mediapipe.npz) and either the frozen-backbone feature cache or the chips themselves."""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import torch

from qface.data.base import chips_fingerprint
from qface.data.ferplus import FERPLUS_FILE
from qface.data.transforms import hflip_landmark_mask, hflip_landmarks_normalised, hflip_pose
from qface.tasks import TASKS

TEACHER_FILE = "teacher_mediapipe.npz"


def features_key(chips_folder: str | Path, backbone: dict, grid: int) -> dict:
    """What a feature cache is made from: the backbone (its full spec, taps and checkpoint included), the grid the
    stages are resampled to, and the chips themselves (their fingerprint)."""
    chips = np.load(Path(chips_folder) / "chips.npy", mmap_mode="r")
    return {"backbone": backbone, "grid": grid, "chips": chips_fingerprint(chips)}


def features_folder(chips_folder: str | Path, key: dict) -> Path:
    """Where the features of `key` live: a folder named by a digest of the key, beside the chips, so a change of
    backbone, taps, grid or chips makes a new cache instead of reusing a stale one."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(chips_folder) / f"features-{key['backbone']['name']}-g{key['grid']}-{digest}"


def finished_features(chips_folder: str | Path, key: dict) -> Path | None:
    """The feature cache of `key` when it is complete and was made from exactly that key, else None."""
    folder = features_folder(chips_folder, key)
    meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").exists() else {}
    return folder if meta.get("key") == key and meta.get("done") == meta.get("count") else None


def merge_teacher(arrays: dict[str, np.ndarray], taught: dict[str, np.ndarray]) -> list[str]:
    """Adds teacher labels where a face has no human label of that task (never over one), and a per-face
    `<task>_taught` column saying which labels came from the teacher. Returns the tasks the teacher labels."""
    tasks = [name[: -len("_mask")] for name in taught if name.endswith("_mask")]
    for task in tasks:
        mask = taught[f"{task}_mask"]
        human = arrays.get(f"{task}_mask", np.zeros_like(mask))
        fill = ~human.any(1) & mask.any(1)
        values = arrays.get(task, np.zeros_like(taught[task])).copy()
        values[fill] = taught[task][fill]
        arrays[task], arrays[f"{task}_mask"] = values, np.where(fill[:, None], mask, human)
        arrays[f"{task}_taught"] = fill
    return tasks


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
        features: dict | None = None,
        flip: bool = False,
        tasks: list[str] | None = None,
        val_holdout: float = 0.0,
    ):
        """`features`: read the frozen-backbone features of this `features_key` instead of the chips (refused when
        that cache is missing, unfinished or made from anything else). `val_holdout`: the fraction of train faces
        that serve as "val" (see `split_with_holdout`). Teacher labels (teacher_mediapipe.npz) are used only for
        the chips they were made from, and only where a face has no human label."""
        self.folder, self.name, self.flip = Path(folder), Path(folder).name, flip
        arrays = dict(np.load(self.folder / "labels.npz", allow_pickle=False))
        self.chips = np.load(self.folder / "chips.npy", mmap_mode="r")
        taught = []
        if (self.folder / TEACHER_FILE).exists():
            teacher = dict(np.load(self.folder / TEACHER_FILE))
            if str(teacher.get("chips_fingerprint")) != chips_fingerprint(self.chips):
                raise ValueError(f"{self.folder / TEACHER_FILE} labels other chips: delete it to relabel")
            taught = merge_teacher(arrays, teacher)
        if (self.folder / FERPLUS_FILE).exists():  # FER+ vote distributions: what expression trains on
            arrays.update(np.load(self.folder / FERPLUS_FILE))
        self.index = np.flatnonzero(split_with_holdout(arrays, val_holdout) == split)
        self.arrays = {k: v[self.index] for k, v in arrays.items() if v.ndim and len(v) == len(arrays["split"])}
        labelled = [t for t in TASKS if f"{t}_mask" in self.arrays and self.arrays[f"{t}_mask"].any()]
        self.tasks = [t for t in labelled if tasks is None or t in tasks]  # `tasks`: train only these
        # tasks with teacher labels in this split: scored as agreement with the teacher, never as ground truth
        self.teacher_tasks = [t for t in self.tasks if t in taught and self.arrays[f"{t}_taught"].any()]
        if features:
            cached = finished_features(self.folder, features)
            if cached is None:
                raise ValueError(f"{self.folder}: no finished feature cache of {features} (`qface train` builds it)")
            # plain and mirrored arrays; `tuned_input` is the input of a fine-tuned backbone's first tuned level
            names = ("maps", "embedding") + (("tuned_input",) if "tuned_from" in features["backbone"] else ())
            self.cached = {
                name: tuple(np.load(cached / f"{name}{s}.npy", mmap_mode="r") for s in ("", "_flipped"))
                for name in names
            }
        self.uses_features = features is not None

    def target_key(self, task: str) -> str:
        """The array a task trains on: FER+'s vote distribution where present, else the task's own labels."""
        return "expression_soft" if task == "expression" and "expression_soft" in self.arrays else task

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
        keys = {t: self.target_key(t) for t in self.tasks}
        targets = {t: torch.from_numpy(np.array(self.arrays[key][positions])) for t, key in keys.items()}
        masks = {t: torch.from_numpy(np.array(self.arrays[f"{key}_mask"][positions])) for t, key in keys.items()}
        mirrored = np.zeros(len(rows), bool)
        if rng is not None and self.flip:
            mirrored = rng.random(len(rows)) < 0.5
        if self.uses_features:
            inputs = {
                name: torch.from_numpy(
                    np.where(mirrored.reshape(-1, *[1] * (plain.ndim - 1)), flipped[rows], plain[rows])
                ).float()
                for name, (plain, flipped) in self.cached.items()
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
