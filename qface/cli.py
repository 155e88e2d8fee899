"""`qface analyze | info` — the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from qface.tasks import TASKS

SAMPLE_IMAGE = Path(__file__).resolve().parent / "assets" / "astronaut.png"


def analyze(args: argparse.Namespace) -> int:
    from qface.pipeline.analyzer import FaceAnalyzer

    analyzer = FaceAnalyzer(weights=args.weights, tasks=args.tasks)
    if analyzer.model.config.version == "untrained":
        print("note: no trained weights found — outputs below come from an UNTRAINED model", file=sys.stderr)
    failed = 0
    for path in args.paths or [SAMPLE_IMAGE]:
        try:
            faces = analyzer.analyze(path)
        except (OSError, ValueError) as error:
            failed += 1
            print(f"error: {path}: {error}", file=sys.stderr)
            continue
        for index, face in enumerate(faces):
            print(json.dumps({"file": str(path), "face": index, **face.to_dict()}))
    return 1 if failed else 0


def info(args: argparse.Namespace) -> int:
    from qface.pipeline.analyzer import load_model

    model = load_model(args.weights)
    print(f"model: {model.model_id}  backbone: {model.config.backbone['name']}  input: {model.input_size}px")
    for task in model.tasks:
        print(f"{task.name} ({len(task.labels)}): {', '.join(task.labels) if task.uses_queries else 'embedding'}")
    return 0


def train(args: argparse.Namespace) -> int:
    from qface.train.trainer import TrainConfig
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
    from qface.eval.evaluate import bias_table, markdown_table, predict_source, score_source
    from qface.pipeline.analyzer import load_model
    from qface.train.trainer import TrainConfig, build_sources

    config = TrainConfig.from_yaml(args.config)
    model = load_model(args.weights)
    config.features = config.features and not args.no_cache
    results, biases = {}, {}
    for name, source in build_sources(config, model.config, args.split).items():
        if not len(source):
            continue
        predictions = predict_source(model, source)
        results[name] = score_source(source, predictions)
        biases[name] = bias_table(source, predictions)
    report = {"model": model.model_id, "split": args.split, "results": results, "bias": biases}
    print(f"# {model.model_id} on the {args.split} splits\n\n{markdown_table(results)}")
    for name, table in biases.items():
        if table:
            print(f"\n## subgroups of {name}\n\n{markdown_table(table)}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def label(args: argparse.Namespace) -> int:
    from qface.teacher import label_chip_cache

    for folder in args.folders:
        label_chip_cache(folder)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qface", description="Multi-task face analysis (Task-adaptive Q-Face).")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("analyze", help="analyze images (the bundled sample photo when none is given)")
    run.add_argument("paths", nargs="*", type=Path)
    run.add_argument("--tasks", nargs="+", choices=list(TASKS), help="only these tasks (default: all)")
    run.add_argument("--weights", type=Path, help="a model folder (config.json + model.safetensors)")
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
    score.add_argument("--config", type=Path, default=Path("configs/cpu_default.yaml"))
    score.add_argument("--weights", type=Path)
    score.add_argument("--split", default="val")
    score.add_argument("--no-cache", action="store_true", help="run the backbone instead of reading cached features")
    score.add_argument("--out", type=Path, help="write the results as JSON")
    score.set_defaults(handler=evaluate)
    teach = commands.add_parser("label", help="teacher labels (MediaPipe pose + 68 landmarks) for chip caches")
    teach.add_argument("folders", nargs="+", type=Path)
    teach.set_defaults(handler=label)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
