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
from pathlib import Path
from typing import Any, TextIO

from qface.pipeline.files import output_format, printable
from qface.pipeline.results import Face
from qface.tasks import TASKS

BASE_COLUMNS = ["file", "frame", "time", "face", "error", "box.x1", "box.y1", "box.x2", "box.y2", "score", "model"]


def csv_columns(tasks: list[str], embedding_dim: int = 128) -> list[str]:
    """Every column a face of these tasks can fill, in a fixed order (so a streamed CSV has one header)."""
    columns = BASE_COLUMNS + [f"points.{i}.{axis}" for i in range(5) for axis in "xy"]
    for task in tasks:
        labels = TASKS[task].labels
        if task == "expression":
            columns += [f"expression.{label}" for label in labels] + ["top_expression"]
        elif task in ("action_units", "attributes", "pose"):
            columns += [f"{task}.{label}" for label in labels]
        elif task == "age":
            columns.append("age")
        elif task == "landmarks":
            columns += [f"landmarks.{i}.{axis}" for i in range(len(labels)) for axis in "xy"]
        elif task == "identity":
            columns += [f"embedding.{i}" for i in range(embedding_dim)]
    return columns


def summary_line(row: dict[str, Any], face: Face | None) -> str:
    """One readable line per face for a terminal: top expression, age, pose, active AUs and attributes (p ≥ 0.5)."""
    where = Path(row["file"]).name + (f" frame {row['frame']}" if "frame" in row else "")
    if row.get("error"):
        return f"{where}: ERROR {row['error']}"
    if face is None:
        return f"{where}: no face"
    parts = [f"face {row['face']} at {[round(v) for v in face.box]} (score {face.score:.2f})"]
    if face.top_expression:
        parts.append(f"{face.top_expression} {face.expression[face.top_expression]:.2f}")
    if face.age is not None:
        parts.append(f"age {face.age:.0f}")
    if face.pose:
        parts.append("pitch {pitch:+.0f}° yaw {yaw:+.0f}° roll {roll:+.0f}°".format(**face.pose))
    for name, values in (("AUs", face.action_units), ("attributes", face.attributes)):
        if values:
            parts.append(f"{name}: " + (", ".join(k for k, v in values.items() if v >= 0.5) or "none"))
    return f"{where}: " + " | ".join(parts)


class OutputError(OSError):
    """The results could not be written (disk full, closed pipe, ...): the run must stop, keeping what it wrote."""


class ResultWriter:
    """JSON lines (default), CSV (`path` ending in .csv) and, with `summary`, readable lines on stdout: with a
    path both are written, without one the summary replaces the JSON lines on stdout."""

    def __init__(self, path: Path | None, tasks: list[str], summary: bool = False, model=None):
        self.path, self.rows, self.rows_kept, self.bytes_kept = path, 0, 0, 0
        self.summary = summary
        self.model_id = model.model_id if model is not None else None  # on every row, faces or not
        self.stream: TextIO = open(path, "w", newline="", encoding="utf-8") if path else sys.stdout
        self.csv = None
        if path and output_format(path) == "csv":
            columns = csv_columns(tasks, model.backbone.embedding_dim if model is not None else 128)
            self.csv = csv.DictWriter(self.stream, columns, extrasaction="ignore")
            self._write(self.csv.writeheader)

    def _row(self, row: dict[str, Any], face: Face | None) -> None:
        if self.model_id:
            row = {**row, "model": self.model_id}
        if self.summary:
            self._write(sys.stdout.write, printable(summary_line(row, face)) + "\n")
        if self.csv:
            cells = {k: printable(v) if isinstance(v, str) else v for k, v in row.items()}
            self._write(self.csv.writerow, {**cells, **(face.flat() if face else {})})
        elif self.path or not self.summary:
            self._write(self.stream.write, json.dumps({**row, **(face.to_dict() if face else {})}) + "\n")
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
        where = {"file": source} | ({"frame": frame, "time": round(time, 3)} if frame is not None else {})
        for index, face in enumerate(faces):
            self._row({**where, "face": index}, face)
        if not faces:
            self._row({**where, "face": None}, None)
        self.flush()

    def error(self, source: str, error: Exception) -> None:
        self._row({"file": source, "error": f"{type(error).__name__}: {error}"}, None)
        self.flush()

    def close(self) -> None:
        if self.stream is not sys.stdout and not self.stream.closed:
            self.stream.close()
