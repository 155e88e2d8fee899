"""`qface analyze --engine ray`: the CLI's rows, computed by a pool of Ray actors and written as Parquet.

    from qface.scale import analyze_dataset
    summary = analyze_dataset("photos/", out="results/")   # a local Ray; address="auto" or "ray://…" joins a cluster
    print(summary.line())                                   # analysed, failed, skipped-as-done, images/s, faces/s

How it runs: the dataset is the list of input PATHS (never decoded images). Ray Data streams it in parts of
`part_size` paths through `map_batches` into a fixed pool of actors; each actor loads the model once, and for each
part decodes, detects, aligns and runs the network `batch_size` images at a time (the CLI's own code:
`FaceAnalyzer.analyze_files`, the pixel limits of `qface.pipeline.io`), then writes the part's rows itself. The
driver only receives a three-number summary per part, so memory is bounded by the parts in flight.

The output folder, one file per part: `part-<id>.parquet` (and `part-<id>.jsonl` with `jsonl=True`), with exactly
the CSV's columns, typed (`qface.pipeline.output.column_types`), and rows (`input_rows`, `error_row`): one row
per face; an input with no face is one row with `face` null and `error` null; an input that failed is one row with
`error` set.
`qface-run.json` records the options, so a restart with other tasks or another model is refused.

Resuming: a part is written to a hidden temporary file and renamed into place (an atomic rename on one file
system), the JSONL before the Parquet, so a `part-*.parquet` that exists is complete. On a (re)start the `file`
column of every `part-*.parquet` is read back; inputs listed there are skipped as done, stray temporaries and
JSONL parts without their Parquet twin are deleted, and the rest is analysed. An input is matched by its path
string exactly as it was listed, so restart from the same directory with the same inputs.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qface.pipeline.files import find_inputs
from qface.pipeline.io import VIDEO_SUFFIXES
from qface.resources import SAMPLE_IMAGE, require

RUN_FILE = "qface-run.json"
LISTING_SUFFIXES = {".txt", ".lst"}


@dataclass
class RunSummary:
    analysed: int  # inputs analysed in this run (with or without faces)
    failed: int  # inputs of this run that became error rows
    skipped: int  # inputs already in the output folder from an earlier run
    faces: int
    seconds: float  # wall clock of the whole call, Ray start-up included
    startup_seconds: float  # of which starting Ray (0 when it was already running)

    def line(self) -> str:
        rate = (self.analysed + self.failed) / self.seconds if self.seconds else 0.0
        return (
            f"{self.analysed} analysed, {self.failed} failed, {self.skipped} skipped as done; {self.faces} faces in "
            f"{self.seconds:.1f} s ({rate:.1f} images/s, {self.faces / max(self.seconds, 1e-9):.1f} faces/s; "
            f"Ray start-up {self.startup_seconds:.1f} s)"
        )


def list_inputs(inputs: str | os.PathLike | list[str | os.PathLike], recursive: bool = False) -> list[str]:
    """Path strings in the CLI's order: a folder → what the CLI's walker finds in it (qface.pipeline.files: images,
    videos and the entries it refuses, which become error rows; sorted); a pattern with * ? or [ → its
    matches (sorted, ** descends); a .txt or .lst file → its lines (one path each; blank lines and # comments are
    skipped); anything else → itself (a missing file becomes its error row, as in the CLI)."""
    paths: list[str] = []
    for item in inputs if isinstance(inputs, list | tuple) else [inputs]:
        text = os.fspath(item)
        if any(char in text for char in "*?[") and not Path(text).exists():
            paths += sorted(glob.glob(text, recursive=True))
        elif Path(text).suffix.lower() in LISTING_SUFFIXES and Path(text).is_file():
            lines = (line.strip() for line in Path(text).read_text().splitlines())
            paths += [line for line in lines if line and not line.startswith("#")]
        else:
            found = find_inputs([Path(text)], recursive)  # the CLI's walker: an entry it refuses fails as its row
            paths += [str(path) for path in sorted(found.images + found.videos + [path for path, _ in found.errors])]
    return paths


def done_inputs(out: Path) -> set[str]:
    """The inputs already written in `out`: the `file` column of every committed `part-*.parquet`."""
    import pyarrow.parquet as pq

    done: set[str] = set()
    for part in out.glob("part-*.parquet"):
        try:
            done.update(pq.read_table(part, columns=["file"]).column("file").to_pylist())
        except Exception as error:  # only a damaged disk or a hand-edited folder gets here: parts are atomic
            raise ValueError(f"{part} is unreadable ({error}); delete it to analyse its inputs again") from None
    return done


def parquet_schema(types: dict[str, type]):
    """The CSV's columns (`column_types`: name → str, int or float) as typed Parquet fields."""
    import pyarrow as pa

    kinds = {str: pa.string(), int: pa.int64(), float: pa.float64()}
    return pa.schema([(name, kinds[kind]) for name, kind in types.items()])


class AnalyzeParts:
    """A Ray actor: loads the model once, then turns each part (a batch of paths) into its written rows."""

    def __init__(self, out: str, options: dict, batch_size: int, stride: int, jsonl: bool, max_pixels: int):
        import torch

        import qface.pipeline.io
        from qface.analyzer import FaceAnalyzer
        from qface.pipeline.output import column_types

        torch.set_num_threads(1)  # one CPU per actor: the pool, not torch's threads, uses the cores
        qface.pipeline.io.MAX_PIXELS = max_pixels  # the driver's limit, also where it was raised there
        weights, tasks, detector, detector_model = (options[k] for k in ("weights", "tasks", "detector", "model"))
        extra = {"model": detector_model} if detector_model else {}
        self.analyzer = FaceAnalyzer(weights, tasks, detector, batch_size=batch_size, **extra)
        model = self.analyzer.model
        self.schema = parquet_schema(column_types(self.analyzer.tasks, model.backbone.embedding_dim))
        self.out, self.batch_size, self.stride, self.jsonl = Path(out), batch_size, stride, jsonl

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from qface.pipeline.output import error_row, input_rows

        model = self.analyzer.model.model_id
        paths = [str(path) for path in batch["file"]]
        rows, failed = [], 0
        images = [path for path in paths if Path(path).suffix.lower() not in VIDEO_SUFFIXES]
        for start in range(0, len(images), self.batch_size):
            group = images[start : start + self.batch_size]
            for path, (_, faces) in zip(group, self.analyzer.analyze_files(group)):
                if isinstance(faces, Exception):
                    rows.append((error_row(path, faces, model), None))
                    failed += 1
                else:
                    rows += input_rows(path, faces, model)
        for path in (path for path in paths if Path(path).suffix.lower() in VIDEO_SUFFIXES):
            try:
                for frame in self.analyzer.analyze_video(path, self.stride):
                    rows += input_rows(path, frame.faces, model, frame.index, frame.seconds)
            except Exception as error:  # as in the CLI: the frames so far, then the video's error row
                rows.append((error_row(path, error, model), None))
                failed += 1
        self._write(rows)
        faces = sum(face is not None for _, face in rows)
        return {"inputs": np.array([len(paths)]), "failed": np.array([failed]), "faces": np.array([faces])}

    def _write(self, rows: list) -> None:
        """One part, each file through a hidden temporary and a rename; the Parquet last (it marks the part done)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from qface.pipeline.output import flat_row, json_row

        name = f"part-{uuid.uuid4().hex}"
        if self.jsonl:
            lines = "".join(json.dumps(json_row(row, face)) + "\n" for row, face in rows)
            _commit(self.out / f"{name}.jsonl", lambda path: Path(path).write_text(lines))
        table = pa.Table.from_pylist([flat_row(row, face) for row, face in rows], schema=self.schema)
        _commit(self.out / f"{name}.parquet", lambda path: pq.write_table(table, path))


def _commit(path: Path, write) -> None:
    """Write through a hidden temporary, flushed to disk, then rename: `path` is either complete or absent."""
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    with open(temporary, "rb+") as written:
        os.fsync(written.fileno())
    os.replace(temporary, path)


def analyze_dataset(
    inputs: str | os.PathLike | list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    tasks: list[str] | None = None,
    detector: str = "auto",
    detector_model: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    recursive: bool = False,
    batch_size: int = 16,
    part_size: int = 256,
    actors: int | None = None,
    stride: int = 1,
    jsonl: bool = False,
    address: str | None = None,
    progress: bool = True,
) -> RunSummary:
    """Analyze `inputs` (see `list_inputs`) into the folder `out` on Ray, skipping inputs already written there.

    Without `address` a local Ray is started (and shut down at the end); with one (e.g. "auto", "ray://head:10001")
    the job joins that cluster, whose nodes must all see the input paths and `out` under the same names. `actors`
    defaults to one per CPU of the cluster."""
    ray = _import_ray()
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    options = {
        "weights": str(weights) if weights else None,
        "tasks": tasks,
        "detector": detector,
        "model": str(detector_model) if detector_model else None,
    }
    _check_run_file(out, options)
    for stray in out.glob(".part-*.tmp"):
        stray.unlink()
    for orphan in out.glob("part-*.jsonl"):
        if not orphan.with_suffix(".parquet").exists():
            orphan.unlink()
    listed = list_inputs(inputs, recursive)
    done = done_inputs(out)
    pending = [path for path in listed if path not in done]
    summary = RunSummary(0, 0, len(listed) - len(pending), 0, 0.0, 0.0)
    if pending:
        own_ray, joining = not ray.is_initialized(), time.perf_counter()
        if own_ray:
            start_ray(address)
        summary.startup_seconds = time.perf_counter() - joining
        try:
            _run(ray, pending, out, options, batch_size, part_size, actors, stride, jsonl, progress, summary)
        finally:
            if own_ray:
                ray.shutdown()
    summary.seconds = time.perf_counter() - started
    return summary


def _run(ray, pending, out, options, batch_size, part_size, actors, stride, jsonl, progress, summary) -> None:
    from tqdm import tqdm

    import qface.pipeline.io

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its per-run INFO lines would break up the bar
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts files; Ray's per-operator bars would interleave with it
    actors = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    parts = max(1, math.ceil(len(pending) / part_size))
    dataset = ray.data.from_items([{"file": path} for path in pending], override_num_blocks=parts)
    results = dataset.map_batches(
        AnalyzeParts,
        batch_size=part_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
        fn_constructor_kwargs=dict(
            out=str(out.resolve()),
            options=options,
            batch_size=batch_size,
            stride=stride,
            jsonl=jsonl,
            max_pixels=qface.pipeline.io.MAX_PIXELS,
        ),
    )
    with tqdm(total=len(pending), unit="file", disable=not progress, file=sys.stderr) as bar:
        for part in results.iter_rows():
            summary.failed += int(part["failed"])
            summary.analysed += int(part["inputs"]) - int(part["failed"])
            summary.faces += int(part["faces"])
            bar.update(int(part["inputs"]))


def _check_run_file(out: Path, options: dict) -> None:
    """A folder holds one kind of run: the same model, tasks and detector (so the same columns and numbers)."""
    record = out / RUN_FILE
    if record.exists():
        earlier = json.loads(record.read_text())
        if earlier != options:
            changed = ", ".join(f"{k}: {earlier.get(k)!r} → {v!r}" for k, v in options.items() if earlier.get(k) != v)
            raise ValueError(f"{out} holds the results of another run ({changed}); use a new output folder")
    else:
        record.write_text(json.dumps(options, indent=2) + "\n")


def start_ray(address: str | None = None, num_cpus: int | None = None, attempts: int = 3):
    """Join the cluster at `address`, or start a local Ray (with `num_cpus`, default all). A local start is tried
    `attempts` times: Ray gives its raylet a fixed 30 s to register, which a busy machine can miss."""
    ray = _import_ray()
    for attempt in range(1, attempts + 1):
        try:
            return ray.init(
                address=address or "local",
                num_cpus=None if address else num_cpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
        except Exception as error:  # Ray raises a bare Exception when its node does not come up in time
            ray.shutdown()
            if address or attempt == attempts:
                raise
            print(f"Ray did not start ({error}); trying again ({attempt + 1} of {attempts})", file=sys.stderr)


def _import_ray():
    require("pyarrow", "scale", "--engine ray")
    require("ray.data", "scale", "--engine ray")
    return require("ray", "scale", "--engine ray")


def analyze_command(args) -> int:
    """`qface analyze … --engine ray --out FOLDER`: exit code 1 when any input failed, 2 on a usage error."""
    if args.out is None or args.annotate or args.attention or args.summary:
        usage = "--engine ray writes a results folder: give --out DIR (and no --annotate, --attention, --summary)"
        print(f"error: {usage}", file=sys.stderr)
        return 2
    try:
        summary = analyze_dataset(
            [str(path) for path in args.paths] or [str(SAMPLE_IMAGE)],
            args.out,
            tasks=args.tasks,
            detector=args.detector,
            detector_model=args.detector_model,
            weights=args.weights,
            recursive=args.recursive,
            batch_size=args.batch_size,
            part_size=args.part_size,
            actors=args.actors,
            stride=args.stride,
            jsonl=args.jsonl,
            address=args.address,
        )
    except (ImportError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary.line(), file=sys.stderr)
    return 1 if summary.failed else 0
