"""`qface analyze --engine ray` on a local Ray (2 CPUs): the CLI's rows, error rows, and a killed run resumed."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_cli import make_folder

from qface.cli import SAMPLE_IMAGE, main
from qface.pipeline.output import column_types, csv_columns
from qface.scale import analyze_dataset, done_inputs, list_inputs, start_ray

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    start_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def parquet_rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for part in sorted(out.glob("part-*.parquet")) for row in pq.read_table(part).to_pylist()]


@pytest.mark.slow
def test_rows_equal_the_cli_and_a_bad_file_is_an_error_row(tmp_path, ray):
    folder = make_folder(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each actor: the same summation order, so the same rounded numbers
    try:
        cli = ["analyze", str(folder), "--recursive", "--detector", "dlib-hog", "--out", str(tmp_path / "a.csv")]
        assert main(cli) == 1  # two inputs failed
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "ray"
    summary = analyze_dataset(folder, out, recursive=True, detector="dlib-hog", part_size=3, actors=2, jsonl=True)
    assert (summary.analysed, summary.failed, summary.skipped) == (4, 2, 0)
    with open(tmp_path / "a.csv") as stream:
        reader = csv.DictReader(stream)
        columns, expected = reader.fieldnames, list(reader)
    rows = parquet_rows(out)
    assert list(rows[0]) == columns and len(rows) == len(expected)
    parts = sorted(out.glob("part-*.parquet"))
    lines = [json.loads(line) for part in parts for line in part.with_suffix(".jsonl").read_text().splitlines()]
    assert [(line["file"], line.get("face")) for line in lines] == [(row["file"], row["face"]) for row in rows]
    assert summary.faces == sum(row["face"] != "" for row in expected)
    by_key = {(row["file"], "" if row["face"] is None else str(row["face"])): row for row in rows}
    for want in expected:
        got = by_key[want["file"], want["face"]]
        for column, text in want.items():
            value = got[column]
            if text == "":
                assert value is None, (want["file"], column)
            elif isinstance(value, float):
                assert abs(value - float(text)) <= 1e-5, (want["file"], column, text, value)
            else:
                assert str(value) == text, (want["file"], column)
    errors = {Path(row["file"]).name: row["error"] for row in rows if row["error"]}
    assert set(errors) == {"broken.jpg", "empty.png"} and "empty file" in errors["empty.png"]
    no_face = [row for row in rows if row["file"].endswith("blank.jpg")]
    assert len(no_face) == 1 and no_face[0]["face"] is None and no_face[0]["error"] is None


def kill_session(session: int) -> None:
    """SIGKILL every process of a session we started (Ray gives each worker its own process group, not session),
    and wait until none is left running, so that no actor writes a part after the kill."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = subprocess.run(["ps", "-s", str(session), "-o", "pid=,stat="], capture_output=True, text=True)
        alive = [int(pid) for pid, stat in (line.split() for line in listed.stdout.splitlines()) if stat[0] != "Z"]
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    raise RuntimeError(f"processes of session {session} survived SIGKILL")


@pytest.mark.slow
def test_a_killed_run_restarted_gives_one_row_per_input(tmp_path, ray):
    folder = make_folder(tmp_path)
    for copy in range(6):  # enough slow inputs that the kill lands before the end
        shutil.copy(SAMPLE_IMAGE, folder / f"copy{copy}.png")
    out = tmp_path / "ray"
    script = (
        "from qface.scale import analyze_dataset; "
        f"analyze_dataset({str(folder)!r}, {str(out)!r}, recursive=True, detector='dlib-hog', part_size=1, actors=1)"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    job = subprocess.Popen([sys.executable, "-c", script], env=environment, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("part-*.parquet")) and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        kill_session(job.pid)  # the driver and the Ray it started, actors included: no clean-up of any kind
        job.wait()
    inputs = list_inputs(folder, recursive=True)
    written = done_inputs(out)
    assert 1 <= len(written) < len(inputs)  # killed half-way
    summary = analyze_dataset(folder, out, recursive=True, detector="dlib-hog", part_size=2, actors=2, progress=False)
    assert summary.skipped == len(written) and summary.analysed + summary.failed == len(inputs) - len(written)
    rows = parquet_rows(out)
    files = [row["file"] for row in rows if row["face"] in (None, 0)]  # one such row per input
    assert sorted(files) == sorted(inputs)
    assert not list(out.glob(".part-*"))
    again = analyze_dataset(folder, out, recursive=True, detector="dlib-hog")  # all done: Ray is not even needed
    assert (again.analysed, again.failed, again.skipped) == (0, 0, len(inputs))


def test_a_folder_of_another_run_is_refused_and_inputs_are_listed(tmp_path):
    pytest.importorskip("ray")  # nothing to analyse, so Ray is never started
    pytest.importorskip("pyarrow")
    folder = make_folder(tmp_path)
    out = tmp_path / "ray"
    analyze_dataset([], out, tasks=["age"])
    with pytest.raises(ValueError, match="tasks"):
        analyze_dataset([], out, tasks=["expression"])
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two files\n{folder / 'blank.jpg'}\n\n{folder / 'missing.png'}\n")
    assert list_inputs([listing, str(folder / "nested" / "*.png")]) == [
        str(folder / "blank.jpg"),
        str(folder / "missing.png"),
        str(folder / "nested" / "again.png"),
        str(folder / "nested" / "astronaut.png"),
    ]


def test_without_the_extra_the_cli_names_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if it were not installed
    assert main(["analyze", "--engine", "ray", "--out", str(tmp_path / "out")]) == 2
    assert 'pip install "qface[scale]"' in capsys.readouterr().err
    assert main(["analyze", "--engine", "ray"]) == 2  # a results folder is required


def test_parquet_types_come_from_the_registry():
    types = column_types(["expression", "age", "identity"], embedding_dim=4)
    assert list(types) == csv_columns(["expression", "age", "identity"], embedding_dim=4)
    assert types["file"] is str and types["face"] is int and types["top_expression"] is str
    assert types["age"] is float and types["expression.happy"] is float and types["embedding.3"] is float
