"""Video: face tracks, per-track smoothing and summaries, the prefetch thread, tracking metrics; and, with the
research data, a clip of real faces (people crossing, one leaving and coming back) through `qface analyze`."""

from __future__ import annotations

import csv
import threading

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image

from qface.cli import main
from qface.eval.tracking import Walk, id_switches, idf1, match_frames, write_clip
from qface.pipeline.output import ResultWriter
from qface.pipeline.results import Face
from qface.pipeline.video import FaceTracker, Smoother, TrackSummaries, box_iou, prefetched
from qface.tasks import TASKS


def person(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=128)
    return vector / np.linalg.norm(vector)


def face_at(x: float, embedding: np.ndarray | None = None, y: float = 100, **values) -> Face:
    outputs = {"embedding": embedding, **values}
    return Face(box=[x, y, x + 80, y + 80], score=0.9, points=[], model="test", outputs=outputs)


def test_box_overlap():
    iou = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert iou.tolist() == [[1.0, pytest.approx(1 / 3), 0.0]]


def test_two_people_crossing_keep_their_ids_by_their_embeddings():
    """A walks right, B left on the same line; for 5 frames their boxes overlap almost entirely, and for 3 of
    them only the front face (B) is detected. Overlap alone would swap or lose them."""
    a, b = person(1), person(2)
    tracker, seen = FaceTracker(), []
    for frame in range(30):
        xa, xb = 10 * frame, 290 - 10 * frame
        faces = [face_at(xb, b + 0.05 * person(100 + frame))]  # B in front, a slightly different view each frame
        if abs(xa - xb) > 20:
            faces.insert(0, face_at(xa, a + 0.05 * person(200 + frame)))
        tracker.update(faces, frame / 10)
        seen.append({face.track: face.box[0] for face in faces})
    assert all(set(frame) <= {1, 2} for frame in seen)
    assert [frame[1] for frame in seen if 1 in frame] == sorted(frame[1] for frame in seen if 1 in frame)  # A: right
    assert [frame[2] for frame in seen if 2 in frame] == sorted((f[2] for f in seen if 2 in f), reverse=True)


def test_a_person_who_leaves_rejoins_within_the_buffer_and_a_stranger_gets_a_new_id():
    a, stranger = person(1), person(3)
    tracker = FaceTracker(max_lost_seconds=3.0)
    tracker.update([first := face_at(0, a)], 0.0)
    tracker.update([back := face_at(400, a)], 2.5)  # elsewhere, 2.5 s later: the embedding says who
    tracker.update([other := face_at(400, stranger)], 2.6)  # same place, another person
    tracker.update([late := face_at(0, a)], 6.0)  # gone longer than the buffer
    assert (first.track, back.track, other.track, late.track) == (1, 1, 2, 3)


def test_without_embeddings_overlap_alone_follows_faces():
    tracker, ids = FaceTracker(), []
    for frame in range(10):
        faces = [face_at(8 * frame), face_at(300 - 8 * frame, y=300)]
        tracker.update(faces, frame / 10)
        ids.append([face.track for face in faces])
    assert ids == [[1, 2]] * 10


def test_smoothing_steadies_a_jittering_face_and_keeps_its_raw_values():
    smoother, ages, raws, tops = Smoother(seconds=0.5), [], [], []
    for frame in range(40):
        jitter = 4.0 if frame % 2 else -4.0
        happy = 0.55 if frame % 2 else 0.45
        face = face_at(0, age=30 + jitter, expression={"happy": happy, "neutral": 1 - happy}, top_expression="x")
        face.pose = {"pitch": 0.0, "yaw": 0.0, "roll": 179.0 if frame % 2 else -179.0}
        face.track = 1
        smoother.update([face], frame / 25)
        ages.append(face.age)
        raws.append(face.raw["age"])
        tops.append(face.top_expression)
        assert face.expression["happy"] + face.expression["neutral"] == pytest.approx(1, abs=1e-3)
        assert abs(abs(face.pose["roll"]) - 180) < 1.01  # angles average the short way round, not through 0
    assert np.std(np.diff(ages[10:])) < 0.25 * np.std(np.diff(raws[10:]))
    assert raws[:2] == [26.0, 34.0]
    assert len(set(tops[10:])) == 1  # the raw top expression flips every frame, the smoothed one does not
    with pytest.raises(ValueError, match="positive"):
        Smoother(0)


def test_track_and_raw_values_reach_json_and_csv(tmp_path):
    face = face_at(0, age=30.0, expression={label: 0.125 for label in TASKS["expression"].labels})
    face.outputs["top_expression"] = "neutral"
    face.track = 4
    Smoother(seconds=0.5).update([face], 0.0)
    assert face.to_dict()["track"] == 4 and face.to_dict()["raw"]["age"] == 30.0
    assert {"track", "raw.age", "raw.expression.happy", "raw.top_expression"} <= set(face.flat())
    writer = ResultWriter(tmp_path / "rows.csv", ["expression", "age"], raw=True)
    writer.faces("clip.mp4", [face], frame=0, time=0.0)
    writer.close()
    [row] = csv.DictReader((tmp_path / "rows.csv").open())
    assert (row["track"], row["raw.age"], row["raw.top_expression"]) == ("4", "30.0", "neutral")
    plain = ResultWriter(tmp_path / "plain.csv", ["expression", "age"])
    with pytest.raises(ValueError, match="raw"):  # raw values without their columns are an error, not dropped
        plain.faces("clip.mp4", [face], frame=0, time=0.0)
    plain.close()


def test_track_summaries_count_frames_and_average_the_raw_values():
    summaries = TrackSummaries()
    for frame in range(4):
        face = face_at(0, age=20.0 + frame, expression={"neutral": 0.2, "happy": 0.8})
        face.pose, face.track = {"pitch": 0.0, "yaw": 10.0 * frame, "roll": 0.0}, 7
        summaries.add([face], frame * 2, frame * 0.2)
    (summary,) = summaries
    row = summary.row()
    assert (row["track"], row["first_frame"], row["last_frame"], row["frames"]) == (7, 0, 6, 4)
    assert row["median_age"] == 21.5 and row["pose.yaw"] == 15.0
    assert summary.best.pose["yaw"] == 0.0  # the most frontal sighting represents the track


def test_prefetch_keeps_order_raises_the_workers_error_and_stops_when_closed():
    assert list(prefetched(iter(range(100)), size=3)) == list(range(100))

    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetched(broken(), size=2))
    produced = []

    def endless():
        while True:
            produced.append(1)
            yield len(produced)

    items = prefetched(endless(), size=2)
    assert next(items) == 1
    items.close()
    count = len(produced)
    assert count <= 5 and not any(t.name == "qface-prefetch" for t in threading.enumerate())


def test_idf1_and_id_switches_on_hand_made_tracks():
    box = [0, 0, 10, 10]
    truth = [[(0, box)]] * 4
    assert id_switches(match_frames(truth, [[(5, box)]] * 4)) == 0
    swapped = [[(5, box)], [(5, box)], [(6, box)], [(6, box)]]
    matches = match_frames(truth, swapped)
    assert id_switches(matches) == 1
    assert idf1(matches, truth, swapped) == pytest.approx(0.5)
    assert match_frames(truth, [[(5, [50, 50, 60, 60])]] * 4) == [[]] * 4  # too far: no match


# ---------------------------------------------------------------------------------------------------------------
# Real faces


def celeba(name: str) -> np.ndarray:
    return np.asarray(Image.open(shared_path("data", "celeba", "img_align_celeba", name)).convert("RGB"))


@pytest.mark.slow
def test_real_faces_crossing_and_coming_back_keep_their_ids(tmp_path):
    """Three CelebA validation identities (all young women with long dark hair: similar on purpose): A and B cross
    (B in front, hiding A for a few frames), C leaves for 1.2 s and comes back."""
    walks = [
        Walk(celeba("163289.jpg"), (0, 10), (500, 10), scale=(0.8, 0.8)),
        Walk(celeba("163429.jpg"), (500, 10), (0, 10), scale=(0.8, 0.8)),
        Walk(celeba("163908.jpg"), (420, 180), (300, 180), away=range(14, 26), scale=(0.75, 0.8)),
    ]
    clip = tmp_path / "people.mp4"
    truth = write_clip(clip, walks, frames=40)
    assert [len(frame) for frame in truth][18:22] == [1, 1, 1, 1]  # A hidden behind B, C away
    out, tracks, pictures = tmp_path / "rows.csv", tmp_path / "tracks.csv", tmp_path / "annotated"
    command = ["analyze", str(clip), "--detector", "dlib-hog", "--tasks", "expression", "age", "pose", "identity"]
    command += ["--smooth", "0.5", "--out", str(out), "--tracks", str(tracks), "--annotate", str(pictures)]
    assert main(command) == 0
    rows = list(csv.DictReader(out.open()))
    predicted = [[] for _ in truth]
    for row in rows:
        if row["track"]:
            box = [float(row[f"box.{k}"]) for k in ("x1", "y1", "x2", "y2")]
            predicted[int(row["frame"])].append((int(row["track"]), box))
    matches = match_frames(truth, predicted)
    assert id_switches(matches) == 0
    assert idf1(matches, truth, predicted) > 0.9
    before, after = (dict(matches[frame]) for frame in (5, 35))  # before and after the crossing and C's absence
    assert before == after and len(set(before.values())) == 3
    assert all(row["raw.age"] and row["age"] for row in rows if row["track"])
    summaries = list(csv.DictReader(tracks.open()))
    assert sorted(int(row["track"]) for row in summaries) == sorted(before.values())
    for row in summaries:
        assert int(row["frames"]) >= 25 and float(row["median_age"]) > 0 and row["top_expression"]
        assert Image.open(row["crop"]).size == (150, 150)
    assert (pictures / "people.mp4").stat().st_size > 0


def test_tracks_and_smoothing_are_refused_on_ray(tmp_path, capsys):
    """Ray actors see whole videos but the options are the plain CLI's: refused, not silently ignored."""
    assert main(["analyze", str(tmp_path / "clip.mp4"), "--engine", "ray", "--smooth", "0.5"]) == 2
    assert "--engine local" in capsys.readouterr().err
