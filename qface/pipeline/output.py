r"""Result files for `qface analyze`: JSON lines (nested, as Face.to_dict) or CSV (flat columns), one row per face,
a row for an input with no face (`face` empty) and a row with `error` for an input that failed.

Rows are flushed per input, so a killed or failed run keeps every row it wrote. File names that are not UTF-8 are
kept exactly in JSON lines (`\udcNN` escapes: `os.fsencode(row["file"])` gives the original bytes) and as `\xNN`
in CSV cells and summary lines (which stay valid UTF-8)."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from qface.pipeline.files import output_format, printable
from qface.pipeline.results import Face
from qface.pipeline.video import SMOOTHED_TASKS, TRACK_COLUMNS
from qface.tasks import TASKS, resolve

BASE_COLUMNS = ["file", "frame", "time", "face", "track", "error", "box.x1", "box.y1", "box.x2", "box.y2", "score",
                "model"]  # fmt: skip
BASE_TYPES = {"file": str, "frame": int, "face": int, "track": int, "error": str, "model": str}  # others: floats


def csv_columns(tasks: list[str], embedding_dim: int = 128, raw: bool = False) -> list[str]:
    """Every column a face of these tasks can fill, in a fixed order (so a streamed CSV has one header); `raw`:
    also the frame's own values of smoothed video results (`raw.age`, `raw.expression.happy`, …)."""
    columns = BASE_COLUMNS + [f"points.{i}.{axis}" for i in range(5) for axis in "xy"]
    columns += [column for task in resolve(tasks) for column in task.columns(embedding_dim)]
    if raw:
        smoothed = [task for task in resolve(tasks) if task.name in SMOOTHED_TASKS]
        columns += [f"raw.{column}" for task in smoothed for column in task.columns(embedding_dim)]
    return columns


def column_types(tasks: list[str], embedding_dim: int = 128) -> dict[str, type]:
    """`csv_columns` in the same order, each with the type of its values (str, int or float), for typed files."""
    types = {column: BASE_TYPES.get(column, float) for column in csv_columns([])}
    fields = ((task, f) for task in resolve(tasks) for f in task.fields)
    return types | {column: f.scalar for task, f in fields for column in task.field_columns(f, embedding_dim)}


def input_rows(
    source: str, faces: list[Face], model: str | None, frame: int | None = None, time: float | None = None
) -> Iterator[tuple[dict[str, Any], Face | None]]:
    """The rows of one input (or video frame): one per face, or one with `face` empty when it has none; `model`
    (name@version) goes on every row, faces or not."""
    where = {"file": source} | ({"frame": frame, "time": round(time, 3)} if frame is not None else {})
    for index, face in enumerate(faces):
        yield {**where, "face": index, "model": model}, face
    if not faces:
        yield {**where, "face": None, "model": model}, None


def error_row(source: str, error: Exception, model: str | None) -> dict[str, Any]:
    """The row of an input that failed: its file and the error, no face."""
    return {"file": source, "error": f"{type(error).__name__}: {error}", "model": model}


def flat_row(row: dict[str, Any], face: Face | None) -> dict[str, Any]:
    """A CSV / Parquet row: the row's keys and the face's flat columns (`csv_columns` names them all)."""
    return {**row, **(face.flat() if face else {})}


def json_row(row: dict[str, Any], face: Face | None) -> dict[str, Any]:
    """A JSON-lines row: the row's keys and the face's nested fields (as Face.to_dict)."""
    return {**row, **(face.to_dict() if face else {})}


def summary_line(row: dict[str, Any], face: Face | None) -> str:
    """One readable line per face for a terminal: what each task that ran says in a few words (`Task.describe`)."""
    where = Path(row["file"]).name + (f" frame {row['frame']}" if "frame" in row else "")
    if row.get("error"):
        return f"{where}: ERROR {row['error']}"
    if face is None:
        return f"{where}: no face"
    track = f" track {face.track}" if face.track is not None else ""
    parts = [f"face {row['face']}{track} at {[round(v) for v in face.box]} (score {face.score:.2f})"]
    for task in TASKS.values():
        if task.describe and face.answers(task):
            parts.append(task.describe(face))
    return f"{where}: " + " | ".join(parts)


def printable_cells(row: dict[str, Any]) -> dict[str, Any]:
    """The row with every text cell valid UTF-8 (`printable`), for CSV files."""
    return {key: printable(value) if isinstance(value, str) else value for key, value in row.items()}


class OutputError(OSError):
    """The results could not be written (disk full, closed pipe, ...): the run must stop, keeping what it wrote."""


class ResultWriter:
    """JSON lines (default), CSV (`path` ending in .csv) and, with `summary`, readable lines on stdout: with a
    path both are written, without one the summary replaces the JSON lines on stdout."""

    def __init__(self, path: Path | None, tasks: list[str], summary: bool = False, model=None, raw: bool = False):
        self.path, self.rows, self.rows_kept, self.bytes_kept = path, 0, 0, 0
        self.summary = summary
        self.model_id = model.model_id if model is not None else None  # on every row, faces or not
        self.stream: TextIO = open(path, "w", newline="", encoding="utf-8") if path else sys.stdout
        self.csv = None
        if path and output_format(path) == "csv":
            columns = csv_columns(tasks, model.backbone.embedding_dim if model is not None else 128, raw)
            self.csv = csv.DictWriter(self.stream, columns)  # a field without a column raises, never a silent drop
            self._write(self.csv.writeheader)

    def _row(self, row: dict[str, Any], face: Face | None) -> None:
        if self.summary:
            self._write(sys.stdout.write, printable(summary_line(row, face)) + "\n")
        if self.csv:
            self._write(self.csv.writerow, flat_row(printable_cells(row), face))
        elif self.path or not self.summary:
            self._write(self.stream.write, json.dumps(json_row(row, face)) + "\n")
        self.rows += 1

    def _write(self, write, *args) -> None:
        try:
            write(*args)
        except OSError as error:
            self._keep_whole_inputs()
            raise OutputError(f"cannot write the results to {self.path or 'stdout'}: {error}") from None

    def flush(self) -> None:
        """After each input: what is written stays written if the run dies later."""
        self._write(self.stream.flush)
        if self.summary and self.stream is not sys.stdout:
            self._write(sys.stdout.flush)
        self.rows_kept = self.rows
        if self.path and os.path.isfile(self.path):
            self.bytes_kept = os.fstat(self.stream.fileno()).st_size

    def _keep_whole_inputs(self) -> None:
        """After a failed write: close the file and cut a partly written row, so that what is kept parses."""
        if self.stream is sys.stdout:
            return
        try:
            self.stream.close()
        except OSError:  # the buffer could not be written either: nothing more to keep
            pass
        if os.path.isfile(self.path):
            os.truncate(self.path, self.bytes_kept)

    def faces(self, source: str, faces: list[Face], frame: int | None = None, time: float | None = None) -> None:
        for row, face in input_rows(source, faces, self.model_id, frame, time):
            self._row(row, face)
        self.flush()

    def error(self, source: str, error: Exception) -> None:
        self._row(error_row(source, error, self.model_id), None)
        self.flush()

    def close(self) -> None:
        if self.stream is not sys.stdout and not self.stream.closed:
            self.stream.close()


class TrackSummaryWriter:
    """Per-track summaries of `qface analyze --tracks`: CSV (TRACK_COLUMNS) for a .csv path, else JSON lines."""

    def __init__(self, path: Path):
        self.stream = open(path, "w", newline="", encoding="utf-8")
        self.csv = csv.DictWriter(self.stream, TRACK_COLUMNS) if output_format(path) == "csv" else None
        if self.csv:
            self.csv.writeheader()

    def writerow(self, row: dict[str, Any]) -> None:
        try:
            if self.csv:
                self.csv.writerow(printable_cells(row))
            else:
                self.stream.write(json.dumps(row) + "\n")
            self.stream.flush()
        except OSError as error:
            raise OutputError(f"cannot write the track summaries to {self.stream.name}: {error}") from None

    def close(self) -> None:
        try:
            self.stream.close()
        except OSError:  # the failed write was reported already
            pass
