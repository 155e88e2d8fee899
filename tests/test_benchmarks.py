"""Benchmark adapters on tiny fixtures written in each data set's public release format: label codes, masks, splits,
subjects, pose units and signs, landmark count and order, grey → 3 channels."""

from __future__ import annotations

import csv
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qface.data.base import LabelledFace
from qface.data.benchmarks import (
    AFFECTNET_EXPRESSIONS,
    AFLW2000,
    BENCHMARKS,
    BP4D,
    BP4D_AUS,
    BP4D_PARTS,
    DISFA,
    DISFA_AUS,
    DISFA_PARTS,
    JAFFE_EXPRESSIONS,
    RAFDB,
    RAFDB_EXPRESSIONS,
    AffectNet,
    FGNet,
    MorphII,
    Pose300WLP,
    pose_from_3ddfa,
    read_pts,
)
from qface.data.registry import open_dataset
from qface.tasks import ACTION_UNITS, EXPRESSIONS, POSE_ANGLES, TASKS

scipy_io = pytest.importorskip("scipy.io")

E = EXPRESSIONS.index
A = ACTION_UNITS.index
P = POSE_ANGLES.index


def pixels(seed: int, size=(16, 16), channels: int | None = 3) -> np.ndarray:
    shape = (size[1], size[0]) if channels is None else (size[1], size[0], channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def check_contract(face: LabelledFace) -> None:
    """The LabelledFace contract of qface/data/base.py, whatever the adapter."""
    assert face.image.dtype == np.uint8 and face.image.ndim == 3 and face.image.shape[2] == 3
    assert set(face.labels) == set(face.masks)
    for task, mask in face.masks.items():
        assert mask.dtype == bool and mask.shape == (len(TASKS[task].labels),), task
    if "action_units" in face.labels:
        assert face.labels["action_units"].dtype == np.float32 and face.labels["action_units"].shape == (19,)
    if "pose" in face.labels:
        assert face.labels["pose"].dtype == np.float32 and face.labels["pose"].shape == (3,)
    if "landmarks" in face.labels:
        assert face.labels["landmarks"].dtype == np.float32 and face.labels["landmarks"].shape == (68, 2)
    if "expression" in face.labels:
        assert isinstance(face.labels["expression"], int)
    assert {"split", "subject", "source"} <= set(face.meta) and face.meta["split"] in ("train", "val", "test")


def test_code_tables_are_complete_and_explicit():
    assert {code: EXPRESSIONS[i] for code, i in RAFDB_EXPRESSIONS.items()} == {
        1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "anger", 7: "neutral"}  # fmt: skip
    assert [EXPRESSIONS[AFFECTNET_EXPRESSIONS[code]] for code in range(8)] == list(EXPRESSIONS)
    assert {code: EXPRESSIONS[i] for code, i in JAFFE_EXPRESSIONS.items()} == {"AN": "anger", "DI": "disgust",
        "FE": "fear", "HA": "happy", "NE": "neutral", "SA": "sad", "SU": "surprise"}  # fmt: skip
    assert sorted(s for part in BP4D_PARTS for s in part) == sorted({s for part in BP4D_PARTS for s in part})
    assert sum(map(len, BP4D_PARTS)) == 41 and sum(map(len, DISFA_PARTS)) == 27
    assert set(BENCHMARKS) == {"rafdb", "affectnet", "bp4d", "disfa", "morph2", "300w_lp", "aflw2000", "fgnet", "jaffe"}
    with pytest.raises(ValueError, match="unknown data set"):
        open_dataset("lfw", ".")


# --- RAF-DB --------------------------------------------------------------------------------------------------------

RAF_ROWS = [("train_00001.jpg", 1), ("train_00002.jpg", 7), ("test_0001.jpg", 4), ("test_0002.jpg", 5)]


@pytest.fixture
def raf_root(tmp_path: Path) -> Path:
    (tmp_path / "EmoLabel").mkdir()
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("".join(f"{n} {c}\n" for n, c in RAF_ROWS))
    for i, (name, _) in enumerate(RAF_ROWS):
        save(tmp_path / "Image" / "aligned" / name.replace(".jpg", "_aligned.jpg"), pixels(i, (100, 100)))
    manual = tmp_path / "Annotation" / "manual"
    manual.mkdir(parents=True)
    landmarks = "".join(f"{30.5 + i}\t{40.25 + i}\n" for i in range(5))
    (manual / "train_00001_manu_attri.txt").write_text(landmarks + "1\n2\n3\n")
    return tmp_path


def test_rafdb_codes_masks_splits_attributes(raf_root: Path):
    faces = list(RAFDB(raf_root))
    assert len(faces) == len(RAFDB(raf_root)) == 4
    for face in faces:
        check_contract(face)
        assert face.masks["expression"].tolist() == [name != "contempt" for name in EXPRESSIONS]
        assert face.image.shape == (100, 100, 3) and face.meta["subject"] is None
    assert [EXPRESSIONS[f.labels["expression"]] for f in faces] == ["surprise", "neutral", "happy", "sad"]
    assert [f.meta["split"] for f in faces] == ["train", "train", "test", "test"]
    assert [f.meta["source"] for f in faces] == [name for name, _ in RAF_ROWS]
    assert (faces[0].meta["gender"], faces[0].meta["race"], faces[0].meta["age_group"]) == ("female", "Asian", "40-69")
    assert "gender" not in faces[1].meta  # no manual annotation file for it
    limited = open_dataset("rafdb", raf_root, limit=2)
    assert len(limited) == 2 and [f.meta["source"] for f in limited] == ["train_00001.jpg", "train_00002.jpg"]


# --- AffectNet -----------------------------------------------------------------------------------------------------

AFFECTNET_HEADER = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
                    "expression", "valence", "arousal"]  # fmt: skip
AFFECTNET_ROWS = {  # file → rows: path, box, expression, valence, arousal
    "training.csv": [("689/a.png", (4, 6, 20, 10), 0, 0.5, -0.25), ("689/b.png", (0, 0, 48, 32), 7, -0.1, 0.3),
                     ("12/c.png", (1, 1, 8, 8), 8, -2, -2), ("12/d.png", (1, 1, 8, 8), 10, -2, -2)],
    "validation.csv": [("5/e.png", (-2, -3, 10, 10), 6, -0.7, 0.8), ("5/f.png", (60, 40, 5, 5), 1, 0.9, 0.1)],
}  # fmt: skip


@pytest.fixture
def affectnet_root(tmp_path: Path) -> Path:
    lists = tmp_path / "Manually_Annotated_file_lists"
    lists.mkdir()
    for n, (file_name, rows) in enumerate(AFFECTNET_ROWS.items()):
        with open(lists / file_name, "w", newline="") as stream:
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(AFFECTNET_HEADER)
            for i, (path, box, code, valence, arousal) in enumerate(rows):
                landmarks = ";".join(f"{v:.2f}" for v in np.linspace(1, 30, 136))
                writer.writerow([path, *box, landmarks, code, valence, arousal])
                save(tmp_path / "Manually_Annotated_Images" / path, pixels(10 * n + i, (48, 32)))
    return tmp_path


def test_affectnet_codes_skips_crops_splits(affectnet_root: Path):
    dataset = AffectNet(affectnet_root)
    assert dataset.skipped == {"None": 1, "No-Face": 1}  # codes 8 and 10 are not expressions
    assert len(dataset) == 4
    with pytest.warns(UserWarning, match="lies outside 5/f.png"):
        faces = list(dataset)
    assert len(faces) == 3
    for face in faces:
        check_contract(face)
        assert face.masks["expression"].all() and face.meta["subject"] is None
    assert [EXPRESSIONS[f.labels["expression"]] for f in faces] == ["neutral", "contempt", "anger"]
    assert [f.meta["split"] for f in faces] == ["train", "train", "test"]  # validation.csv is the benchmark set
    assert [f.meta["source"] for f in faces] == ["689/a.png", "689/b.png", "5/e.png"]
    assert (faces[0].image == pixels(0, (48, 32))[6:16, 4:24]).all()  # rows y..y+h, columns x..x+w
    assert faces[1].image.shape == (32, 48, 3)
    assert (faces[2].image == pixels(10, (48, 32))[0:7, 0:8]).all()  # a box over the edge is clipped
    assert (faces[0].meta["valence"], faces[0].meta["arousal"]) == (0.5, -0.25)


# --- BP4D ----------------------------------------------------------------------------------------------------------

BP4D_COLUMNS = ["1", "2", "4", "5", "6", "7", "10", "11", "12", "14", "15", "17", "23", "24", "27"]


def bp4d_row(frame: int, **cells: str) -> list:
    return [frame] + [cells.get(f"au{c}", "0") for c in BP4D_COLUMNS]


@pytest.fixture
def bp4d_root(tmp_path: Path) -> Path:
    coding = tmp_path / "AUCoding" / "AU_OCC"
    coding.mkdir(parents=True)
    sequences = {  # csv name → (frame column header, rows, frames with an image and that image's file name)
        "F001_T1.csv": ("0", [bp4d_row(99, au1="1", au4="9", au5="1", au27="1"), bp4d_row(2440, au2="1", au24="1"),
                              bp4d_row(2441, au1="1")], {99: "0099.jpg", 2440: "2440.jpg"}),
        "F007_T8.csv": ("FRAME", [bp4d_row(7, au12="1", au6="9")], {7: "7.jpg"}),
    }  # fmt: skip
    for name, (frame_header, rows, images) in sequences.items():
        with open(coding / name, "w", newline="") as stream:
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow([frame_header, *BP4D_COLUMNS])
            writer.writerows(rows)
        subject, task = name[:-4].split("_")
        for frame, file_name in images.items():
            save(tmp_path / "Sequences" / subject / task / file_name, pixels(frame, (20, 24)))
    return tmp_path


def test_bp4d_occurrence_unknowns_masks_folds(bp4d_root: Path):
    with pytest.warns(UserWarning, match="skipped 1 coded frame"):
        faces = list(BP4D(bp4d_root))
    assert [(f.meta["subject"], f.meta["sequence"], f.meta["frame"]) for f in faces] == [
        ("F001", "T1", 99), ("F001", "T1", 2440), ("F007", "T8", 7)]  # fmt: skip
    protocol = [A(f"AU{n:02d}") for n in BP4D_AUS]
    for face in faces:
        check_contract(face)
        assert set(np.flatnonzero(face.masks["action_units"])) <= set(protocol)  # AU5, AU27 columns are not read
        assert not face.masks["action_units"][[A("AU05"), A("AU27")]].any()
        assert face.image.shape == (24, 20, 3)
    f99, f2440, f7 = faces
    assert np.flatnonzero(f99.labels["action_units"]).tolist() == [A("AU01")]
    assert sorted(np.flatnonzero(f99.masks["action_units"])) == sorted(set(protocol) - {A("AU04")})  # 9 = unknown
    assert np.flatnonzero(f2440.labels["action_units"]).tolist() == [A("AU02"), A("AU24")]
    assert np.flatnonzero(f7.labels["action_units"]).tolist() == [A("AU12")] and not f7.masks["action_units"][A("AU06")]
    assert (f99.meta["fold"], f99.meta["split"]) == (0, "train")  # F001 is in part 1
    assert (f7.meta["fold"], f7.meta["split"]) == (2, "test")  # F007 is in part 3, protocol fold 1's test part
    assert f99.meta["source"] == "Sequences/F001/T1/0099.jpg"


# --- DISFA ---------------------------------------------------------------------------------------------------------

DISFA_LABELS = {"SN001": {1: [0, 2, 5], 2: [1, 3, 0], 25: [4, 0, 9]}, "SN003": {1: [2]}}  # AU → intensity per frame


@pytest.fixture
def disfa_root(tmp_path: Path) -> Path:
    for subject, aus in DISFA_LABELS.items():
        folder = tmp_path / "ActionUnit_Labels" / subject
        folder.mkdir(parents=True)
        for au, intensities in aus.items():
            lines = "".join(f"{frame},{value}\n" for frame, value in enumerate(intensities, start=1))
            (folder / f"{subject}_au{au}.txt").write_text(lines)
        for index in range(len(next(iter(aus.values())))):
            save(tmp_path / "img" / subject / f"{index}.png", np.full((12, 10, 3), 40 * index + 7, np.uint8))
    return tmp_path


def test_disfa_threshold_masks_frames_folds(disfa_root: Path):
    faces = list(DISFA(disfa_root))
    expected = [("SN001", 1), ("SN001", 2), ("SN001", 3), ("SN003", 1)]
    assert [(f.meta["subject"], f.meta["frame"]) for f in faces] == expected
    for face in faces:
        check_contract(face)
        assert set(np.flatnonzero(face.masks["action_units"])) <= {A(f"AU{n:02d}") for n in DISFA_AUS}
        assert (face.image == 40 * (face.meta["frame"] - 1) + 7).all()  # label frame f is image f - 1
    labels = [f.labels["action_units"][[A("AU01"), A("AU02"), A("AU25")]].tolist() for f in faces[:3]]
    assert labels == [[0, 0, 1], [1, 1, 0], [1, 0, 0]]  # occurrence = intensity >= 2
    assert faces[0].masks["action_units"].tolist() == [n in ("AU01", "AU02", "AU25") for n in ACTION_UNITS]
    assert not faces[2].masks["action_units"][A("AU25")]  # intensity 9 is not an intensity: unknown
    assert not faces[0].masks["action_units"][A("AU04")]  # DISFA codes AU4, but this fixture has no file for it
    assert np.flatnonzero(faces[3].masks["action_units"]).tolist() == [A("AU01")]
    assert [(f.meta["fold"], f.meta["split"]) for f in (faces[0], faces[3])] == [(0, "train"), (2, "test")]


# --- MORPH II ------------------------------------------------------------------------------------------------------

MORPH_HEADER = "id_num,picture_num,dob,doa,race,gender,facial_hair,age,age_diff,glasses,photo"
MORPH_ROWS = [
    "003213,1,03/01/1970,05/12/1997,B,M,0,27,0,0,Album2/003213_1M27.JPG",
    "003213,2,03/01/1970,06/02/1998,B,M,1,28,1,0,Album2/003213_2M28.JPG",
    "104567,0,11/30/1960,01/20/2005,W,F,0,44,0,1,Album2/104567_0F44.JPG",
]


@pytest.fixture
def morph_root(tmp_path: Path) -> Path:
    folder = tmp_path / "MORPH_nonCommercial"
    folder.mkdir()
    (folder / "morph_2008_nonCommercial.csv").write_text("\n".join([MORPH_HEADER, *MORPH_ROWS]) + "\n")
    for i, row in enumerate(MORPH_ROWS):
        save(folder / row.split(",")[-1], pixels(i, (20, 24), channels=None))
    return tmp_path


def test_morph2_age_meta_subject_split(morph_root: Path):
    faces = list(MorphII(morph_root))
    assert [f.labels["age"] for f in faces] == [27.0, 28.0, 44.0]
    for face in faces:
        check_contract(face)
        assert face.masks["age"].tolist() == [True] and face.image.shape == (24, 20, 3)
        assert face.meta["split"] == ("val" if zlib.crc32(face.meta["subject"].encode()) % 10 == 0 else "train")
    assert [f.meta["subject"] for f in faces] == ["003213", "003213", "104567"]  # id_num, leading zeros kept
    assert [(f.meta["gender"], f.meta["race"]) for f in faces] == [("male", "Black")] * 2 + [("female", "White")]
    assert faces[2].meta["source"] == "Album2/104567_0F44.JPG"


# --- 300W-LP and AFLW2000-3D ---------------------------------------------------------------------------------------


def rotation_3ddfa(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """3DDFA's rotation (face3d.angle2matrix_3ddfa): R = Rx Ry Rz on column vectors of the Basel Face Model."""
    c, s = math.cos, math.sin
    rx = np.array([[1, 0, 0], [0, c(pitch), s(pitch)], [0, -s(pitch), c(pitch)]])
    ry = np.array([[c(yaw), 0, -s(yaw)], [0, 1, 0], [s(yaw), 0, c(yaw)]])
    rz = np.array([[c(roll), s(roll), 0], [-s(roll), c(roll), 0], [0, 0, 1]])
    return rx @ ry @ rz


def on_image(vector: np.ndarray) -> np.ndarray:
    """A model-space direction as drawn on the image (image y = height - model y: x right, y down)."""
    return np.array([vector[0], -vector[1]])


@pytest.mark.parametrize("angle", [0.3, -0.3])
def test_pose_signs_follow_qface_convention(angle: float):
    forward, up = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    nose = on_image(rotation_3ddfa(0, angle, 0) @ forward)  # yaw > 0 (ours): nose toward the image's right
    assert np.sign(pose_from_3ddfa([0, angle, 0])[P("yaw")]) == np.sign(nose[0]) != 0
    nose = on_image(rotation_3ddfa(angle, 0, 0) @ forward)  # pitch > 0 (ours): looks up, i.e. image y decreases
    assert np.sign(pose_from_3ddfa([angle, 0, 0])[P("pitch")]) == -np.sign(nose[1]) != 0
    crown = on_image(rotation_3ddfa(0, 0, angle) @ up)  # roll > 0 (ours): clockwise, the crown moves right
    assert np.sign(pose_from_3ddfa([0, 0, angle])[P("roll")]) == np.sign(crown[0]) != 0
    degrees = pose_from_3ddfa([angle, 2 * angle, -angle, 120.0, 80.0, 0.0, 0.002])  # radians → degrees
    assert np.allclose(degrees, np.degrees([angle, -2 * angle, -angle]), atol=1e-4)


def write_mat(path: Path, image: np.ndarray, **arrays) -> None:
    save(path.with_suffix(".jpg"), image)
    scipy_io.savemat(str(path.with_suffix(".mat")), arrays)


def pose_para(pitch: float, yaw: float, roll: float) -> np.ndarray:
    return np.array([[pitch, yaw, roll, 225.0, 240.0, 0.0, 0.0013]], np.float32)  # (1, 7) as in the releases


@pytest.fixture
def lp_root(tmp_path: Path) -> Path:
    pt2d = np.stack([np.arange(68.0), np.arange(68.0)])  # the source image's points; not used for views
    write_mat(tmp_path / "AFW" / "AFW_134212_1_0", pixels(0, (45, 45)), Pose_Para=pose_para(0.1, 0.2, -0.3), pt2d=pt2d)
    write_mat(tmp_path / "AFW" / "AFW_134212_1_3", pixels(1, (45, 45)), Pose_Para=pose_para(0.1, 0.9, -0.3), pt2d=pt2d)
    write_mat(tmp_path / "AFW_Flip" / "AFW_134212_1_0", pixels(2, (45, 45)), Pose_Para=pose_para(0.1, -0.2, 0.3),
              pt2d=pt2d)  # fmt: skip
    save(tmp_path / "IBUG" / "IBUG_image_003_1_0.jpg", pixels(3))  # no .mat: skipped
    points = np.stack([np.arange(68.0) + 0.5, 2 * np.arange(68.0)], axis=1)  # (68, 2), point i = (i + .5, 2i)
    (tmp_path / "landmarks" / "AFW").mkdir(parents=True)
    scipy_io.savemat(str(tmp_path / "landmarks" / "AFW" / "AFW_134212_1_0_pts.mat"),
                     {"pts_2d": points + 3.0, "pts_3d": points})  # fmt: skip
    return tmp_path


def test_300w_lp_pose_landmarks_subjects(lp_root: Path):
    with pytest.warns(UserWarning, match="skipped 1 image"):
        faces = list(Pose300WLP(lp_root))
    assert [f.meta["source"] for f in faces] == ["AFW/AFW_134212_1_0.jpg", "AFW/AFW_134212_1_3.jpg",
                                                 "AFW_Flip/AFW_134212_1_0.jpg"]  # fmt: skip
    for face in faces:
        check_contract(face)
        assert face.masks["pose"].all() and face.meta["split"] == "train" and face.image.shape == (45, 45, 3)
        assert face.meta["subject"] == "AFW_134212_1"  # views and flips of one source face share it
    assert np.allclose(faces[0].labels["pose"], [5.7296, -11.4592, -17.1887], atol=1e-3)  # degrees, our signs
    assert np.allclose(faces[2].labels["pose"], [5.7296, 11.4592, 17.1887], atol=1e-3)  # the mirror: yaw, roll flip
    assert [f.meta["view"] for f in faces] == [0, 3, 0] and [f.meta["flipped"] for f in faces] == [False, False, True]
    assert faces[0].masks["landmarks"].all()
    assert np.allclose(faces[0].labels["landmarks"], np.stack([np.arange(68) + 0.5, 2 * np.arange(68)], axis=1))
    assert not faces[1].masks["landmarks"].any() and not faces[2].masks["landmarks"].any()  # no _pts.mat for them
    assert faces[1].meta["pose_in_protocol_range"] and faces[1].labels["pose"][P("yaw")] < -50


@pytest.fixture
def aflw_root(tmp_path: Path) -> Path:
    pt3d = np.stack([np.arange(68.0) * 3, 400 - np.arange(68.0), np.linspace(-50, 50, 68)])  # (3, 68): x, y, z
    pt2d = np.full((2, 21), -1.0)  # AFLW's 21 points (-1: not visible): not the 68
    write_mat(tmp_path / "AFLW2000" / "image00002", pixels(0, (45, 45), channels=None),
              Pose_Para=pose_para(-0.2, 0.4, 0.05), pt2d=pt2d, pt3d_68=pt3d)  # fmt: skip
    write_mat(tmp_path / "AFLW2000" / "image00004", pixels(1, (45, 45)),
              Pose_Para=pose_para(0.1, 2.0, 0.0), pt2d=pt2d, pt3d_68=pt3d)  # fmt: skip
    return tmp_path


def test_aflw2000_pose_and_68_landmarks(aflw_root: Path):
    faces = list(AFLW2000(aflw_root))
    assert [f.meta["source"] for f in faces] == ["AFLW2000/image00002.jpg", "AFLW2000/image00004.jpg"]
    for face in faces:
        check_contract(face)
        assert face.meta["split"] == "test" and face.meta["subject"] is None
        assert face.masks["landmarks"].all() and face.image.shape == (45, 45, 3)  # grey → 3 channels
        assert np.allclose(face.labels["landmarks"], np.stack([np.arange(68) * 3, 400 - np.arange(68)], axis=1))
    assert np.allclose(faces[0].labels["pose"], np.degrees([-0.2, -0.4, 0.05]), atol=1e-3)
    assert [f.meta["pose_in_protocol_range"] for f in faces] == [True, False]  # 2 rad ≈ 115° of yaw


# --- FG-NET --------------------------------------------------------------------------------------------------------

FGNET_POINTS = np.stack([np.linspace(65.3, 180.1, 68), np.linspace(286.5, 398.0, 68)], axis=1)


@pytest.fixture
def fgnet_root(tmp_path: Path) -> Path:
    for i, name in enumerate(["001A02.JPG", "001A43a.JPG", "002A05.JPG", "Thumbs.JPG"]):
        save(tmp_path / "images" / name, pixels(i, (30, 40)))
    lines = ["version: 1", "n_points: 68", "{", *(f"{x:.4f} {y:.4f}" for x, y in FGNET_POINTS), "}"]
    (tmp_path / "points").mkdir()
    (tmp_path / "points" / "001a02.pts").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_fgnet_names_points_folds(fgnet_root: Path):
    with pytest.warns(UserWarning, match="skipped 1 file"):
        faces = list(FGNet(fgnet_root))
    assert [f.labels["age"] for f in faces] == [2.0, 43.0, 5.0]
    assert [(f.meta["subject"], f.meta["take"]) for f in faces] == [("001", ""), ("001", "a"), ("002", "")]
    for face in faces:
        check_contract(face)
        assert "landmarks" not in face.labels  # FG-NET's own markup is not the iBUG-300W order
    assert faces[0].meta["points"].shape == (68, 2) and np.allclose(faces[0].meta["points"], FGNET_POINTS, atol=1e-3)
    assert faces[1].meta["points"] is None
    assert [(f.meta["fold"], f.meta["split"]) for f in faces] == [(0, "val"), (0, "val"), (1, "train")]
    bad = fgnet_root / "bad.pts"
    bad.write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    with pytest.raises(ValueError, match="n_points"):
        read_pts(bad)


# --- JAFFE ---------------------------------------------------------------------------------------------------------

JAFFE_FILES = ["KA.AN1.39.tiff", "KA.NE2.40.tiff", "KL.SU3.166.tiff", "UY.ZZ1.1.tiff"]


@pytest.fixture
def jaffe_root(tmp_path: Path) -> Path:
    for i, name in enumerate(JAFFE_FILES):
        save(tmp_path / "jaffe" / name, pixels(i, (32, 32), channels=None))  # grey, like the release
    (tmp_path / "jaffe" / "README").write_text("The Japanese Female Facial Expression (JAFFE) Database\n")
    return tmp_path


def test_jaffe_codes_grey_subjects(jaffe_root: Path):
    with pytest.warns(UserWarning, match="skipped 1 tiff"):
        faces = list(open_dataset("jaffe", jaffe_root))
    assert [EXPRESSIONS[f.labels["expression"]] for f in faces] == ["anger", "neutral", "surprise"]
    for i, face in enumerate(faces):
        check_contract(face)
        assert face.masks["expression"].tolist() == [name != "contempt" for name in EXPRESSIONS]
        assert face.image.shape == (32, 32, 3) and (face.image == pixels(i, (32, 32), channels=None)[..., None]).all()
    assert [f.meta["subject"] for f in faces] == ["KA", "KA", "KL"]
    assert [(f.meta["fold"], f.meta["split"]) for f in faces] == [(0, "val"), (0, "val"), (1, "train")]
    assert faces[2].meta["source"] == "jaffe/KL.SU3.166.tiff"
