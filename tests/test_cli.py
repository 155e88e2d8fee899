"""`qface analyze` over folders: results files, bad files reported and skipped, pictures written; `qface info`."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from qface.cli import SAMPLE_IMAGE, main


def make_folder(tmp_path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(SAMPLE_IMAGE, folder / "astronaut.png")
    Image.fromarray(np.full((120, 160, 3), 200, np.uint8)).save(folder / "blank.jpg")
    (folder / "broken.jpg").write_bytes(SAMPLE_IMAGE.read_bytes()[:2000])  # a truncated file
    (folder / "empty.png").write_bytes(b"")
    shutil.copy(SAMPLE_IMAGE, folder / "nested" / "again.png")
    shutil.copy(SAMPLE_IMAGE, folder / "nested" / "astronaut.png")  # the same name in another folder
    return folder


def test_a_folder_with_bad_files_is_analyzed_to_csv_and_the_failures_are_reported(tmp_path, capsys):
    folder = make_folder(tmp_path)
    out = tmp_path / "results.csv"
    code = main(["analyze", str(folder), "--detector", "dlib-hog", "--out", str(out), "--tasks", "expression", "age"])
    assert code == 1  # some inputs failed
    rows = list(csv.DictReader(out.open()))
    by_file = {}
    for row in rows:
        by_file.setdefault(row["file"].split("/")[-1], []).append(row)
    assert set(by_file) == {"astronaut.png", "blank.jpg", "broken.jpg", "empty.png"}  # not recursive
    assert by_file["blank.jpg"][0]["face"] == "" and not by_file["blank.jpg"][0]["error"]
    assert by_file["blank.jpg"][0]["model"].startswith("qface-dlib@")  # every row says which model answered
    assert "empty" in by_file["empty.png"][0]["error"]
    assert by_file["broken.jpg"][0]["error"]
    face = by_file["astronaut.png"][0]
    assert float(face["expression.happy"]) >= 0 and float(face["age"]) > 0 and "pose.yaw" not in face
    assert "broken.jpg" in capsys.readouterr().err


def test_recursive_jsonl_with_annotations_and_attention_maps(tmp_path):
    folder = make_folder(tmp_path)
    for bad in ("broken.jpg", "empty.png"):
        (folder / bad).unlink()
    out, pictures, attention = tmp_path / "r.jsonl", tmp_path / "annotated", tmp_path / "attention"
    args = ["analyze", str(folder), "--recursive", "--detector", "dlib-hog", "--out", str(out)]
    assert main([*args, "--annotate", str(pictures), "--attention", str(attention)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {row["file"].split("/")[-1] for row in rows} == {"astronaut.png", "blank.jpg", "again.png"}
    assert (pictures / "again.jpg").exists() and (pictures / "blank.jpg").exists()
    assert (pictures / "astronaut.jpg").exists() and (pictures / "astronaut_2.jpg").exists()
    panel = Image.open(attention / "astronaut_face0.png")
    assert panel.width == 7 * 150  # the chip and six label queries


def test_info_lists_every_label_in_order(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "expression (8): neutral, happy, sad" in text and "AU01" in text and "5_o_Clock_Shadow" in text


def test_summary_lines_read_like_sentences(capsys):
    assert main(["analyze", "--summary", "--detector", "dlib-hog", "--tasks", "expression", "age", "pose"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("model qface-dlib@")
    assert lines[1].startswith("astronaut.png: face 0 at [") and "age " in lines[1] and "yaw " in lines[1]


def test_a_video_gives_rows_per_analyzed_frame_and_an_annotated_video(tmp_path):
    cv2 = pytest.importorskip("cv2")
    frame = np.ascontiguousarray(np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))[..., ::-1])
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (512, 512))
    for _ in range(5):
        writer.write(frame)
    writer.release()
    out, pictures = tmp_path / "video.csv", tmp_path / "annotated"
    args = ["analyze", str(clip), "--stride", "2", "--detector", "dlib-hog", "--tasks", "age", "--annotate"]
    assert main([*args, str(pictures), "--out", str(out)]) == 0
    frames = sorted({int(row["frame"]) for row in csv.DictReader(out.open())})
    assert frames == [0, 2, 4]
    annotated = cv2.VideoCapture(str(pictures / "clip.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 3


def test_an_image_that_breaks_the_detector_is_one_error_row_and_its_batch_mates_survive(tmp_path, monkeypatch):
    from qface.analyzer import FaceAnalyzer

    folder = make_folder(tmp_path)
    detect = FaceAnalyzer._detect

    def fragile(self, image, detector=None):
        if image.shape[:2] == (120, 160):  # blank.jpg
            raise RuntimeError("detector failure")
        return detect(self, image, detector)

    monkeypatch.setattr(FaceAnalyzer, "_detect", fragile)
    out = tmp_path / "r.jsonl"
    assert main(["analyze", str(folder), "--detector", "dlib-hog", "--tasks", "age", "--out", str(out)]) == 1
    rows = {row["file"].split("/")[-1]: row for row in map(json.loads, out.read_text().splitlines())}
    assert rows["blank.jpg"]["error"] == "RuntimeError: detector failure"
    assert rows["astronaut.png"]["age"] > 0


def test_eval_without_caches_says_how_to_build_them(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"datasets:\n  celeba: {{folder: {tmp_path / 'missing'}}}\n")
    assert main(["eval", "--config", str(config)]) == 2
    assert "qface train" in capsys.readouterr().err
