"""`qface analyze | info` — the command line."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from qface.resources import SAMPLE_IMAGE
from qface.serve.settings import add_arguments as add_serve_arguments
from qface.tasks import TASKS

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cpu_default.yaml"  # found from any folder


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that a run stops as on Ctrl-C: rows written, one line, exit 143.
    A BaseException, like KeyboardInterrupt, so that no per-file `except Exception` swallows it."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def analyze(args: argparse.Namespace) -> int:
    if args.backend != "torch" and (args.attention or args.engine == "ray" or args.precision != "fp32"):
        print(
            f"error: --backend {args.backend} has no attention maps, no --precision (an int8 file is int8 itself) "
            "and runs with --engine local only",
            file=sys.stderr,
        )
        return 2
    if args.engine == "ray":
        if args.tracks or args.smooth:
            print(
                "error: --tracks and --smooth need --engine local (it sees a video's frames in order)", file=sys.stderr
            )
            return 2
        from qface.scale import analyze_command

        return analyze_command(args)
    from tqdm import tqdm

    from qface.pipeline.files import check_output_file, check_output_folder, find_inputs, printable, skipped_line
    from qface.pipeline.output import OutputError, ResultWriter, TrackSummaryWriter

    try:  # what can be checked is checked before the model loads
        for option, path in (("--out", args.out), ("--tracks", args.tracks)):
            if path:
                check_output_file(path, option)
        for option, folder in (("--annotate", args.annotate), ("--attention", args.attention)):
            if folder:
                check_output_folder(folder, option)
    except (OSError, ValueError) as error:
        print(f"error: {printable(str(error))}", file=sys.stderr)
        return 2
    inputs = find_inputs(args.paths or [SAMPLE_IMAGE], args.recursive)

    import torch

    from qface.analyzer import FaceAnalyzer

    if args.threads:
        torch.set_num_threads(args.threads)
    options = {"model": str(args.detector_model)} if args.detector_model else {}
    analyzer = FaceAnalyzer(
        args.weights,
        args.tasks,
        args.detector,
        batch_size=args.batch_size,
        attention=bool(args.attention),
        mirror=args.mirror,
        precision=args.precision,
        backend=args.backend,
        onnx=args.onnx,
        **options,
    )
    if analyzer.model.config.version == "untrained":
        print("note: no trained weights found — outputs come from an UNTRAINED model", file=sys.stderr)
    summary = args.summary or (args.out is None and sys.stdout.isatty())
    if summary:
        print(f"model {analyzer.model.model_id} (weights/MODEL_CARD.md has its validation numbers)")
    args.picture_names, args.pictures_failed, done, failed = {}, 0, 0, 0
    try:
        writer = ResultWriter(args.out, analyzer.tasks, summary, analyzer.model, raw=args.smooth > 0)
        tracks = TrackSummaryWriter(args.tracks) if args.tracks else None
    except OSError as error:
        print(f"error: {printable(str(error.filename))}: {error.strerror or error}", file=sys.stderr)
        return 2
    on_main_thread = threading.current_thread() is threading.main_thread()  # only it may set signal handlers
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    try:
        with tqdm(total=len(inputs), unit="file", disable=not args.out, file=sys.stderr) as bar:
            for path, error in inputs.errors:
                failed += _report(writer, path, error)
                done += 1
                bar.update(1)
            for start in range(0, len(inputs.images), args.batch_size):
                group = inputs.images[start : start + args.batch_size]
                failed += _analyze_images(group, analyzer.analyze_files(group), writer, args)
                done += len(group)
                bar.update(len(group))
            for video in inputs.videos:
                failed += _analyze_video(analyzer, video, writer, args, tracks)
                done += 1
                bar.update(1)
    except OutputError as error:
        print(
            f"error: {printable(str(error))}; the {writer.rows_kept} rows written before it are kept", file=sys.stderr
        )
        return 2
    except (KeyboardInterrupt, Terminated) as stop:
        how, code = ("terminated (SIGTERM)", 143) if isinstance(stop, Terminated) else ("interrupted", 130)
        print(f"{how} after {done} of {len(inputs)} inputs; their rows are written", file=sys.stderr)
        return code
    finally:
        writer.close()
        if tracks:
            tracks.close()
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
    where = f" (error rows in {printable(str(args.out))})" if args.out else ""
    notes = [f"{len(inputs)} inputs, {failed} failed{where if failed else ''}", skipped_line(inputs.skipped)]
    if args.pictures_failed:
        notes.append(f"pictures not written for {args.pictures_failed}")
    print("; ".join(note for note in notes if note), file=sys.stderr)
    return 1 if failed or args.pictures_failed else 0


def _report(writer, path: Path, error: Exception) -> int:
    from qface.pipeline.files import printable

    message = str(error) if str(path) in str(error) else f"{path}: {error}"  # the path once
    _say(f"error: {printable(message)}")
    writer.error(str(path), error)
    return 1


def _say(line: str) -> None:
    """A line on stderr that clears the progress bar first and redraws it below (a print would run into it)."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _picture_name(path: Path, used: dict[str, int]) -> str:
    """The file's stem, made unique within the run (photos/a/001.jpg and photos/b/001.jpg must not collide)."""
    used[path.stem] = used.get(path.stem, 0) + 1
    return path.stem if used[path.stem] == 1 else f"{path.stem}_{used[path.stem]}"


def _analyze_images(paths: list[Path], results: list, writer, args: argparse.Namespace) -> int:
    """One group of images' results (faces analysed in one batch) written; a file that failed is its error row."""
    from qface.pipeline.files import printable

    failed = 0
    for path, (image, faces) in zip(paths, results, strict=True):
        if isinstance(faces, Exception):
            failed += _report(writer, path, faces)
            continue
        writer.faces(str(path), faces)
        try:
            _write_pictures(path, image, faces, args)
        except (OSError, ValueError) as error:
            _say(f"error: {printable(str(path))}: pictures not written: {error}")
            args.pictures_failed += 1
    return failed


def _write_pictures(path: Path, image: np.ndarray, faces, args: argparse.Namespace) -> None:
    from qface.viz.draw import annotate

    name = _picture_name(path, args.picture_names)
    if args.annotate:
        annotate(image, faces).save(args.annotate / f"{name}.jpg", quality=92)
    if args.attention:
        _write_attention(args.attention, name, faces)


def _write_attention(folder: Path, name: str, faces) -> None:
    from qface.viz.draw import attention_panel

    for index, face in enumerate(faces):
        if face.attention:  # tasks without label queries (identity alone) have no attention to show
            attention_panel(face).save(folder / f"{name}_face{index}.png")


def _analyze_video(analyzer, path: Path, writer, args: argparse.Namespace, tracks) -> int:
    """Frames are streamed, with a progress bar per frame; with --annotate the annotated frames are written as an
    mp4 beside the pictures, and one face picture per track; with --tracks one summary row per track (also for
    the frames read before a video breaks); with --attention each analysed frame's maps as
    `<video>_frame<N>_face<K>.png`."""
    from PIL import Image
    from tqdm import tqdm

    from qface.pipeline.video import TrackSummaries, frame_count
    from qface.resources import require
    from qface.viz.draw import annotate

    cv2 = require("cv2", "video", "writing annotated videos")

    out, name, summaries = None, _picture_name(path, args.picture_names), TrackSummaries()
    bar = tqdm(total=frame_count(path) or None, unit="frame", desc=path.name, leave=False, disable=not args.out)
    failed = 0
    try:
        for frame in analyzer.analyze_video(path, args.stride, smooth=args.smooth):
            writer.faces(str(path), frame.faces, frame.index, frame.seconds)
            summaries.add(frame.faces, frame.index, frame.seconds)
            bar.update(frame.index + 1 - bar.n)
            if args.attention:
                _write_attention(args.attention, f"{name}_frame{frame.index}", frame.faces)
            if args.annotate:
                picture = np.ascontiguousarray(np.asarray(annotate(frame.image, frame.faces))[..., ::-1])
                if out is None:
                    size, fourcc = (picture.shape[1], picture.shape[0]), cv2.VideoWriter_fourcc(*"mp4v")
                    out = cv2.VideoWriter(str(args.annotate / f"{name}.mp4"), fourcc, frame.fps / args.stride, size)
                out.write(picture)
    except Exception as error:  # a broken or unreadable video is one error row, not the end of the run
        failed = _report(writer, path, error)
    finally:
        bar.close()
        if out is not None:
            out.release()
    for summary in summaries:
        row = {"file": str(path), **summary.row()}
        if args.annotate and summary.best is not None and summary.best.chip is not None:
            crop = args.annotate / f"{name}_track{summary.track}.jpg"
            Image.fromarray(summary.best.chip).save(crop, quality=92)
            row["crop"] = str(crop)
        if tracks:
            tracks.writerow(row)
    return failed


def info(args: argparse.Namespace) -> int:
    from qface.analyzer import load_model
    from qface.resources import DEFAULT_WEIGHTS, model_card_summary

    model = load_model(args.weights)
    print(f"model: {model.model_id}  backbone: {model.config.backbone['name']}  input: {model.input_size}px")
    summary = model_card_summary(args.weights)
    if summary:
        print(f"\n{summary}\n\nfull model card: {(args.weights or DEFAULT_WEIGHTS) / 'MODEL_CARD.md'}\n")
    for task in model.tasks:
        print(f"{task.name} ({len(task.labels)}): {', '.join(task.labels) if task.uses_queries else 'embedding'}")
    return 0


def train(args: argparse.Namespace) -> int:
    import yaml

    from qface.train.config import TrainConfig
    from qface.train.trainer import train as run_training

    config = TrainConfig.from_yaml(args.config)
    for assignment in args.set or []:
        key, _, value = assignment.partition("=")
        *parents, leaf = key.split(".")
        target = config.__dict__
        for parent in parents:
            target = target[parent]
        target[leaf] = yaml.safe_load(value)
    run_training(config, resume=args.resume)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from qface.analyzer import load_model
    from qface.analyzer import network as analyzer_network
    from qface.eval.evaluate import bias_table, confusion, markdown_table, predict_source, score_source, wide_table
    from qface.train.config import TrainConfig

    if not args.config.is_file():
        print(f"error: --config {args.config}: no such file", file=sys.stderr)
        return 2
    config = TrainConfig.from_yaml(args.config)
    missing = [spec["folder"] for spec in config.datasets.values() if not Path(spec["folder"], "labels.npz").exists()]
    if missing:
        print(
            f"error: no chip cache in {', '.join(missing)} (relative to {Path.cwd()}): build it with "
            f"`qface train {args.config}` (which builds every cache first) or `python -m qface.data.chips`",
            file=sys.stderr,
        )
        return 2
    model = load_model(args.weights)
    onnx = None if args.backend == "torch" else analyzer_network(model, args.backend, args.onnx, weights=args.weights)
    model.fold_for_inference()  # scored exactly as `qface analyze` runs it
    config.features = config.features and not args.no_cache and onnx is None  # onnx runs on the chips
    results, biases, confusions = {}, {}, {}
    for name, source in config.sources(args.split, config.backbone_spec(model.backbone), model.config.grid).items():
        if not len(source):
            continue
        predictions = predict_source(model, source, network=onnx, precision=args.precision)
        results[name] = score_source(source, predictions)
        biases[name] = bias_table(source, predictions)
        if "ferplus_majority" in source.arrays:  # rows: FER+ majority label, columns: argmax over all outputs
            voted = source.arrays["ferplus_majority"] >= 0
            predicted = predictions["expression"][voted].argmax(1)
            confusions[name] = confusion(predicted, source.arrays["ferplus_majority"][voted]).tolist()
    report = {"model": model.model_id, "split": args.split, "backend": args.backend, "results": results}
    report |= {"onnx": str(onnx.path)} if onnx else {}
    report["bias"] = biases
    report["ferplus_confusion"] = confusions
    print(f"# {model.model_id} on the {args.split} splits\n\n{markdown_table(results)}")
    for name, table in biases.items():
        if table:
            print(f"\n## subgroups of {name}\n\n{wide_table(table)}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def export(args: argparse.Namespace) -> int:
    """The whole network as ONNX; with --int8, statically quantized on training chips (qface.onnx)."""
    import tempfile

    from qface.analyzer import load_model
    from qface.onnx import export_onnx, output_names, quantize_int8, training_chips

    folders = sorted(p.parent for p in args.chips.glob("*/labels.npz") if (p.parent / "chips.npy").exists())
    if args.int8 and not folders:
        print(f"error: --int8 calibrates on training chips: no chip cache under {args.chips}", file=sys.stderr)
        return 2
    model = load_model(args.weights)
    if not args.int8:
        export_onnx(model, args.out)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            fp32 = export_onnx(model, Path(scratch) / "fp32.onnx")
            quantize_int8(fp32, args.out, training_chips(folders, args.calibration))
    print(f"{args.out}: {model.model_id}{' int8' if args.int8 else ''}, outputs {', '.join(output_names(model))}")
    return 0


def label(args: argparse.Namespace) -> int:
    from qface.teacher import label_chip_cache

    for folder in args.folders:
        label_chip_cache(folder)
    return 0


def positive_int(text: str) -> int:
    """argparse type: a clear error for 0, negatives and non-numbers (a batch of 0 or a stride of 0 means nothing)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def serve(args: argparse.Namespace) -> int:
    from qface.resources import require
    from qface.serve.settings import from_args

    try:
        for module in ("fastapi", "uvicorn", "python_multipart"):
            require(module, "serve", "qface serve")
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from qface.serve.app import run

    return run(from_args(args))


def _add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=["torch", "onnx", "onnx-int8"],
        default="torch",
        help="onnx: the network in onnxruntime; onnx-int8: its int8 export (the fastest, bench/performance.md)",
    )
    parser.add_argument(
        "--onnx",
        type=Path,
        metavar="FILE",
        help="the file from `qface export onnx` (default: onnx, an export cached per weights digest; onnx-int8, "
        "the weights folder's model-int8.onnx, which the bundled model ships)",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="torch's arithmetic: fp32 (default) or bf16 (faster on CPUs with AVX-512 BF16; see bench/performance.md)",
    )


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qface", description="Multi-task face analysis (Task-adaptive Q-Face).")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("analyze", help="analyze images (the bundled sample photo when none is given)")
    run.add_argument("paths", nargs="*", type=Path)
    run.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    run.add_argument("--tasks", nargs="+", choices=list(TASKS), help="only these tasks (default: all)")
    run.add_argument(
        "--detector",
        default="auto",
        help="auto (default), dlib-hog, dlib-cnn, yunet, crop (each image is one face crop), none",
    )
    run.add_argument(
        "--mirror",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="average each face's answers with its mirror image's (default; --no-mirror: one network pass per face)",
    )
    run.add_argument("--detector-model", type=Path, help="the YuNet .onnx file (for --detector yunet or auto)")
    run.add_argument("--out", type=Path, help="results.jsonl or results.csv (default: JSON lines on stdout)")
    run.add_argument(
        "--summary",
        action="store_true",
        help="readable lines on stdout (the default on a terminal; with --out, as well as the file)",
    )
    run.add_argument("--annotate", type=Path, metavar="DIR", help="write annotated images (and videos) here")
    run.add_argument("--attention", type=Path, metavar="DIR", help="write per-face attention maps here")
    run.add_argument("--batch-size", type=positive_int, default=16, help="images (or frames) per network batch")
    run.add_argument(
        "--threads",
        type=positive_int,
        help="network threads (default: torch's, one per core; bench/performance.md compares them)",
    )
    run.add_argument("--stride", type=positive_int, default=1, help="analyze every K-th video frame")
    run.add_argument("--tracks", type=Path, help="videos: one summary row per tracked person (.csv or .jsonl)")
    run.add_argument(
        "--smooth",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="videos: smooth probabilities, age and pose per track with this time constant (e.g. 0.5); the "
        "frame's own values go to raw.* (default 0: no smoothing)",
    )
    run.add_argument("--weights", type=Path, help="a model folder (config.json + model.safetensors)")
    _add_backend_arguments(run)
    run.add_argument("--engine", choices=["local", "ray"], default="local", help="ray: a pool of Ray actors → Parquet")
    run.add_argument("--address", help="with --engine ray: join this Ray cluster (default: start a local Ray)")
    run.add_argument(
        "--actors", type=positive_int, help="with --engine ray: model-holding actors (default: one per CPU)"
    )
    run.add_argument(
        "--part-size", type=positive_int, default=256, help="with --engine ray: inputs per Parquet part file"
    )
    run.add_argument("--jsonl", action="store_true", help="with --engine ray: also write JSON lines beside Parquet")
    run.set_defaults(handler=analyze)
    show = commands.add_parser("info", help="the model and every label in output order")
    show.add_argument("--weights", type=Path)
    show.set_defaults(handler=info)
    fit = commands.add_parser("train", help="train Q-Face from a YAML config")
    fit.add_argument("config", type=Path)
    fit.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    fit.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. steps=100 or model.last_stage_only=true (YAML values; repeatable)",
    )
    fit.set_defaults(handler=train)
    score = commands.add_parser("eval", help="score a model on the validation splits of a config's datasets")
    score.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="default: the shipped configs/cpu_default.yaml"
    )
    score.add_argument("--weights", type=Path)
    score.add_argument("--split", default="val")
    score.add_argument("--no-cache", action="store_true", help="run the backbone instead of reading cached features")
    score.add_argument("--out", type=Path, help="write the results as JSON")
    _add_backend_arguments(score)
    score.set_defaults(handler=evaluate)
    ship = commands.add_parser("export", help="the whole network as ONNX (every task, dynamic batch; the onnx extra)")
    ship.add_argument("format", choices=["onnx"])
    ship.add_argument("out", type=Path, help="the .onnx file to write")
    ship.add_argument("--weights", type=Path)
    ship.add_argument("--int8", action="store_true", help="static int8 quantization of the backbone (QDQ)")
    ship.add_argument(
        "--calibration", type=positive_int, default=300, help="with --int8: training chips to calibrate on"
    )
    ship.add_argument(
        "--chips", type=Path, default=Path("cache/chips"), help="with --int8: the folder of chip caches (train split)"
    )
    ship.set_defaults(handler=export)
    teach = commands.add_parser("label", help="teacher labels (MediaPipe pose + 68 landmarks) for chip caches")
    teach.add_argument("folders", nargs="+", type=Path)
    teach.set_defaults(handler=label)
    web = commands.add_parser("serve", help="a REST API and a web page on http://127.0.0.1:8000 (the serve extra)")
    add_serve_arguments(web)
    web.set_defaults(handler=serve)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
