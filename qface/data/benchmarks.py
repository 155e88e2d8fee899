"""Adapters for the paper's benchmarks, for users who have them: each reads one data set in its own public release
format and yields `LabelledFace`s (qface/data/base.py), with every label code mapped explicitly below.

    RAF-DB basic   expression (7 of 8: no contempt)                       official train/test (file-name prefix)
    AffectNet      expression (8; codes 8-10 skipped), face box cropped    training.csv → train, validation.csv → test
    BP4D           action units: the 12 protocol AUs, 9 → masked per frame   3 subject-disjoint protocol parts
    DISFA          action units: its 12 coded AUs, occurrence = intensity ≥ 2   3 subject-disjoint protocol parts
    MORPH II       age (gender and race in meta)                           subject-disjoint 10 % hash → val
    300W-LP        pose (+ 68 landmarks from its landmarks/ folder)        train
    AFLW2000-3D    pose + 68 landmarks (pt3d_68)                           test
    FG-NET         age (its own 68-point markup in meta, not as landmarks)  subject-disjoint folds
    JAFFE          expression (7 of 8: no contempt), grey → 3 channels     subject-disjoint folds

None of these ships with qface (they are licensed to their users); every adapter takes the data set's root folder
(default ../shared/data/<name>, like qface/data/datasets.py), an optional `limit`, and never copies the data.
`meta["subject"]` is the person where the release identifies one, else None (RAF-DB, AffectNet, AFLW2000-3D).
The 300W-LP/AFLW2000-3D adapters need scipy (for .mat files), imported only when they read one.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import numpy as np

from qface.data.base import Adapter, LabelledFace, label_mask, read_image
from qface.data.datasets import CKPLUS_VAL_FOLD, ckplus_folds, utkface_split
from qface.resources import require
from qface.tasks import ACTION_UNITS, EXPRESSIONS, POSE_ANGLES

E = EXPRESSIONS.index
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

# Data sets without an official split are dealt into subject-disjoint folds exactly like CK+ (sorted subjects
# round-robin into CKPLUS_FOLDS folds, fold CKPLUS_VAL_FOLD is validation); `meta["fold"]` allows cross-validation.
subject_folds = ckplus_folds
SUBJECT_VAL_FOLD = CKPLUS_VAL_FOLD

# --- RAF-DB (basic) ------------------------------------------------------------------------------------------------
# EmoLabel/list_patition_label.txt, one `<image name> <code>` per line (the release's README):
RAFDB_EXPRESSIONS = {
    1: E("surprise"),
    2: E("fear"),
    3: E("disgust"),
    4: E("happy"),  # "Happiness"
    5: E("sad"),  # "Sadness"
    6: E("anger"),
    7: E("neutral"),
}
RAFDB_SPLITS = {"train": "train", "test": "test"}  # the image name's prefix: train_00001.jpg, test_0001.jpg
RAFDB_EXPRESSION_MASK = label_mask(EXPRESSIONS, lambda name: name != "contempt")
# Annotation/manual/<stem>_manu_attri.txt: 5 landmark lines (on the original image), then gender, race, age group.
RAFDB_GENDERS = {0: "male", 1: "female", 2: "unsure"}
RAFDB_RACES = {0: "Caucasian", 1: "African-American", 2: "Asian"}
RAFDB_AGE_GROUPS = {0: "0-3", 1: "4-19", 2: "20-39", 3: "40-69", 4: "70+"}

# --- AffectNet -----------------------------------------------------------------------------------------------------
AFFECTNET_COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
                     "expression", "valence", "arousal")  # fmt: skip
AFFECTNET_EXPRESSIONS = {  # AffectNet's own order, which EXPRESSIONS follows
    0: E("neutral"),
    1: E("happy"),
    2: E("sad"),
    3: E("surprise"),
    4: E("fear"),
    5: E("disgust"),
    6: E("anger"),
    7: E("contempt"),
}
AFFECTNET_SKIPPED = {8: "None", 9: "Uncertain", 10: "No-Face"}  # not expressions: such rows are not yielded
# The official test set is unreleased; the validation set is the benchmark everyone reports on, hence "test".
AFFECTNET_LISTS = {"training.csv": "train", "validation.csv": "test"}
AFFECTNET_LIST_DIRS = ("Manually_Annotated_file_lists", ".")
AFFECTNET_IMAGE_DIRS = ("Manually_Annotated_Images", "Manually_Annotated/Manually_Annotated_Images")  # or the root
AFFECTNET_EXPRESSION_MASK = label_mask(EXPRESSIONS, lambda name: True)

# --- BP4D and DISFA (action-unit occurrence) ----------------------------------------------------------------------
# BP4D: AUCoding/AU_OCC/<subject>_<task>.csv; header row = frame column, then AU numbers; cells 0/1, 9 = unknown.
BP4D_AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)  # the AUs the BP4D benchmark scores; other columns unread
BP4D_OCCURRENCE = {"0": 0.0, "1": 1.0}  # any other cell (the release writes 9) is unknown → masked for that frame
BP4D_CODING_DIR = Path("AUCoding") / "AU_OCC"
BP4D_IMAGE_DIRS = ("Sequences", "img")  # <dir>/<subject>/<task>/<frame>.jpg (any zero padding)
BP4D_CSV_NAME = re.compile(r"^(?P<subject>[FM]\d{3})_(?P<task>T\d+)\.csv$", re.IGNORECASE)
# DISFA: ActionUnit_Labels/<SN>/<SN>_au<n>.txt, lines `frame,intensity` (0-5), frames numbered from 1.
DISFA_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)  # all 12 it codes; the protocol scores 1 2 4 6 9 12 25 26
DISFA_OCCURRENCE_THRESHOLD = 2  # occurrence = intensity >= 2, the usual protocol
DISFA_INTENSITIES = range(6)
DISFA_FIRST_FRAME = 1  # label frame f is the video's (f - 1)-th frame, extracted to img/<SN>/<f - 1>.png
DISFA_LABEL_DIR = "ActionUnit_Labels"
DISFA_IMAGE_DIRS = ("img",)
DISFA_SUBJECT = re.compile(r"^SN\d{3}$")
# The subject-disjoint 3-fold protocol of DRML / JAA-Net / ME-GraphAU (protocol fold k tests part 3 - k).
BP4D_PARTS = (
    ("F001", "M007", "F018", "F008", "F002", "M004", "F010", "F009", "M012", "M001", "F016", "M014", "F023", "M008"),
    ("M011", "F003", "M010", "M002", "F005", "F022", "M018", "M017", "F013", "M016", "F020", "F011", "M013", "M005"),
    ("F007", "F015", "F006", "F019", "M006", "M009", "F012", "M003", "F004", "F021", "F017", "M015", "F014"),
)
DISFA_PARTS = (
    ("SN002", "SN010", "SN001", "SN026", "SN027", "SN032", "SN030", "SN009", "SN016"),
    ("SN013", "SN018", "SN011", "SN028", "SN012", "SN006", "SN031", "SN021", "SN024"),
    ("SN003", "SN029", "SN023", "SN025", "SN008", "SN005", "SN007", "SN017", "SN004"),
)
AU_TEST_PART = 2  # split "test" for this part (protocol fold 1), "train" for the others; meta["fold"] = part

# --- MORPH II (academic release, morph_2008_nonCommercial.csv) -----------------------------------------------------
MORPH_CSV = "morph_2008_nonCommercial.csv"
MORPH_ID = "id_num"
MORPH_PICTURE = "picture_num"
MORPH_DOB = "dob"
MORPH_DOA = "doa"
MORPH_RACE = "race"
MORPH_GENDER = "gender"
MORPH_FACIAL_HAIR = "facial_hair"
MORPH_AGE = "age"
MORPH_AGE_DIFF = "age_diff"
MORPH_GLASSES = "glasses"
MORPH_PHOTO = "photo"  # image path relative to the csv's folder, e.g. Album2/<id>_<n><gender><age>.JPG
MORPH_COLUMNS = (MORPH_ID, MORPH_PICTURE, MORPH_DOB, MORPH_DOA, MORPH_RACE, MORPH_GENDER, MORPH_FACIAL_HAIR,
                 MORPH_AGE, MORPH_AGE_DIFF, MORPH_GLASSES, MORPH_PHOTO)  # fmt: skip
MORPH_GENDERS = {"M": "male", "F": "female"}
MORPH_RACES = {"W": "White", "B": "Black", "A": "Asian", "H": "Hispanic", "O": "Other"}  # other codes kept raw

# --- 300W-LP and AFLW2000-3D (3DDFA .mat files) --------------------------------------------------------------------
# Pose_Para = [pitch, yaw, roll, tx, ty, tz, scale]: angles in radians, in 3DDFA's convention. 3DDFA (and its Python
# port face3d.angle2matrix_3ddfa) builds R = Rx(pitch) @ Ry(yaw) @ Rz(roll), applied to column vectors, with
#     Rx = [[1, 0, 0], [0, c, s], [0, -s, c]],  Ry = [[c, 0, -s], [0, 1, 0], [s, 0, c]],
#     Rz = [[c, s, 0], [-s, c, 0], [0, 0, 1]]   (c, s: cosine and sine of that angle)
# and projects the Basel Face Model (x toward the image's right, y up, z out of the face toward the camera) with
# image_x = x, image_y = height - y. So, one angle at a time:
#   pitch: Rx sends the face's forward axis (0, 0, 1) to (0, sin, cos): pitch > 0 lifts the nose → looks up = ours.
#   yaw:   Ry sends (0, 0, 1) to (-sin, 0, cos): yaw > 0 turns the nose toward the image's LEFT → ours is -yaw.
#   roll:  Rz sends the face's up axis (0, 1, 0) to (sin, cos, 0): the top of the head moves toward the image's right,
#          i.e. the face turns clockwise as the viewer sees it → ours.
# (Hopenet's draw_axis, which plots these labels, negates yaw for the same reason.)
POSE_PARA_ANGLES = ("pitch", "yaw", "roll")  # order of Pose_Para[:3]
POSE_SIGNS_3DDFA = {"pitch": 1.0, "yaw": -1.0, "roll": 1.0}  # 3DDFA sign → qface sign, per angle
POSE_PROTOCOL_LIMIT = 99.0  # degrees: the usual AFLW2000 protocol keeps faces with every |angle| <= 99
LP_FOLDERS = ("AFW", "AFW_Flip", "HELEN", "HELEN_Flip", "IBUG", "IBUG_Flip", "LFPW", "LFPW_Flip")
LP_NAME = re.compile(r"^(?P<face>.+)_(?P<view>\d+)$")  # AFW_134212_1_3: face AFW_134212_1, synthesized view 3
# 300W-LP's own per-view 68 landmarks, landmarks/<folder>/<stem>_pts.mat, (68, 2) each. The per-image `pt2d` is
# not used: several copies carry the source image's points for every synthesized view (3DDFA issue #192).
LP_LANDMARK_KEYS = ("pts_3d", "pts_2d")  # pts_3d: 3D-style contour, the convention of AFLW2000-3D's pt3d_68
AFLW2000_LANDMARK_KEY = "pt3d_68"  # (3, 68): x, y in image pixels, z; its `pt2d` holds AFLW's 21 points

# --- FG-NET ----------------------------------------------------------------------------------------------------------
FGNET_NAME = re.compile(r"^(?P<subject>\d{3})a(?P<age>\d{2})(?P<take>[a-z]?)$", re.IGNORECASE)  # 001A02, 010A07a

# --- JAFFE -----------------------------------------------------------------------------------------------------------
JAFFE_EXPRESSIONS = {
    "AN": E("anger"),
    "DI": E("disgust"),
    "FE": E("fear"),
    "HA": E("happy"),
    "NE": E("neutral"),
    "SA": E("sad"),
    "SU": E("surprise"),
}
JAFFE_NAME = re.compile(r"^(?P<poser>[A-Z]{2})\.(?P<code>[A-Z]{2})(?P<take>\d+)\.(?P<number>\d+)\.tiff?$", re.I)
JAFFE_EXPRESSION_MASK = label_mask(EXPRESSIONS, lambda name: name != "contempt")


def _au_mask(numbers) -> np.ndarray:
    return label_mask(ACTION_UNITS, lambda name: int(name[2:]) in numbers)


BP4D_AU_MASK = _au_mask(BP4D_AUS)
DISFA_AU_MASK = _au_mask(DISFA_AUS)
assert BP4D_AU_MASK.sum() == len(BP4D_AUS) and DISFA_AU_MASK.sum() == len(DISFA_AUS)  # all in ACTION_UNITS


# --- shared helpers --------------------------------------------------------------------------------------------------


def _first_dir(root: Path, names) -> Path | None:
    return next((root / name for name in names if (root / name).is_dir()), None)


def _frame_images(folder: Path) -> dict[int, Path]:
    """Frame number → image in a folder of per-frame images named by number (0001.jpg and 1.jpg alike)."""
    if not folder.is_dir():
        return {}
    return {
        int(path.stem): path
        for path in sorted(folder.iterdir())
        if path.stem.isdigit() and path.suffix.lower() in IMAGE_SUFFIXES
    }


def _part_of(subject: str, parts) -> int | None:
    return next((i for i, part in enumerate(parts) if subject in part), None)


def pose_from_3ddfa(pose_para) -> np.ndarray:
    """A 3DDFA `Pose_Para` (radians, 3DDFA signs) → qface's (pitch, yaw, roll) in degrees (see POSE_SIGNS_3DDFA)."""
    radians = np.asarray(pose_para, dtype=np.float64).ravel()[: len(POSE_PARA_ANGLES)]
    by_name = dict(zip(POSE_PARA_ANGLES, np.degrees(radians), strict=True))
    return np.array([by_name[name] * POSE_SIGNS_3DDFA[name] for name in POSE_ANGLES], np.float32)


def _points68(array) -> np.ndarray | None:
    """68 points stored (2 or 3, 68) or (68, 2 or 3) → (68, 2) float32 x, y; None for anything else."""
    points = np.asarray(array, dtype=np.float64)
    if points.ndim == 2 and points.shape[0] in (2, 3) and points.shape[1] == 68:
        points = points.T
    if points.ndim != 2 or points.shape[0] != 68 or points.shape[1] not in (2, 3):
        return None
    return np.ascontiguousarray(points[:, :2], dtype=np.float32)


def _loadmat(path: Path) -> dict:
    return require("scipy.io", "train", "reading 300W-LP / AFLW2000-3D .mat files").loadmat(str(path))


def read_pts(path: Path) -> np.ndarray:
    """A `.pts` landmark file (`version: 1`, `n_points: N`, `{`, N lines `x y`, `}`) → (N, 2) float32, file order."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    header, brace, rest = text.partition("{")
    body, closing, _ = rest.partition("}")
    counts = [int(value) for key, _, value in (line.partition(":") for line in header.splitlines())
              if key.strip().lower() == "n_points"]  # fmt: skip
    values = np.array(body.split(), dtype=np.float64)
    if not brace or not closing or len(counts) != 1 or values.size != 2 * counts[0]:
        raise ValueError(f"{path}: not a .pts file with n_points matching its {{ }} block")
    return values.reshape(counts[0], 2).astype(np.float32)


# --- RAF-DB --------------------------------------------------------------------------------------------------------


class RAFDB(Adapter):
    """RAF-DB basic: EmoLabel/list_patition_label.txt + Image/aligned/<stem>_aligned.jpg (100 x 100). Gender, race and
    age group come into meta from Annotation/manual/<stem>_manu_attri.txt where that file exists."""

    name = "rafdb"
    tasks = ("expression",)
    splits = ("train", "test")

    @cached_property
    def _rows(self) -> list[tuple[str, int]]:
        rows = []
        with open(self.root / "EmoLabel" / "list_patition_label.txt", encoding="utf-8") as stream:
            for line in stream:
                if not (fields := line.split()):
                    continue
                if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) not in RAFDB_EXPRESSIONS:
                    raise ValueError(f"rafdb: unexpected label line {line.strip()!r}")
                if fields[0].split("_", 1)[0] not in RAFDB_SPLITS:
                    raise ValueError(f"rafdb: {fields[0]} starts with neither train_ nor test_")
                rows.append((fields[0], int(fields[1])))
        return rows

    def _attributes(self, stem: str) -> dict[str, str]:
        path = self.root / "Annotation" / "manual" / f"{stem}_manu_attri.txt"
        if not path.exists():
            return {}
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        gender, race, age = (int(float(value)) for value in lines[-3:])
        return {"gender": RAFDB_GENDERS[gender], "race": RAFDB_RACES[race], "age_group": RAFDB_AGE_GROUPS[age]}

    def __len__(self) -> int:
        return self._cap(len(self._rows))

    def __iter__(self) -> Iterator[LabelledFace]:
        for file_name, code in self._rows[: len(self)]:
            stem = Path(file_name).stem
            yield LabelledFace(
                image=read_image(self.root / "Image" / "aligned" / f"{stem}_aligned.jpg"),
                labels={"expression": RAFDB_EXPRESSIONS[code]},
                masks={"expression": RAFDB_EXPRESSION_MASK.copy()},
                meta={
                    "split": RAFDB_SPLITS[file_name.split("_", 1)[0]],
                    "subject": None,
                    "source": file_name,
                    **self._attributes(stem),
                },
            )


# --- AffectNet -----------------------------------------------------------------------------------------------------


class AffectNet(Adapter):
    """AffectNet's manually annotated part: Manually_Annotated_file_lists/{training,validation}.csv and the images
    under Manually_Annotated_Images/ (the csv's subDirectory_filePath). Each face is cropped to its csv box (clipped to
    the image; a box wholly outside it is skipped with a warning). Rows coded 8-10 (None, Uncertain, No-Face) are
    not yielded; `skipped` counts them."""

    name = "affectnet"
    tasks = ("expression",)
    splits = ("train", "test")

    @cached_property
    def _image_root(self) -> Path:
        return _first_dir(self.root, AFFECTNET_IMAGE_DIRS) or self.root

    @property
    def skipped(self) -> Counter:
        """Rows not yielded because their code is not an expression (8-10), by AffectNet's name for the code."""
        return self._parsed[1]

    @cached_property
    def _rows(self) -> list[tuple]:
        return self._parsed[0]

    @cached_property
    def _parsed(self) -> tuple[list[tuple], Counter]:
        rows, skipped, malformed = [], Counter(), []
        found = False
        for file_name, split in AFFECTNET_LISTS.items():
            candidates = [self.root / folder / file_name for folder in AFFECTNET_LIST_DIRS]
            path = next((candidate for candidate in candidates if candidate.exists()), None)
            if path is None:
                continue
            found = True
            with open(path, newline="", encoding="utf-8-sig") as stream:
                reader = csv.DictReader(stream)
                missing = [c for c in AFFECTNET_COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise ValueError(f"affectnet: {path.name} lacks column(s) {missing}")
                for row_index, row in enumerate(reader):
                    try:
                        code = int(float(row["expression"]))
                        box = tuple(int(float(row[c])) for c in ("face_x", "face_y", "face_width", "face_height"))
                        valence, arousal = float(row["valence"]), float(row["arousal"])
                    except (TypeError, ValueError):
                        malformed.append(f"{file_name}:{row_index}")
                        continue
                    if code in AFFECTNET_SKIPPED:
                        skipped[AFFECTNET_SKIPPED[code]] += 1
                        continue
                    if code not in AFFECTNET_EXPRESSIONS or box[2] <= 0 or box[3] <= 0:
                        malformed.append(f"{file_name}:{row_index}")
                        continue
                    rows.append((row["subDirectory_filePath"], box, code, valence, arousal, split, row_index))
        if not found:
            raise FileNotFoundError(f"affectnet: no training.csv / validation.csv under {self.root}")
        if malformed:
            warnings.warn(f"affectnet: skipped {len(malformed)} malformed row(s), e.g. {malformed[:3]}", stacklevel=2)
        return rows, skipped

    def __len__(self) -> int:
        return self._cap(len(self._rows))

    def __iter__(self) -> Iterator[LabelledFace]:
        for relative, (x, y, width, height), code, valence, arousal, split, row_index in self._rows[: len(self)]:
            image = read_image(self._image_root / relative)
            x0, y0 = max(x, 0), max(y, 0)
            x1, y1 = min(x + width, image.shape[1]), min(y + height, image.shape[0])
            if x1 <= x0 or y1 <= y0:
                warnings.warn(f"affectnet: face box {(x, y, width, height)} lies outside {relative}; skipped",
                              stacklevel=2)  # fmt: skip
                continue
            yield LabelledFace(
                image=np.ascontiguousarray(image[y0:y1, x0:x1]),
                labels={"expression": AFFECTNET_EXPRESSIONS[code]},
                masks={"expression": AFFECTNET_EXPRESSION_MASK.copy()},
                meta={
                    "split": split,
                    "subject": None,
                    "source": relative,
                    "row": row_index,
                    "box": (x, y, width, height),
                    "valence": valence,
                    "arousal": arousal,
                },
            )


# --- BP4D and DISFA ------------------------------------------------------------------------------------------------


class _FrameAUAdapter(Adapter):
    """Per-frame AU occurrence: `_sequences` lists (subject, sequence, frames, image paths, labels, masks) and every
    coded frame whose image exists is one face; frames without an image are skipped with a warning."""

    tasks = ("action_units",)
    splits = ("train", "test")
    parts: tuple[tuple[str, ...], ...] = ()  # the protocol's subject-disjoint parts
    image_dirs: tuple[str, ...] = ()  # frame folders tried in order under the root
    _missing = 0  # coded frames skipped for want of an image (set while loading)

    def _load(self) -> list[tuple[str, str, list[int], list[Path], np.ndarray, np.ndarray]]:
        raise NotImplementedError

    @cached_property
    def _sequences(self):
        return self._load()

    @cached_property
    def _index(self) -> list[tuple[int, int]]:
        return [(s, row) for s, sequence in enumerate(self._sequences) for row in range(len(sequence[2]))]

    def _image_dir(self) -> Path:
        folder = _first_dir(self.root, self.image_dirs)
        if folder is None:
            raise FileNotFoundError(f"{self.name}: no frame images under {self.root} (expected {self.image_dirs})")
        return folder

    def _sequence(self, subject: str, sequence: str, coded: dict[int, dict[int, float]], images: dict[int, Path],
                  image_index=lambda frame: frame):  # fmt: skip
        """Coded frames (frame → {index into ACTION_UNITS: 0/1}) → one sequence entry, keeping frames with an image."""
        frames = [frame for frame in sorted(coded) if image_index(frame) in images]
        self._missing += len(coded) - len(frames)
        labels = np.zeros((len(frames), len(ACTION_UNITS)), np.float32)
        masks = np.zeros((len(frames), len(ACTION_UNITS)), bool)
        for row, frame in enumerate(frames):
            for index, value in coded[frame].items():
                labels[row, index], masks[row, index] = value, True
        return subject, sequence, frames, [images[image_index(frame)] for frame in frames], labels, masks

    def __len__(self) -> int:
        return self._cap(len(self._index))

    def __iter__(self) -> Iterator[LabelledFace]:
        for s, row in self._index[: len(self)]:
            subject, sequence, frames, images, labels, masks = self._sequences[s]
            part = _part_of(subject, self.parts)
            yield LabelledFace(
                image=read_image(images[row]),
                labels={"action_units": labels[row].copy()},
                masks={"action_units": masks[row].copy()},
                meta={
                    "split": "test" if part == AU_TEST_PART else "train",
                    "fold": part,
                    "subject": subject,
                    "sequence": sequence,
                    "frame": frames[row],
                    "source": str(images[row].relative_to(self.root)),
                },
            )


class BP4D(_FrameAUAdapter):
    """BP4D-Spontaneous: AUCoding/AU_OCC/<subject>_<task>.csv and frames Sequences/<subject>/<task>/<frame>.jpg (or
    img/..., the layout of public AU code). Only BP4D_AUS are read; a 9 (or any non-0/1 cell) masks that AU there."""

    name = "bp4d"
    parts = BP4D_PARTS
    image_dirs = BP4D_IMAGE_DIRS

    def _load(self):
        coding = self.root / BP4D_CODING_DIR
        files = sorted(p for p in coding.glob("*.csv") if BP4D_CSV_NAME.match(p.name)) if coding.is_dir() else []
        if not files:
            raise FileNotFoundError(f"bp4d: no <subject>_<task>.csv under {coding}")
        image_dir, self._missing, sequences = self._image_dir(), 0, []
        for path in files:
            match = BP4D_CSV_NAME.match(path.name)
            subject, task = match["subject"].upper(), match["task"].upper()
            with open(path, newline="", encoding="utf-8-sig") as stream:
                reader = csv.reader(stream)
                header = [name.strip() for name in next(reader)]
                columns = {  # csv column → index into ACTION_UNITS; column 0 is the frame number
                    col: ACTION_UNITS.index(f"AU{int(name):02d}")
                    for col, name in enumerate(header)
                    if col > 0 and name.isdigit() and int(name) in BP4D_AUS
                }
                coded = {}
                for row in reader:
                    if row and row[0].strip():
                        coded[int(float(row[0]))] = {
                            index: BP4D_OCCURRENCE[row[col].strip()]
                            for col, index in columns.items()
                            if col < len(row) and row[col].strip() in BP4D_OCCURRENCE
                        }
            images = _frame_images(image_dir / subject / task)
            sequences.append(self._sequence(subject, task, coded, images))
        if self._missing:
            warnings.warn(f"bp4d: skipped {self._missing} coded frame(s) without an image", stacklevel=2)
        return sequences


class DISFA(_FrameAUAdapter):
    """DISFA: ActionUnit_Labels/<SN>/<SN>_au<n>.txt (`frame,intensity`) and the left-camera video's frames extracted
    to img/<SN>/<frame - 1>.png (0-based, the layout of public AU code; any zero padding). AUs whose label file a
    subject lacks stay masked; an intensity outside 0-5 masks that AU at that frame."""

    name = "disfa"
    parts = DISFA_PARTS
    image_dirs = DISFA_IMAGE_DIRS

    def _load(self):
        labels_dir = self.root / DISFA_LABEL_DIR
        subjects = sorted(p.name for p in labels_dir.glob("SN*") if DISFA_SUBJECT.match(p.name) and p.is_dir())
        if not subjects:
            raise FileNotFoundError(f"disfa: no SNxxx folders under {labels_dir}")
        image_dir, self._missing, sequences = self._image_dir(), 0, []
        for subject in subjects:
            coded: dict[int, dict[int, float]] = {}
            for au in DISFA_AUS:
                path = labels_dir / subject / f"{subject}_au{au}.txt"
                if not path.exists():
                    continue
                index = ACTION_UNITS.index(f"AU{au:02d}")
                for line in path.read_text(encoding="utf-8").splitlines():
                    if not (line := line.strip()):
                        continue
                    frame, intensity = (int(float(v)) for v in line.split(",")[:2])
                    known = coded.setdefault(frame, {})  # a frame listed for any AU is a frame of the subject
                    if intensity in DISFA_INTENSITIES:
                        known[index] = float(intensity >= DISFA_OCCURRENCE_THRESHOLD)
            images = _frame_images(image_dir / subject)
            sequences.append(self._sequence(subject, subject, coded, images, lambda f: f - DISFA_FIRST_FRAME))
        if self._missing:
            warnings.warn(f"disfa: skipped {self._missing} labelled frame(s) without an image", stacklevel=2)
        return sequences


# --- MORPH II ------------------------------------------------------------------------------------------------------


class MorphII(Adapter):
    """MORPH II academic release: morph_2008_nonCommercial.csv (at the root or one folder down) with the photos at the
    csv's relative `photo` paths. Split: UTKFace's fixed 10 % crc32 hash, keyed by id_num (so subject-disjoint)."""

    name = "morph2"
    tasks = ("age",)
    splits = ("train", "val")

    @cached_property
    def _csv(self) -> Path:
        for candidate in (self.root / MORPH_CSV, *sorted(self.root.glob(f"*/{MORPH_CSV}"))):
            if candidate.exists():
                return candidate
        raise FileNotFoundError(f"morph2: no {MORPH_CSV} in {self.root} or its subfolders")

    @cached_property
    def _rows(self) -> list[dict[str, str]]:
        with open(self._csv, newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            fields = [name.strip() for name in reader.fieldnames or []]
            missing = [c for c in (MORPH_ID, MORPH_PICTURE, MORPH_RACE, MORPH_GENDER, MORPH_AGE, MORPH_PHOTO)
                       if c not in fields]  # fmt: skip
            if missing:
                raise ValueError(f"morph2: {self._csv.name} lacks column(s) {missing}")
            reader.fieldnames = fields
            return [{k: (v or "").strip() for k, v in row.items()} for row in reader if row.get(MORPH_PHOTO)]

    def __len__(self) -> int:
        return self._cap(len(self._rows))

    def __iter__(self) -> Iterator[LabelledFace]:
        for row in self._rows[: len(self)]:
            yield LabelledFace(
                image=read_image(self._csv.parent / row[MORPH_PHOTO]),
                labels={"age": float(row[MORPH_AGE])},
                masks={"age": np.ones(1, bool)},
                meta={
                    "split": utkface_split(row[MORPH_ID]),
                    "subject": row[MORPH_ID],
                    "picture": row[MORPH_PICTURE],
                    "gender": MORPH_GENDERS.get(row[MORPH_GENDER], row[MORPH_GENDER]),
                    "race": MORPH_RACES.get(row[MORPH_RACE], row[MORPH_RACE]),
                    "source": row[MORPH_PHOTO],
                },
            )


# --- 300W-LP and AFLW2000-3D ---------------------------------------------------------------------------------------


class _PoseMatAdapter(Adapter):
    """Images with a same-named 3DDFA .mat: pose from Pose_Para (see POSE_SIGNS_3DDFA), 68 landmarks where known."""

    tasks = ("pose", "landmarks")
    split = ""

    def _items(self) -> list[tuple[Path, dict]]:
        raise NotImplementedError

    def _landmarks(self, image: Path, mat: dict, meta: dict) -> np.ndarray | None:
        raise NotImplementedError

    @cached_property
    def _files(self) -> list[tuple[Path, dict]]:
        return self._items()

    def __len__(self) -> int:
        return self._cap(len(self._files))

    def __iter__(self) -> Iterator[LabelledFace]:
        for image_path, meta in self._files[: len(self)]:
            mat = _loadmat(image_path.with_suffix(".mat"))
            pose = pose_from_3ddfa(mat["Pose_Para"])
            points = self._landmarks(image_path, mat, meta)
            labels = {"pose": pose, "landmarks": points if points is not None else np.zeros((68, 2), np.float32)}
            yield LabelledFace(
                image=read_image(image_path),
                labels=labels,
                masks={"pose": np.ones(3, bool), "landmarks": np.full(68, points is not None)},
                meta={
                    "split": self.split,
                    **meta,
                    "source": str(image_path.relative_to(self.root)),
                    "pose_in_protocol_range": bool(np.all(np.abs(pose) <= POSE_PROTOCOL_LIMIT)),
                },
            )


class Pose300WLP(_PoseMatAdapter):
    """300W-LP: <folder>/<stem>.jpg + <stem>.mat for the folders in LP_FOLDERS (the *_Flip ones mirrored), and
    landmarks/<folder>/<stem>_pts.mat. meta: subject = the source face (AFW_134212_1), view, flipped."""

    name = "300w_lp"
    split = "train"
    splits = ("train",)

    def _items(self):
        items, missing = [], 0
        folders = [f for f in LP_FOLDERS if (self.root / f).is_dir()]
        if not folders:
            raise FileNotFoundError(f"300w_lp: none of {LP_FOLDERS} under {self.root}")
        for folder in folders:
            for image in sorted((self.root / folder).glob("*.jpg")):
                if not image.with_suffix(".mat").exists():
                    missing += 1
                    continue
                match = LP_NAME.match(image.stem)
                face, view = (match["face"], int(match["view"])) if match else (image.stem, 0)
                items.append((image, {"subject": face, "view": view, "flipped": folder.endswith("_Flip")}))
        if missing:
            warnings.warn(f"300w_lp: skipped {missing} image(s) without a .mat", stacklevel=2)
        return items

    def _landmarks(self, image, mat, meta):
        path = self.root / "landmarks" / image.parent.name / f"{image.stem}_pts.mat"
        if not path.exists():
            return None
        points = _loadmat(path)
        return next((p for key in LP_LANDMARK_KEYS if key in points and (p := _points68(points[key])) is not None),
                    None)  # fmt: skip


class AFLW2000(_PoseMatAdapter):
    """AFLW2000-3D: image00002.jpg + image00002.mat (at the root or in AFLW2000/); landmarks from pt3d_68's x, y.
    The release has no identities: subject is None. `pose_in_protocol_range` marks the usual |angle| <= 99° subset."""

    name = "aflw2000"
    split = "test"
    splits = ("test",)

    def _items(self):
        folder = self.root / "AFLW2000" if (self.root / "AFLW2000").is_dir() else self.root
        items = [(image, {"subject": None}) for image in sorted(folder.glob("*.jpg"))
                 if image.with_suffix(".mat").exists()]  # fmt: skip
        if not items:
            raise FileNotFoundError(f"aflw2000: no <name>.jpg + <name>.mat pairs in {folder}")
        return items

    def _landmarks(self, image, mat, meta):
        return _points68(mat[AFLW2000_LANDMARK_KEY]) if AFLW2000_LANDMARK_KEY in mat else None


# --- FG-NET ----------------------------------------------------------------------------------------------------------


class FGNet(Adapter):
    """FG-NET: images/<subject>A<age>[take].JPG (age from the name) and points/<name>.pts.

    FG-NET's 68 points follow its own (pre-300W, AAM-style) markup, not the iBUG-300W order qface's landmarks task
    uses, so they are not a landmarks label: they come as `meta["points"]` (68, 2), in file order, for users who map
    them. Split: subject-disjoint folds (FG-NET's usual protocol, leave-one-person-out, can use meta["subject"])."""

    name = "fgnet"
    tasks = ("age",)
    splits = ("train", "val")

    @cached_property
    def _files(self) -> list[tuple[Path, str, int, str]]:
        folder = self.root / "images" if (self.root / "images").is_dir() else self.root
        files, malformed = [], []
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in (".jpg", ".jpeg"):
                continue
            if (match := FGNET_NAME.match(path.stem)) is None:
                malformed.append(path.name)
                continue
            files.append((path, match["subject"], int(match["age"]), match["take"].lower()))
        if malformed:
            warnings.warn(f"fgnet: skipped {len(malformed)} file(s) not named <subject>A<age>, e.g. {malformed[:3]}",
                          stacklevel=2)  # fmt: skip
        return files

    @cached_property
    def _points(self) -> dict[str, Path]:
        folder = self.root / "points" if (self.root / "points").is_dir() else self.root
        return {path.stem.lower(): path for path in folder.glob("*") if path.suffix.lower() == ".pts"}

    def __len__(self) -> int:
        return self._cap(len(self._files))

    def __iter__(self) -> Iterator[LabelledFace]:
        folds = subject_folds(subject for _, subject, _, _ in self._files)
        for path, subject, age, take in self._files[: len(self)]:
            points = self._points.get(path.stem.lower())
            yield LabelledFace(
                image=read_image(path),
                labels={"age": float(age)},
                masks={"age": np.ones(1, bool)},
                meta={
                    "split": "val" if folds[subject] == SUBJECT_VAL_FOLD else "train",
                    "fold": folds[subject],
                    "subject": subject,
                    "take": take,
                    "source": path.name,
                    "points": read_pts(points) if points is not None else None,
                },
            )


# --- JAFFE -----------------------------------------------------------------------------------------------------------


class JAFFE(Adapter):
    """JAFFE: <poser>.<code><take>.<number>.tiff anywhere under the root (213 grey 256 x 256 images, 10 posers)."""

    name = "jaffe"
    tasks = ("expression",)
    splits = ("train", "val")

    @cached_property
    def _files(self) -> list[tuple[Path, re.Match]]:
        files, unknown = [], []
        for path in sorted(p for p in self.root.rglob("*") if p.suffix.lower() in (".tif", ".tiff")):
            match = JAFFE_NAME.match(path.name)
            if match is None or match["code"].upper() not in JAFFE_EXPRESSIONS:
                unknown.append(path.name)
            else:
                files.append((path, match))
        if unknown:
            warnings.warn(f"jaffe: skipped {len(unknown)} tiff(s) not named <poser>.<code><n>.<n>.tiff with a known "
                          f"code, e.g. {unknown[:3]}", stacklevel=2)  # fmt: skip
        return files

    def __len__(self) -> int:
        return self._cap(len(self._files))

    def __iter__(self) -> Iterator[LabelledFace]:
        folds = subject_folds(match["poser"].upper() for _, match in self._files)
        for path, match in self._files[: len(self)]:
            poser = match["poser"].upper()
            yield LabelledFace(
                image=read_image(path),
                labels={"expression": JAFFE_EXPRESSIONS[match["code"].upper()]},
                masks={"expression": JAFFE_EXPRESSION_MASK.copy()},
                meta={
                    "split": "val" if folds[poser] == SUBJECT_VAL_FOLD else "train",
                    "fold": folds[poser],
                    "subject": poser,
                    "take": int(match["take"]),
                    "source": str(path.relative_to(self.root)),
                },
            )


BENCHMARKS: dict[str, type[Adapter]] = {
    a.name: a for a in (RAFDB, AffectNet, BP4D, DISFA, MorphII, Pose300WLP, AFLW2000, FGNet, JAFFE)
}
