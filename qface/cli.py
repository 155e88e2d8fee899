"""`qface analyze | info` — the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
        print(
            f"{task.name} ({len(task.labels)}): {', '.join(task.labels) if task.uses_queries else 'embedding'}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qface", description="Multi-task face analysis (Task-adaptive Q-Face)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("analyze", help="analyze images (the bundled sample photo when none is given)")
    run.add_argument("paths", nargs="*", type=Path)
    run.add_argument("--tasks", nargs="+", choices=list(TASKS), help="only these tasks (default: all)")
    run.add_argument("--weights", type=Path, help="a model folder (config.json + model.safetensors)")
    run.set_defaults(handler=analyze)
    show = commands.add_parser("info", help="the model and every label in output order")
    show.add_argument("--weights", type=Path)
    show.set_defaults(handler=info)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
