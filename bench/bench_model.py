"""Forward time of the default Q-Face on a batch of aligned faces, and the backbone's multiply-adds.

    python bench/bench_model.py [--batch 32] [--threads 2] [--repeats 5]

Prints a markdown table; the committed numbers live in bench/results.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from qface.analyzer import load_model
from qface.model.qface import QFace, QFaceConfig


def count_macs(model: torch.nn.Module, images: torch.Tensor) -> int:
    """Multiply-adds of every Conv2d and Linear, read off the shapes their hooks see (attention products aside)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kernel = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
            total += output.numel() // output.shape[0] * kernel
        elif isinstance(module, torch.nn.Linear):
            total += output.numel() // output.shape[0] * module.in_features

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    with torch.inference_mode():
        model(images[:1])
    for handle in handles:
        handle.remove()
    return total


def seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model()
    if model.config.version == "untrained":
        model = QFace(QFaceConfig()).eval()
    images = torch.rand(args.batch, 3, model.input_size, model.input_size)
    backbone_macs = count_macs(model.backbone, images)
    with torch.inference_mode():
        backbone_s = seconds(lambda: model.backbone(images), args.repeats)
        full_s = seconds(lambda: model(images), args.repeats)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads")
    print(f"model: {model.model_id}, input {model.input_size}px, batch {args.batch} (median of {args.repeats})\n")
    print("| part | MMACs / face | GFLOPs / face | ms / batch | faces / s |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| backbone | {backbone_macs / 1e6:.1f} | {2 * backbone_macs / 1e9:.3f} | {backbone_s * 1e3:.0f} "
        f"| {args.batch / backbone_s:.1f} |"
    )
    full_macs = count_macs(model, images)
    print(
        f"| whole model (all tasks) | {full_macs / 1e6:.1f} | {2 * full_macs / 1e9:.3f} | {full_s * 1e3:.0f} "
        f"| {args.batch / full_s:.1f} |"
    )


if __name__ == "__main__":
    main()
