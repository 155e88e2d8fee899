"""Hostile files, paths and options (issue 9): nothing lost, nothing hangs. Every case is generated here, small;
the model is a tiny random Q-Face with `--detector none`, so each image is one face and a run takes milliseconds."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CONFIG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from qface.analyzer import FaceAnalyzer
from qface.cli import main
from qface.model.qface import QFace, QFaceConfig
from qface.pipeline import io as image_io
from qface.pipeline.files import find_inputs, printable
from qface.pipeline.io import ImageDecodeError, SpecialFileError, load_image
from qface.scale import list_inputs


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    QFace(QFaceConfig(**TINY_CONFIG)).save(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_analyzer(tiny_weights) -> FaceAnalyzer:
    return FaceAnalyzer(tiny_weights, detector="none")


def run(weights: Path, *args: str) -> int:
    return main(["analyze", *args, "--weights", str(weights), "--detector", "none"])


def picture(path: Path | bytes, fmt: str | None = None) -> None:
    Image.fromarray(np.full((24, 24, 3), 128, np.uint8)).save(os.fsdecode(path), fmt)


def video(path: Path, frames: int = 4, size: tuple[int, int] = (48, 32)) -> Path:
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for index in range(frames):
        writer.write(np.full((size[1], size[0], 3), 40 * index, np.uint8))
    writer.release()
    return path


class Blocked(BaseException):
    """Not an Exception: the code under test must not be able to swallow it as one bad file."""


@contextmanager
def no_hang(seconds: float = 20):
    """Fail (instead of hanging the suite) when the body blocks, as a reader of a FIFO does."""

    def expired(*_):
        raise Blocked(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# 1 -------------------------------------------------------------------------------------------------------------


def test_file_names_that_are_not_utf8_are_written_without_loss(tiny_weights, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9 \xff.png"  # Latin-1 bytes: not UTF-8
    picture(raw, "PNG")
    picture(folder / "z_after.png")
    out = tmp_path / "r.csv"
    assert run(tiny_weights, str(folder), "--out", str(out)) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))  # the file is valid UTF-8
    assert [Path(row["file"]).name for row in rows] == ["caf\\xe9 \\xff.png", "z_after.png"]
    out = tmp_path / "r.jsonl"
    assert run(tiny_weights, str(folder), "--out", str(out)) == 0
    assert os.fsencode(jsonl(out)[0]["file"]) == raw  # exact: the original bytes come back
    capsys.readouterr()
    assert run(tiny_weights, str(folder), "--summary") == 0  # capsys's stdout is strict UTF-8
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("caf\\xe9 \\xff.png: face 0") and lines[2].startswith("z_after.png: face 0")


# 2 -------------------------------------------------------------------------------------------------------------


def test_a_fifo_is_refused_without_opening_it(tiny_weights, tiny_analyzer, tmp_path):
    picture(tmp_path / "a.png")
    picture(tmp_path / "c.png")
    for name in ("b.png", "clip.mp4"):
        os.mkfifo(tmp_path / name)
    out = tmp_path / "r.jsonl"
    paths = [str(tmp_path / name) for name in ("a.png", "b.png", "clip.mp4", "c.png")]
    with no_hang():
        assert run(tiny_weights, *paths, "--out", str(out)) == 1
        with pytest.raises(SpecialFileError, match="a FIFO, not a regular file"):
            load_image(tmp_path / "b.png")
        with pytest.raises(SpecialFileError, match="a FIFO"):
            list(tiny_analyzer.analyze_video(tmp_path / "clip.mp4"))
    rows = {Path(row["file"]).name: row for row in jsonl(out)}
    assert rows["a.png"]["face"] == 0 and rows["c.png"]["face"] == 0
    assert "FIFO" in rows["b.png"]["error"] and "FIFO" in rows["clip.mp4"]["error"]


def test_a_device_is_refused_without_reading_it():
    with pytest.raises(SpecialFileError, match="a device"):
        load_image("/dev/zero")


# 3 -------------------------------------------------------------------------------------------------------------


def test_a_video_without_a_frame_is_an_error_row_and_fails_the_run(tiny_weights, tiny_analyzer, tmp_path):
    empty = video(tmp_path / "empty.avi", frames=0)
    cv2 = pytest.importorskip("cv2")
    assert cv2.VideoCapture(str(empty)).isOpened()  # it opens: the case that used to vanish
    with pytest.raises(ValueError, match="no frame could be decoded"):
        list(tiny_analyzer.analyze_video(empty))
    out = tmp_path / "r.csv"
    assert run(tiny_weights, str(empty), "--out", str(out)) == 1
    (row,) = csv.DictReader(out.open())
    assert "no frame" in row["error"]


# 4 -------------------------------------------------------------------------------------------------------------


def test_video_frames_over_the_pixel_limit_are_refused_before_decoding(tiny_analyzer, tmp_path, monkeypatch):
    clip = video(tmp_path / "clip.avi", size=(48, 32))
    monkeypatch.setattr(image_io, "MAX_PIXELS", 48 * 32 - 1)
    with pytest.raises(ImageDecodeError, match="48×32 .* refused before decoding"):
        list(tiny_analyzer.analyze_video(clip))
    monkeypatch.setattr(image_io, "MAX_PIXELS", 48 * 32)
    assert len(list(tiny_analyzer.analyze_video(clip))) == 4


def test_video_batches_are_bounded_by_pixels_not_only_frames(tiny_analyzer, tmp_path, monkeypatch):
    clip = video(tmp_path / "clip.avi", frames=5, size=(48, 32))
    monkeypatch.setattr(image_io, "MAX_VIDEO_BATCH_PIXELS", 2 * 48 * 32)
    sizes, analyze_detected = [], FaceAnalyzer._analyze_detected

    def spy(self, found):
        sizes.append(len(found))
        return analyze_detected(self, found)

    monkeypatch.setattr(FaceAnalyzer, "_analyze_detected", spy)
    assert [frame.index for frame in tiny_analyzer.analyze_video(clip)] == [0, 1, 2, 3, 4]
    assert tiny_analyzer.batch_size == 32 and max(sizes) == 2


# 5 -------------------------------------------------------------------------------------------------------------


@pytest.fixture
def model_must_not_load(monkeypatch):
    def refuse(*_, **__):
        raise AssertionError("the model loaded before the output paths were checked")

    monkeypatch.setattr("qface.analyzer.load_model", refuse)


@pytest.mark.parametrize(
    "option, make, message",
    [
        ("--out", lambda p: p.mkdir(parents=True), "is a folder"),
        ("--out", lambda p: p.parent.with_name("file").write_text(""), None),
        ("--annotate", lambda p: p.parent.mkdir() or p.write_text("x"), "exists and is not a folder"),
        ("--attention", lambda p: p.parent.mkdir() or p.write_text("x"), "exists and is not a folder"),
    ],
)
def test_bad_output_paths_are_one_line_errors_before_the_model_loads(
    option, make, message, tmp_path, capsys, model_must_not_load
):
    target = tmp_path / "sub" / "results.csv"
    make(target)
    if message is None:  # the folder of --out is a file
        target = tmp_path / "file" / "results.csv"
        message = "cannot create the folder"
    assert main(["analyze", "--out" if option == "--out" else option, str(target)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["results.json", "results.txt"])
def test_an_output_name_without_a_known_format_is_refused(name, tmp_path, capsys, model_must_not_load):
    assert main(["analyze", "--out", str(tmp_path / name)]) == 2
    assert ".jsonl" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused_before_the_model_loads(tmp_path, capsys, model_must_not_load):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    assert main(["analyze", "--out", str(folder / "r.csv")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_missing_output_folders_are_created_and_upper_case_csv_is_csv(tiny_weights, tmp_path):
    out, pictures = tmp_path / "new" / "deeper" / "R.CSV", tmp_path / "pics" / "a"
    assert run(tiny_weights, "--out", str(out), "--annotate", str(pictures)) == 0
    (row,) = csv.DictReader(out.open())
    assert row["face"] == "0" and (pictures / "astronaut.jpg").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_one_line_and_exit_2(tiny_weights, tmp_path, capsys):
    out = tmp_path / "full.jsonl"
    out.symlink_to("/dev/full")
    assert run(tiny_weights, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "No space left on device; the 0 rows written before it are kept" in err and "Traceback" not in err


def test_a_write_error_mid_run_keeps_the_rows_before_it(tiny_weights, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(6):
        picture(folder / f"{index}.png")
    out = tmp_path / "r.jsonl"
    assert run(tiny_weights, str(folder), "--out", str(out), "--batch-size", "1") == 0
    row_size = len(out.read_text().splitlines()[0]) + 1
    capsys.readouterr()
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(2.5 * row_size), limits[1]))
    try:
        code = run(tiny_weights, str(folder), "--out", str(out), "--batch-size", "1")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert re.search(r"cannot write the results to .*r\.jsonl: .*File too large; the 2 rows written before", err)
    assert [Path(row["file"]).name for row in jsonl(out)] == ["0.png", "1.png"]  # both complete and parseable


# 6 -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--batch-size", "--stride"])
@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_batch_size_and_stride_must_be_positive(option, value, capsys, model_must_not_load):
    with pytest.raises(SystemExit) as exit:
        main(["analyze", option, value])
    assert exit.value.code == 2 and f"must be a positive integer, got '{value}'" in capsys.readouterr().err


def test_the_api_validates_batch_size_and_stride(tiny_weights, tiny_analyzer, tmp_path):
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        FaceAnalyzer(tiny_weights, detector="none", batch_size=0)
    clip = video(tmp_path / "clip.avi")
    for stride in (0, -1, 1.5):
        with pytest.raises(ValueError, match="stride must be a positive integer"):
            list(tiny_analyzer.analyze_video(clip, stride))


# 7 -------------------------------------------------------------------------------------------------------------


def test_a_folder_run_accounts_for_every_entry(tiny_weights, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "photos"
    (folder / "locked").mkdir(parents=True)
    picture(folder / "locked" / "hidden.png")
    formats = {"a.tga": "TGA", "b.qoi": "QOI", "c.ico": "ICO", "d.pcx": "PCX", "e.sgi": "SGI", "f.dib": "DIB"}
    for name, fmt in formats.items():
        picture(folder / name, fmt)
    picture(folder / "g.png")
    (folder / "notes.txt").write_text("not a picture")
    os.symlink(folder / "nowhere.jpg", folder / "gone.jpg")
    os.symlink(folder / "loop.jpg", folder / "loop.jpg")
    os.symlink("/dev/null", folder / "null.png")
    os.mkfifo(folder / "pipe.png")
    os.mkfifo(folder / "pipe")
    os.symlink(folder, folder / "self")  # a cycle through a folder link
    (folder / "sub").mkdir()
    picture(folder / "sub" / "h.png")
    scandir = os.scandir

    def locked(path):  # root reads any folder, so an unlistable one is simulated
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", locked)
    out = tmp_path / "r.jsonl"
    with no_hang():
        assert run(tiny_weights, str(folder), "--recursive", "--out", str(out)) == 1
    rows = {str(Path(row["file"]).relative_to(folder)): row for row in jsonl(out)}
    analysed = {name for name, row in rows.items() if row.get("face") == 0}
    errors = {name: row["error"] for name, row in rows.items() if row.get("error")}
    assert analysed == {*formats, "g.png", "sub/h.png"}
    assert set(errors) == {"locked", "gone.jpg", "loop.jpg", "null.png", "pipe.png"}
    assert "Permission denied" in errors["locked"] and "a device" in errors["null.png"]
    assert "symbolic link" in errors["gone.jpg"] and "symbolic link" in errors["loop.jpg"]
    final = capsys.readouterr().err.splitlines()[-1]
    assert final.startswith("13 inputs, 5 failed") and "skipped 3 (" in final
    assert "1 not an image or video suffix" in final and "1 FIFO, device or socket" in final
    assert "1 folder already visited" in final
    listed = {str(Path(path).relative_to(folder)) for path in list_inputs(folder, recursive=True)}
    assert listed == set(rows)  # the Ray engine lists the same inputs (analysed and error rows) as the CLI
    monkeypatch.setattr(os, "scandir", scandir)
    assert find_inputs([folder]).skipped["sub-folder (without --recursive)"] == 3  # locked, self, sub


def test_every_suffix_pillow_decodes_is_an_image_suffix():
    suffixes = image_io.image_suffixes()
    assert {".avif", ".tga", ".ico", ".pcx", ".sgi", ".qoi", ".jp2", ".psd", ".dib"} <= suffixes
    assert {".jpg", ".png", ".webp"} <= suffixes and ".eps" not in suffixes and ".pdf" not in suffixes


def test_interrupting_a_run_is_one_line(tiny_weights, tmp_path, capsys, monkeypatch):
    def interrupt(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(FaceAnalyzer, "_analyze_detected", interrupt)
    assert run(tiny_weights, "--out", str(tmp_path / "r.csv")) == 130
    err = capsys.readouterr().err
    assert "interrupted after 0 of 1 inputs" in err and "Traceback" not in err


def test_a_bad_item_in_an_api_batch_keeps_the_good_ones(tiny_analyzer, tmp_path, monkeypatch):
    good = tmp_path / "good.png"
    picture(good, "PNG")
    batch = [good, tmp_path / "missing.png", b"not an image", np.full((24, 24, 3), 9, np.uint8), good]
    results = tiny_analyzer.analyze_batch(batch)
    assert [type(result).__name__ for result in results] == ["list", "FileNotFoundError", "NotAnImageError"] + [
        "list"
    ] * 2
    assert isinstance(results[2], ImageDecodeError)
    assert all(len(results[index]) == 1 for index in (0, 3, 4))  # detector "none": one face each
    with pytest.raises(ImageDecodeError):  # a single input still raises
        tiny_analyzer.analyze(b"not an image")

    detect = tiny_analyzer.detector

    def fragile(image):  # the detector fails on one image only: the batch is redone one by one
        if image[0, 0, 0] == 9:
            raise RuntimeError("detector failed")
        return detect(image)

    monkeypatch.setattr(tiny_analyzer, "detector", fragile)
    results = tiny_analyzer.analyze_batch(batch)
    assert isinstance(results[3], RuntimeError) and len(results[0]) == len(results[4]) == 1


def test_a_jpeg_whose_header_claims_more_pixels_than_its_data_holds_is_refused(tmp_path):
    encoded = tmp_path / "small.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(encoded)
    data = bytearray(encoded.read_bytes())
    frame = data.find(b"\xff\xc0")  # baseline frame header: length, precision, then height and width
    data[frame + 5 : frame + 9] = (7000).to_bytes(2, "big") * 2
    with pytest.raises(ImageDecodeError, match="truncated or corrupt JPEG.*7000×7000"):
        load_image(bytes(data))
    claimed = tmp_path / "claimed.jpg"
    claimed.write_bytes(data)
    with pytest.raises(ImageDecodeError, match="claimed.jpg: truncated"):
        load_image(claimed)
    assert load_image(encoded).shape == (64, 64, 3)


SLOW_RUN = """
import sys, time
from qface.cli import main
from qface.analyzer import FaceAnalyzer
network = FaceAnalyzer._analyze_detected
def slow(self, found):
    time.sleep(0.1)
    return network(self, found)
FaceAnalyzer._analyze_detected = slow
sys.exit(main(["analyze", *sys.argv[1:]]))
"""


@pytest.mark.slow  # a subprocess that imports torch: seconds on a loaded machine
def test_sigterm_keeps_the_rows_written_and_exits_143(tiny_weights, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "r.jsonl"
    folder.mkdir()
    for index in range(100):
        picture(folder / f"{index:03}.png", "PNG")
    args = [str(folder), "--out", str(out), "--batch-size", "1", "--weights", str(tiny_weights), "--detector", "none"]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", SLOW_RUN, *args], stderr=subprocess.PIPE, text=True, env=env)
    with no_hang(60):
        while not out.exists() or out.read_text().count("\n") < 3:
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        err = process.communicate()[1]
    assert process.returncode == 143, err
    last = err.strip().splitlines()[-1]
    done = int(re.search(r"terminated \(SIGTERM\) after (\d+) of 100 inputs", last)[1])
    rows = jsonl(out)  # every line is whole JSON
    assert 3 <= done < 100 and len(rows) in (done, done + 1) and "Traceback" not in err


def test_a_cuda_device_without_cuda_is_a_clear_error(tiny_weights, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda:0': CUDA is not available here"):
        FaceAnalyzer(tiny_weights, detector="none", device="cuda:0")


@pytest.mark.parametrize("name", ["s.csv", "s.jsonl"])
def test_summary_with_out_writes_both(tiny_weights, tmp_path, capsys, name):
    image = tmp_path / "one.png"
    picture(image, "PNG")
    assert run(tiny_weights, str(image), "--summary", "--out", str(tmp_path / name)) == 0
    out = capsys.readouterr().out
    assert out.startswith("model ") and "one.png: face 0 at" in out
    text = (tmp_path / name).read_text()
    assert "one.png" in text and "face 0 at" not in text


def test_error_lines_do_not_run_into_the_progress_bar(tiny_weights, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    picture(folder / "a.png", "PNG")
    (folder / "b.png").write_bytes(b"not an image")
    picture(folder / "c.png", "PNG")
    assert run(tiny_weights, str(folder), "--out", str(tmp_path / "r.csv")) == 1
    [line] = [line for line in capsys.readouterr().err.split("\n") if "error:" in line]
    assert line.split("\r")[-1].startswith("error: ")  # what is left on screen after the bar's carriage returns
    assert line.count("b.png") == 1


def test_attention_on_a_video_writes_each_analysed_frame(tiny_weights, tmp_path):
    clip = video(tmp_path / "clip.avi", frames=4)
    maps = tmp_path / "maps"
    assert (
        run(tiny_weights, str(clip), "--attention", str(maps), "--stride", "2", "--out", str(tmp_path / "r.csv")) == 0
    )
    assert sorted(p.name for p in maps.iterdir()) == ["clip_frame0_face0.png", "clip_frame2_face0.png"]


def test_face_boxes_are_clipped_to_the_image(tiny_analyzer, monkeypatch):
    detect = tiny_analyzer.detector

    def overhanging(image):  # a face cut by the border: detectors give boxes beyond the image
        return [dataclasses.replace(d, box=d.box + np.float32([-10, -5, 7, 3])) for d in detect(image)]

    monkeypatch.setattr(tiny_analyzer, "detector", overhanging)
    [face] = tiny_analyzer.analyze(np.full((30, 40, 3), 128, np.uint8))
    assert face.box == [0, 0, 40, 30]


def test_eval_from_another_folder_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ and no cache/ here
    assert main(["eval"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no chip cache in cache/chips/") and f"relative to {tmp_path}" in err
    assert main(["eval", "--config", "missing.yaml"]) == 2
    assert capsys.readouterr().err == "error: --config missing.yaml: no such file\n"


# the walker and the writers, property-based --------------------------------------------------------------------

MEDIA = {"good": ".png", "truncated": ".jpg", "empty": ".png", "text": ".jpeg", "fifo": ".png", "dangling": ".gif",
         "loop": ".tga"}  # fmt: skip
OTHER = {"other": ".txt", "fifo_other": "", "dangling_other": ".doc"}
NAME = st.lists(st.sampled_from(["a", "é", " ", ",", '"', "'", "\n", "\\", "\udcff", "\udce9", "_"]), max_size=5)
ENTRY = st.tuples(st.sampled_from([*MEDIA, *OTHER]), NAME.map("".join))


def make_entry(folder: Path, index: int, kind: str, name: str) -> Path:
    path = folder / f"{index}{name}{MEDIA.get(kind) or OTHER.get(kind)}"
    if kind == "good":
        picture(path, "PNG")
    elif kind == "truncated":
        path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(20))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind in ("text", "other"):
        path.write_text("hello")
    elif kind.startswith("fifo"):
        os.mkfifo(path)
    elif kind.startswith("dangling"):
        path.symlink_to(folder / "absent")
    elif kind == "loop":
        path.symlink_to(path)
    return path


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    top=st.lists(ENTRY, max_size=8),
    nested=st.lists(ENTRY, max_size=4),
    recursive=st.booleans(),
    fmt=st.sampled_from([".csv", ".jsonl"]),
)
def test_every_entry_is_accounted_for_exactly_once_and_the_output_parses(
    tiny_weights, tiny_analyzer, monkeypatch, capsys, top, nested, recursive, fmt
):
    monkeypatch.setattr("qface.analyzer.FaceAnalyzer", lambda *_, **__: tiny_analyzer)  # loaded once
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "in"
        folder.mkdir()
        expected_rows, skipped = {}, 0
        for entries, where, reachable in ((top, folder, True), (nested, folder / "sub", recursive)):
            where.mkdir(exist_ok=True)
            for index, (kind, name) in enumerate(entries):
                path = make_entry(where, index, kind, name)
                if reachable and kind in MEDIA:
                    expected_rows[str(path) if fmt == ".jsonl" else printable(str(path))] = kind == "good"
                skipped += reachable and kind in OTHER
        skipped += not recursive  # the sub-folder itself
        out = Path(scratch) / f"r{fmt}"
        capsys.readouterr()
        with no_hang(60):
            code = run(tiny_weights, str(folder), "--out", str(out), *(["--recursive"] if recursive else []))
        if fmt == ".csv":
            rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
            analysed = [row["file"] for row in rows if row["face"] == "0"]
            failed = [row["file"] for row in rows if row["error"]]
        else:
            rows = jsonl(out)
            analysed = [row["file"] for row in rows if row.get("face") == 0]
            failed = [row["file"] for row in rows if row.get("error")]
        assert len(rows) == len(analysed) + len(failed)
        assert sorted(analysed) == sorted(name for name, good in expected_rows.items() if good)
        assert sorted(failed) == sorted(name for name, good in expected_rows.items() if not good)
        final = capsys.readouterr().err.splitlines()[-1]
        counted = re.match(r"(\d+) inputs, (\d+) failed.*?(?:skipped (\d+) \(|$)", final)
        assert counted and int(counted[1]) == len(expected_rows) and int(counted[2]) == len(failed)
        assert int(counted[3] or 0) == skipped
        assert code == (1 if failed else 0)


if sys.platform != "linux":  # FIFOs, /dev/full and non-UTF-8 names as tested here are Linux's
    pytestmark = pytest.mark.skip(reason="Linux file-system semantics")
