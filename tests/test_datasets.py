"""Data set adapters on tiny fixtures in each data set's public format, the label-aware flip, the chip cache, and
a check of the real research data in ../shared against its READMEs."""

from __future__ import annotations

import csv
import lzma
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image

from qface.data.base import LabelledFace
from qface.data.chips import build_chip_cache, load_chip_cache
from qface.data.datasets import (
    CKPLUS_FOLDS,
    FER2013,
    UTKFace,
    ckplus_folds,
    parse_utkface_name,
    utkface_split,
)
from qface.data.registry import open_dataset
from qface.data.transforms import FLIP_PERMUTATION, hflip, hflip_landmarks_normalised
from qface.tasks import ACTION_UNITS, CELEBA_ATTRIBUTES, EXPRESSIONS

E = EXPRESSIONS.index
A = ACTION_UNITS.index
MALE = CELEBA_ATTRIBUTES.index("Male")


def grey(seed: int, size: tuple[int, int] = (48, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size[::-1], dtype=np.uint8)


# --- FER2013 -------------------------------------------------------------------------------------------------------


@pytest.fixture
def fer_root(tmp_path: Path) -> Path:
    rows = [(0, "Training"), (6, "PublicTest"), (3, "Training")]
    with lzma.open(tmp_path / "fer2013.csv.xz", "wt", newline="") as stream:
        stream.write("emotion,pixels,Usage\n")
        for i, (code, usage) in enumerate(rows):
            stream.write(f"{code},{' '.join(map(str, grey(i).ravel()))},{usage}\n")
    return tmp_path


def test_fer2013_codes_masks_splits(fer_root: Path):
    faces = list(FER2013(fer_root))
    assert len(FER2013(fer_root)) == 3 and len(faces) == 3
    assert [f.labels["expression"] for f in faces] == [E("anger"), E("neutral"), E("happy")]
    assert [f.meta["split"] for f in faces] == ["train", "val", "train"]
    assert [f.meta["source"] for f in faces] == [0, 1, 2]
    for i, face in enumerate(faces):
        assert face.masks["expression"].tolist() == [name != "contempt" for name in EXPRESSIONS]
        assert face.image.shape == (48, 48, 3) and face.image.dtype == np.uint8
        assert (face.image == grey(i)[..., None]).all()  # grey → 3 equal channels, row-major pixels
    assert len(FER2013(fer_root, limit=2)) == 2 and len(list(FER2013(fer_root, limit=2))) == 2


# --- CK+48 ---------------------------------------------------------------------------------------------------------

CK_SEQUENCES = [  # subject, sequence, emotion folder, AUs coded in facs.csv (None: the sequence is absent from it)
    ("S005", "001", "disgust", ["9", "17", "38"]),
    ("S010", "002", "surprise", ["1", "2", "5", "27"]),
    ("S011", "004", "sadness", ["1", "4", "15", "1.7"]),
    ("S022", "003", "contempt", ["14"]),
    ("S026", "001", "happy", ["6", "12", "25"]),
    ("S032", "005", "anger", None),
    ("S032", "006", "fear", ["1", "2", "4", "5", "20", "25"]),
]


@pytest.fixture
def ck_root(tmp_path: Path) -> Path:
    emotions, facs = [], []
    for n, (subject, sequence, emotion, aus) in enumerate(CK_SEQUENCES):
        folder = tmp_path / "CK+48" / emotion
        folder.mkdir(parents=True, exist_ok=True)
        for frame in (7, 8, 9):
            name = f"CK+48/{emotion}/{subject}_{sequence}_{frame:08d}.png"
            Image.fromarray(grey(10 * n + frame)).save(tmp_path / name)
            emotions.append([name, subject, sequence, frame, emotion])
        for au in aus or []:
            facs.append([subject, sequence, 9, au, 0])
    for name, header, rows in (
        ("emotions.csv", ["file", "subject", "sequence", "frame", "emotion"], emotions),
        ("facs.csv", ["subject", "sequence", "peak_frame", "au", "intensity"], facs),
    ):
        with open(tmp_path / name, "w", newline="") as stream:
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
    return tmp_path


def test_ckplus_codes_action_units_folds(ck_root: Path):
    faces = list(open_dataset("ckplus", ck_root))
    assert len(faces) == 3 * len(CK_SEQUENCES)
    by_sequence = {(f.meta["subject"], f.meta["sequence"]): f for f in faces}
    expected = {"disgust": "disgust", "surprise": "surprise", "sadness": "sad", "contempt": "contempt",
                "happy": "happy", "anger": "anger", "fear": "fear"}  # fmt: skip
    for subject, sequence, emotion, _ in CK_SEQUENCES:
        assert by_sequence[subject, sequence].labels["expression"] == E(expected[emotion])
    for face in faces:
        assert face.masks["expression"].tolist() == [name != "neutral" for name in EXPRESSIONS]
        assert face.image.shape == (48, 48, 3) and (face.image[..., 0] == face.image[..., 2]).all()
        assert face.labels["action_units"].shape == (len(ACTION_UNITS),)
    # AU38 (a descriptor) and the malformed 1.7 are ignored; the AUs of a sequence label all three of its frames
    assert np.flatnonzero(by_sequence["S005", "001"].labels["action_units"]).tolist() == [A("AU09"), A("AU17")]
    assert np.flatnonzero(by_sequence["S011", "004"].labels["action_units"]).tolist() == [
        A("AU01"), A("AU04"), A("AU15")]  # fmt: skip
    assert by_sequence["S005", "001"].masks["action_units"].all()
    assert not by_sequence["S032", "005"].masks["action_units"].any()  # absent from facs.csv: unknown, not absent
    # subject-disjoint folds: sorted subjects dealt round-robin; fold 0 is validation
    folds = {}
    for face in faces:
        assert folds.setdefault(face.meta["subject"], face.meta["fold"]) == face.meta["fold"]
        assert face.meta["split"] == ("val" if face.meta["fold"] == 0 else "train")
    assert folds == {"S005": 0, "S010": 1, "S011": 2, "S022": 3, "S026": 4, "S032": 0}
    assert [f.meta["fold"] for f in open_dataset("ckplus", ck_root, limit=4)] == [0, 0, 0, 1]
    subjects = [f"S{n:03d}" for n in range(100, 0, -7)]
    assert set(ckplus_folds(subjects).values()) == set(range(CKPLUS_FOLDS))


# --- UTKFace -------------------------------------------------------------------------------------------------------

UTK_NAMES = ["25_0_2_20170116174525125.jpg.chip.jpg", "3_1_4_20161219140623097.jpg.chip.jpg",
             "71_1_1_20170120134639935.jpg.chip.jpg"]  # fmt: skip


@pytest.fixture
def utk_root(tmp_path: Path) -> Path:
    folder = tmp_path / "UTKFace"
    folder.mkdir()
    for i, name in enumerate([*UTK_NAMES, "39_1_20170116174525125.jpg.chip.jpg"]):
        image = grey(i, (128, 128))  # the last is named like one of the 5 malformed source files
        Image.fromarray(image if i == 2 else np.stack([image] * 3, -1)).save(folder / name, quality=90)
    return tmp_path


def test_utkface_names_labels_splits(utk_root: Path):
    with pytest.warns(UserWarning, match="skipped 1 file"):
        faces = list(UTKFace(utk_root))
    by_name = {f.meta["source"]: f for f in faces}
    assert sorted(by_name) == sorted(UTK_NAMES)
    face = by_name[UTK_NAMES[0]]
    assert face.labels["age"] == 25.0 and face.masks["age"].tolist() == [True]
    assert face.labels["attributes"][MALE] == 1.0 and face.labels["attributes"].sum() == 1.0
    assert np.flatnonzero(face.masks["attributes"]).tolist() == [MALE]
    assert (face.meta["gender"], face.meta["race"]) == ("male", "Asian")
    assert by_name[UTK_NAMES[1]].labels["attributes"][MALE] == 0.0
    assert (by_name[UTK_NAMES[1]].meta["gender"], by_name[UTK_NAMES[1]].meta["race"]) == ("female", "Others")
    assert by_name[UTK_NAMES[2]].meta["race"] == "Black"
    assert by_name[UTK_NAMES[2]].image.shape == (128, 128, 3)  # a grey JPEG becomes 3 channels
    for name, face in by_name.items():
        assert face.meta["split"] == ("val" if zlib.crc32(name.encode()) % 10 == 0 else "train")
    assert parse_utkface_name("39_1_20170116174525125.jpg.chip.jpg") is None
    assert parse_utkface_name("30_2_0_20170116174525125.jpg.chip.jpg") is None  # gender 2 does not exist
    names = [f"{n}_0_0_2017{n:013d}.jpg.chip.jpg" for n in range(2000)]
    share = Counter(map(utkface_split, names))["val"] / len(names)
    assert 0.08 < share < 0.12


# --- CelebA --------------------------------------------------------------------------------------------------------

CELEBA_FILES = {"000002.jpg": (0, 2937), "000058.jpg": (1, 2879), "000086.jpg": (2, 6145)}


@pytest.fixture
def celeba_root(tmp_path: Path) -> Path:
    (tmp_path / "img_align_celeba").mkdir()
    values = np.where(np.random.default_rng(0).random((3, 40)) < 0.3, 1, -1)
    lines = [f"{len(CELEBA_FILES)}", " ".join(CELEBA_ATTRIBUTES)]
    for i, name in enumerate(CELEBA_FILES):
        lines.append(name + " " + " ".join(f"{v:2d}" for v in values[i]))  # the official double-space layout
        Image.fromarray(np.stack([grey(i, (178, 218))] * 3, -1)).save(tmp_path / "img_align_celeba" / name)
    (tmp_path / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    np.save(tmp_path / "values.npy", values)
    for file, column in (("list_eval_partition.txt", 0), ("identity_CelebA.txt", 1)):
        (tmp_path / file).write_text("".join(f"{n} {v[column]}\n" for n, v in CELEBA_FILES.items()))
    return tmp_path


def test_celeba_attributes_partition_identity(celeba_root: Path):
    values = np.load(celeba_root / "values.npy")
    faces = list(open_dataset("celeba", celeba_root))
    assert [f.meta["source"] for f in faces] == list(CELEBA_FILES)
    assert [f.meta["split"] for f in faces] == ["train", "val", "test"]
    assert [f.meta["identity"] for f in faces] == [2937, 2879, 6145]
    for face, row in zip(faces, values):
        assert face.labels["attributes"].tolist() == (row == 1).astype(np.float32).tolist()
        assert face.labels["attributes"].dtype == np.float32 and face.masks["attributes"].all()
        assert face.image.shape == (218, 178, 3)


# --- the horizontal flip -------------------------------------------------------------------------------------------


def test_flip_permutation_is_an_involution_that_swaps_sides():
    assert sorted(FLIP_PERMUTATION.tolist()) == list(range(68))
    assert (FLIP_PERMUTATION[FLIP_PERMUTATION] == np.arange(68)).all()
    pairs = {0: 16, 7: 9, 17: 26, 21: 22, 31: 35, 36: 45, 39: 42, 40: 47, 48: 54, 55: 59, 60: 64, 65: 67}
    for a, b in pairs.items():
        assert FLIP_PERMUTATION[a] == b and FLIP_PERMUTATION[b] == a
    assert [i for i in range(68) if FLIP_PERMUTATION[i] == i] == [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]


def flip_face() -> LabelledFace:
    rng = np.random.default_rng(1)
    points = rng.uniform(5, 95, (68, 2)).astype(np.float32)
    points[36], points[45], points[48], points[54] = (30, 40), (70, 40), (35, 80), (65, 80)  # eye & mouth corners
    return LabelledFace(
        image=rng.integers(0, 256, (120, 100, 3), dtype=np.uint8),
        labels={"landmarks": points, "pose": np.array([10.0, 20.0, -5.0], np.float32), "expression": 3,
                "attributes": rng.random(40).astype(np.float32)},
        masks={"landmarks": np.arange(68) < 20, "pose": np.ones(3, bool), "expression": np.ones(8, bool),
               "attributes": np.ones(40, bool)},
        meta={"split": "train", "source": "x"},
    )  # fmt: skip


def test_hflip_moves_labels_with_the_pixels():
    face = flip_face()
    before = {k: np.copy(v) for k, v in face.labels.items()}
    flipped = hflip(face)
    assert (flipped.image == face.image[:, ::-1]).all()
    points = flipped.labels["landmarks"]
    # the point called "left eye outer corner" (36) is again on the image's left, where 45 was before, mirrored
    assert points[36].tolist() == [29.0, 40.0] and points[45].tolist() == [69.0, 40.0]  # pixel c → 99 − c
    assert points[48].tolist() == [34.0, 80.0] and points[54].tolist() == [64.0, 80.0]
    assert np.allclose(points[8], [99 - face.labels["landmarks"][8][0], face.labels["landmarks"][8][1]])
    assert flipped.masks["landmarks"].tolist() == face.masks["landmarks"][FLIP_PERMUTATION].tolist()
    assert flipped.labels["pose"].tolist() == [10.0, -20.0, 5.0]  # pitch kept, yaw and roll negated
    assert flipped.labels["expression"] == 3 and (flipped.labels["attributes"] == face.labels["attributes"]).all()
    assert flipped.meta == face.meta
    for key, value in before.items():  # the input is left alone
        assert np.array_equal(face.labels[key], value)
    twice = hflip(flipped)
    assert (twice.image == face.image).all() and twice.meta == face.meta
    for key in face.labels:
        assert np.allclose(twice.labels[key], face.labels[key], atol=1e-5)  # flipped twice: float rounding only
        assert np.array_equal(twice.masks[key], face.masks[key])


def test_hflip_normalised_matches_the_pixel_flip_of_a_chip_on_batches():
    chip_points = np.random.default_rng(0).uniform(0, 149, (68, 2)).astype(np.float32)
    face = LabelledFace(np.zeros((150, 150, 3), np.uint8), {"landmarks": chip_points}, {"landmarks": np.ones(68, bool)})
    pixel_flip = hflip(face).labels["landmarks"]
    assert np.allclose(hflip_landmarks_normalised(chip_points / 150) * 150, pixel_flip, atol=1e-4)
    batch = torch.rand(4, 68, 2)
    flipped = hflip_landmarks_normalised(batch)
    assert isinstance(flipped, torch.Tensor) and flipped.shape == batch.shape
    assert torch.allclose(flipped[:, 36, 0], 149 / 150 - batch[:, 45, 0])
    assert torch.allclose(hflip_landmarks_normalised(flipped), batch)


# --- the chip cache ------------------------------------------------------------------------------------------------


def test_chip_cache_falls_back_to_the_mean_shape(ck_root: Path, tmp_path: Path):
    """Noise images: nothing is detected, so every face is aligned with the (template) mean shape."""
    info = build_chip_cache("ckplus", tmp_path / "chips", limit=6, root=ck_root, progress=False)
    assert info["count"] == 6 and info["detected"] == 0
    chips, labels = load_chip_cache("ckplus", tmp_path / "chips")
    assert chips.shape == (6, 150, 150, 3) and chips.dtype == np.uint8
    assert labels["aligned_by"].tolist() == ["mean-shape"] * 6
    assert labels["expression"].dtype == np.int64 and labels["expression_mask"].shape == (6, 8)
    assert labels["action_units"].dtype == np.float32 and labels["action_units_mask"].shape == (6, 19)
    assert labels["subject"].tolist() == ["S005"] * 3 + ["S010"] * 3 and labels["fold"].tolist() == [0] * 3 + [1] * 3
    assert set(labels["split"]) == {"train", "val"} and np.isnan(labels["score"]).all()
    assert build_chip_cache("ckplus", tmp_path / "chips", limit=6, root=ck_root, progress=False) == info  # cached


# --- the real data in ../shared ------------------------------------------------------------------------------------


def test_real_data_matches_the_readmes(tmp_path: Path):
    fer = FER2013(shared_path("data", "fer2013"), limit=3)
    first = list(fer)
    assert [f.labels["expression"] for f in first] == [E("neutral"), E("surprise"), E("fear")]  # codes 6, 5, 2
    assert all(f.meta["split"] == "train" and f.image.shape == (48, 48, 3) for f in first)

    ck = open_dataset("ckplus", shared_path("data", "ckplus"))
    rows = ck._rows
    assert len(ck) == 759 and len({r["subject"] for r in rows}) == 89
    assert Counter(r["emotion"] for r in rows) == {"anger": 111, "contempt": 39, "disgust": 138, "fear": 63,
                                                   "happy": 162, "sadness": 63, "surprise": 183}  # fmt: skip
    au_counts = np.sum(list(ck._action_units.values()), axis=0)
    assert len(ck._action_units) == 253
    assert dict(zip(ACTION_UNITS, au_counts.astype(int).tolist())) == {
        "AU01": 98, "AU02": 72, "AU04": 98, "AU05": 70, "AU06": 74, "AU07": 62, "AU09": 48, "AU10": 10,
        "AU12": 63, "AU14": 26, "AU15": 25, "AU16": 10, "AU17": 86, "AU20": 22, "AU23": 35, "AU24": 36,
        "AU25": 139, "AU26": 14, "AU27": 52}  # fmt: skip
    face = next(iter(ck))
    assert (face.meta["subject"], face.labels["expression"]) == ("S005", E("disgust"))
    assert np.flatnonzero(face.labels["action_units"]).tolist() == [A("AU09"), A("AU17")]

    utk = UTKFace(shared_path("data", "utkface"))
    genders = Counter(gender for _, (_, gender, _) in utk._files)
    assert len(utk) == 19_277 and genders == {0: 10_050, 1: 9_227}
    assert Counter(race for _, (_, _, race) in utk._files) == {0: 8_179, 1: 3_681, 2: 2_815, 3: 3_244, 4: 1_358}
    assert next(iter(UTKFace(utk.root, limit=1))).image.shape == (128, 128, 3)

    celeba = open_dataset("celeba", shared_path("data", "celeba"))
    assert len(celeba) == 5_340
    assert Counter(celeba._partition.values()) == {0: 4_560, 1: 780}
    assert len(set(celeba._identity.values())) == 178
    face = next(iter(celeba))
    assert face.meta == {"split": "train", "identity": 2937, "source": "000002.jpg"}
    assert face.image.shape == (218, 178, 3)
    assert [CELEBA_ATTRIBUTES[i] for i in np.flatnonzero(face.labels["attributes"])][:2] == [
        "Bags_Under_Eyes", "Big_Nose"]  # fmt: skip


def test_real_faces_are_detected_and_aligned(tmp_path: Path):
    shared_path("data", "celeba")
    info = build_chip_cache("celeba", tmp_path, limit=4, progress=False)
    chips, labels = load_chip_cache("celeba", tmp_path)
    assert info["detected"] == 4 and labels["aligned_by"].tolist() == ["dlib"] * 4
    assert chips.shape == (4, 150, 150, 3) and labels["identity"].tolist()[0] == 2937
    assert labels["coverage"].min() > 0.9 and (labels["score"] > 0.5).all()


def test_landmarks_and_roll_are_cached_in_the_chip_frame():
    from qface.data.chips import to_chip_frame

    angle = np.radians(20)  # the face is turned 20° clockwise in the image; the chip levels it
    scale = 2.0
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    chip_to_image = np.hstack([linear, [[100.0], [50.0]]])[None]
    chip_points = np.array([[75.0, 75.0], [0.0, 0.0], [149.0, 30.0]])
    image_points = chip_points @ linear.T + [100.0, 50.0]
    landmarks = np.zeros((1, 68, 2))
    landmarks[0, :3] = image_points
    arrays = to_chip_frame({"landmarks": landmarks, "pose": np.array([[5.0, -10.0, 23.0]])}, chip_to_image)
    np.testing.assert_allclose(arrays["landmarks"][0, :3], chip_points / 150, atol=1e-6)
    np.testing.assert_allclose(arrays["pose"][0], [5.0, -10.0, 3.0], atol=1e-6)
