"""Adapters for the research data sets in ../shared/data: each reads one data set in its public format and yields
`LabelledFace`s (qface/data/base.py), with the data set's label codes mapped to qface's orders explicitly below.

    FER2013   expression (7 of 8 classes: no contempt)                          split Training/PublicTest
    CK+48     expression (7 of 8: no neutral) + action units (CK+ FACS coding)   subject-disjoint folds
    UTKFace   age + the CelebA attribute `Male` (only that column masked in)     fixed 10 % by file-name hash
    CelebA    the 40 attributes                                                  official partition

Every adapter is an iterable with a cheap `len()`, takes the data set's root folder (default:
../shared/data/<name> beside the repository) and an optional `limit` (the first `limit` faces in file order).
The data are research-only: adapters read them in place and never copy them.
"""

from __future__ import annotations

import csv
import lzma
import re
import warnings
import zlib
from collections import defaultdict
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import numpy as np

from qface.data.base import Adapter, LabelledFace, label_mask, read_image, to_rgb
from qface.tasks import ACTION_UNITS, CELEBA_ATTRIBUTES, EXPRESSIONS

# --- label codes -------------------------------------------------------------------------------------------------

FER2013_EXPRESSIONS = {  # official FER2013 code → index into EXPRESSIONS
    0: EXPRESSIONS.index("anger"),
    1: EXPRESSIONS.index("disgust"),
    2: EXPRESSIONS.index("fear"),
    3: EXPRESSIONS.index("happy"),
    4: EXPRESSIONS.index("sad"),
    5: EXPRESSIONS.index("surprise"),
    6: EXPRESSIONS.index("neutral"),
}
FER2013_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
FER2013_SIZE = 48

CKPLUS_EXPRESSIONS = {  # CK+48 folder name (CK+ codes 1-7 in this order) → index into EXPRESSIONS
    "anger": EXPRESSIONS.index("anger"),
    "contempt": EXPRESSIONS.index("contempt"),
    "disgust": EXPRESSIONS.index("disgust"),
    "fear": EXPRESSIONS.index("fear"),
    "happy": EXPRESSIONS.index("happy"),
    "sadness": EXPRESSIONS.index("sad"),
    "surprise": EXPRESSIONS.index("surprise"),
}
CKPLUS_FOLDS = 5  # subjects, sorted, are dealt round-robin to folds; fold CKPLUS_VAL_FOLD is validation
CKPLUS_VAL_FOLD = 0

UTKFACE_GENDERS = {0: "male", 1: "female"}
UTKFACE_RACES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Others"}
UTKFACE_VAL_BUCKETS = 10  # zlib.crc32(file name) % 10 == 0 → "val" (a fixed 10 %), else "train"
UTKFACE_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_[^_]+\.jpg\.chip\.jpg$")

W300_SUBSETS = ("helen_train", "afw")
W300_VAL_BUCKETS = 5  # zlib.crc32(photo id) % 5 == 0 → "val": a fixed ~20 % of the photos (all of a photo's faces)

CELEBA_VALUES = {"1": 1.0, "-1": 0.0}
CELEBA_SPLITS = {0: "train", 1: "val", 2: "test"}


# --- masks shared by every face of a data set ----------------------------------------------------------------------


FER2013_EXPRESSION_MASK = label_mask(EXPRESSIONS, lambda name: name != "contempt")
CKPLUS_EXPRESSION_MASK = label_mask(EXPRESSIONS, lambda name: name != "neutral")
UTKFACE_ATTRIBUTE_MASK = label_mask(CELEBA_ATTRIBUTES, lambda name: name == "Male")
MALE = CELEBA_ATTRIBUTES.index("Male")


# --- FER2013 -------------------------------------------------------------------------------------------------------


class FER2013(Adapter):
    """`fer2013.csv.xz` (Kaggle format `emotion,pixels,Usage`); source = the 0-based data-row index."""

    name = "fer2013"
    tasks = ("expression",)
    splits = ("train", "val", "test")

    @property
    def path(self) -> Path:
        for candidate in (self.root / "fer2013.csv.xz", self.root / "fer2013.csv"):
            if candidate.exists():
                return candidate
        raise FileNotFoundError(f"fer2013: no fer2013.csv.xz in {self.root}")

    def _open(self):
        path = self.path
        opener = lzma.open if path.suffix == ".xz" else open
        return opener(path, "rt", newline="", encoding="ascii")

    @cached_property
    def _count(self) -> int:
        """Data rows, counted from the newlines (decompressing takes seconds, so with a limit it stops there)."""
        path, lines, last = self.path, 0, b"\n"
        opener = lzma.open if path.suffix == ".xz" else open
        with opener(path, "rb") as stream:
            while (self.limit is None or lines <= self.limit) and (block := stream.read(1 << 20)):
                lines, last = lines + block.count(b"\n"), block[-1:]
        return lines + (last != b"\n") - 1  # minus the header; a last line without LF still counts

    def __len__(self) -> int:
        return self._cap(self._count)

    def __iter__(self) -> Iterator[LabelledFace]:
        with self._open() as stream:
            reader = csv.reader(stream)
            header = next(reader)
            if [h.strip() for h in header[:3]] != ["emotion", "pixels", "Usage"]:
                raise ValueError(f"fer2013: unexpected header {header}")
            for row_index, (code, pixels, usage) in enumerate(reader):
                if self.limit is not None and row_index >= self.limit:
                    return
                grey = np.fromstring(pixels, dtype=np.uint8, sep=" ")
                if grey.size != FER2013_SIZE * FER2013_SIZE:
                    raise ValueError(f"fer2013 row {row_index}: {grey.size} pixels, expected {FER2013_SIZE**2}")
                yield LabelledFace(
                    image=to_rgb(grey.reshape(FER2013_SIZE, FER2013_SIZE)),
                    labels={"expression": FER2013_EXPRESSIONS[int(code)]},
                    masks={"expression": FER2013_EXPRESSION_MASK.copy()},
                    meta={"split": FER2013_SPLITS[usage.strip()], "source": row_index},
                )


# --- CK+48 ---------------------------------------------------------------------------------------------------------


def ckplus_folds(subjects) -> dict[str, int]:
    """Subject → fold: the sorted distinct subjects dealt round-robin to CKPLUS_FOLDS folds (subject-disjoint)."""
    return {subject: i % CKPLUS_FOLDS for i, subject in enumerate(sorted(set(subjects)))}


def _au_index(code: str) -> int | None:
    """CK+ `au` value → index into ACTION_UNITS; None for codes qface does not model or malformed ones."""
    try:
        value = float(code)
    except ValueError:
        return None
    if value != int(value):
        return None
    name = f"AU{int(value):02d}"
    return ACTION_UNITS.index(name) if name in ACTION_UNITS else None


class CKPlus(Adapter):
    """CK+48: `emotions.csv` (one row per image) + `facs.csv` (the AUs coded at each sequence's peak frame).

    The sequence's AUs label all three of its images. Folds are computed over every subject in emotions.csv
    (before `limit`), so a face's fold never depends on the limit."""

    name = "ckplus"
    tasks = ("expression", "action_units")
    splits = ("train", "val")

    @cached_property
    def _rows(self) -> list[dict[str, str]]:
        with open(self.root / "emotions.csv", newline="", encoding="utf-8") as stream:
            return list(csv.DictReader(stream))

    @cached_property
    def _action_units(self) -> dict[tuple[str, str], np.ndarray]:
        """(subject, sequence) → multi-hot over ACTION_UNITS; codes outside ACTION_UNITS are ignored."""
        coded: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(len(ACTION_UNITS), np.float32))
        with open(self.root / "facs.csv", newline="", encoding="utf-8") as stream:
            for row in csv.DictReader(stream):
                hot = coded[(row["subject"], row["sequence"])]  # creates the entry even for an ignored code
                index = _au_index(row["au"])
                if index is not None:
                    hot[index] = 1.0
        return dict(coded)

    def __len__(self) -> int:
        return self._cap(len(self._rows))

    def __iter__(self) -> Iterator[LabelledFace]:
        folds = ckplus_folds(row["subject"] for row in self._rows)
        for row in self._rows[: len(self)]:
            key = (row["subject"], row["sequence"])
            action_units = self._action_units.get(key)
            coded = action_units is not None  # a sequence absent from facs.csv has unknown AUs (masked out)
            fold = folds[row["subject"]]
            yield LabelledFace(
                image=read_image(self.root / row["file"]),
                labels={
                    "expression": CKPLUS_EXPRESSIONS[row["emotion"]],
                    "action_units": action_units.copy() if coded else np.zeros(len(ACTION_UNITS), np.float32),
                },
                masks={
                    "expression": CKPLUS_EXPRESSION_MASK.copy(),
                    "action_units": np.full(len(ACTION_UNITS), coded),  # CK+ codes every AU of ACTION_UNITS
                },
                meta={
                    "split": "val" if fold == CKPLUS_VAL_FOLD else "train",
                    "fold": fold,
                    "subject": row["subject"],
                    "sequence": row["sequence"],
                    "frame": int(row["frame"]),
                    "source": row["file"],
                },
            )


# --- UTKFace -------------------------------------------------------------------------------------------------------


def utkface_split(file_name: str) -> str:
    return "val" if zlib.crc32(file_name.encode("utf-8")) % UTKFACE_VAL_BUCKETS == 0 else "train"


def parse_utkface_name(file_name: str) -> tuple[int, int, int] | None:
    """`<age>_<gender>_<race>_<datetime>.jpg.chip.jpg` → (age, gender, race); None when malformed."""
    match = UTKFACE_NAME.match(file_name)
    if match is None:
        return None
    age, gender, race = (int(group) for group in match.groups())
    if gender not in UTKFACE_GENDERS or race not in UTKFACE_RACES:
        return None
    return age, gender, race


class UTKFace(Adapter):
    """UTKFace aligned & cropped: labels from the file names; malformed names are skipped with a warning."""

    name = "utkface"
    tasks = ("age", "attributes")
    splits = ("train", "val")

    @cached_property
    def _files(self) -> list[tuple[Path, tuple[int, int, int]]]:
        folder = self.root / "UTKFace" if (self.root / "UTKFace").is_dir() else self.root
        files, malformed = [], []
        for path in sorted(folder.iterdir()):
            if not path.name.lower().endswith((".jpg", ".jpeg", ".png")):
                continue
            parsed = parse_utkface_name(path.name)
            if parsed is None:
                malformed.append(path.name)
            else:
                files.append((path, parsed))
        if malformed:
            warnings.warn(
                f"utkface: skipped {len(malformed)} file(s) whose names do not follow "
                f"<age>_<gender>_<race>_<datetime>.jpg.chip.jpg, e.g. {malformed[:3]}",
                stacklevel=2,
            )
        return files

    def __len__(self) -> int:
        return self._cap(len(self._files))

    def __iter__(self) -> Iterator[LabelledFace]:
        for path, (age, gender, race) in self._files[: len(self)]:
            attributes = np.zeros(len(CELEBA_ATTRIBUTES), np.float32)
            attributes[MALE] = 1.0 if UTKFACE_GENDERS[gender] == "male" else 0.0
            yield LabelledFace(
                image=read_image(path),
                labels={"age": float(age), "attributes": attributes},
                masks={"age": np.ones(1, bool), "attributes": UTKFACE_ATTRIBUTE_MASK.copy()},
                meta={
                    "split": utkface_split(path.name),
                    "gender": UTKFACE_GENDERS[gender],
                    "race": UTKFACE_RACES[race],
                    "source": path.name,
                },
            )


# --- CelebA --------------------------------------------------------------------------------------------------------


def _celeba_pairs(path: Path) -> dict[str, int]:
    pairs = {}
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            if fields := line.split():
                pairs[fields[0]] = int(fields[1])
    return pairs


class CelebA(Adapter):
    """CelebA's canonical layout: list_attr_celeba.txt, list_eval_partition.txt, identity_CelebA.txt and
    img_align_celeba/; attributes 1 → 1.0, -1 → 0.0."""

    name = "celeba"
    tasks = ("attributes",)
    splits = ("train", "val", "test")

    @cached_property
    def _rows(self) -> list[tuple[str, np.ndarray]]:
        with open(self.root / "list_attr_celeba.txt", encoding="utf-8") as stream:
            count = int(stream.readline())
            names = stream.readline().split()
            if tuple(names) != tuple(CELEBA_ATTRIBUTES):
                raise ValueError(f"celeba: attribute names differ from CelebA's order: {names}")
            rows = []
            for line in stream:
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != len(names) + 1:
                    raise ValueError(f"celeba: {len(fields) - 1} values for {fields[0]}, expected {len(names)}")
                rows.append((fields[0], np.array([CELEBA_VALUES[v] for v in fields[1:]], np.float32)))
        if len(rows) != count:
            raise ValueError(f"celeba: list_attr_celeba.txt announces {count} images but lists {len(rows)}")
        return rows

    @cached_property
    def _partition(self) -> dict[str, int]:
        return _celeba_pairs(self.root / "list_eval_partition.txt")

    @cached_property
    def _identity(self) -> dict[str, int]:
        return _celeba_pairs(self.root / "identity_CelebA.txt")

    def __len__(self) -> int:
        return self._cap(len(self._rows))

    def __iter__(self) -> Iterator[LabelledFace]:
        for file_name, attributes in self._rows[: len(self)]:
            yield LabelledFace(
                image=read_image(self.root / "img_align_celeba" / file_name),
                labels={"attributes": attributes.copy()},
                masks={"attributes": np.ones(len(CELEBA_ATTRIBUTES), bool)},
                meta={
                    "split": CELEBA_SPLITS[self._partition[file_name]],
                    "identity": self._identity[file_name],
                    "source": file_name,
                },
            )


# --- 300-W (HELEN train + AFW) -------------------------------------------------------------------------------------


def read_pts(path: Path) -> np.ndarray:
    """A 300-W `.pts` file (with or without its `version/n_points/{ }` header) → (N, 2) float32 as written."""
    rows = [line.split() for line in path.read_text(encoding="ascii").splitlines()]
    points = [(float(row[0]), float(row[1])) for row in rows if len(row) == 2 and row[0][0] in "-.0123456789"]
    return np.asarray(points, np.float32)


def w300_split(stem: str) -> str:
    """By photo (`<photo id>_<face number>`), so faces of one photo never straddle train and val."""
    photo = stem.rsplit("_", 1)[0]
    return "val" if zlib.crc32(photo.encode("utf-8")) % W300_VAL_BUCKETS == 0 else "train"


class W300(Adapter):
    """300-W faces (HELEN train + AFW) with human iBUG-68 landmarks: `manifest.csv` + `<subset>/<stem>.jpg/.pts`.

    The files keep 300-W's 1-based (Matlab) pixel convention through a resize by `scale`; the adapter converts to
    qface's (0-based pixel centres): p − 1 + 0.5 × (1 − scale)."""

    name = "300w"
    tasks = ("landmarks",)
    splits = ("train", "val")

    @cached_property
    def _rows(self) -> list[dict[str, str]]:
        with open(self.root / "manifest.csv", newline="", encoding="ascii") as stream:
            return [row for row in csv.DictReader(stream) if row["subset"] in W300_SUBSETS]

    def __len__(self) -> int:
        return self._cap(len(self._rows))

    def __iter__(self) -> Iterator[LabelledFace]:
        for row in self._rows[: len(self)]:
            folder = self.root / row["subset"]
            points = read_pts(folder / f"{row['stem']}.pts")
            if points.shape != (68, 2):
                raise ValueError(f"300w {row['stem']}: {len(points)} points, expected 68")
            yield LabelledFace(
                image=read_image(folder / f"{row['stem']}.jpg"),
                labels={"landmarks": points - 1.0 + 0.5 * (1.0 - float(row["scale"]))},
                masks={"landmarks": np.ones(68, bool)},
                meta={
                    "split": w300_split(row["stem"]),
                    "subject": row["stem"].rsplit("_", 1)[0],
                    "source": row["stem"],
                },
            )


DATASETS: dict[str, type[Adapter]] = {a.name: a for a in (FER2013, CKPlus, UTKFace, CelebA, W300)}
