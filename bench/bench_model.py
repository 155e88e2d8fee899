"""The network alone on aligned faces: faces/s per batch size, thread count, precision and task subset, and each
inference rewrite's share (folded or not), all in one process with the variants interleaved.

    python bench/bench_model.py [--batches 1 8 32 64] [--threads 1 2] [--repeats 7] [--json bench/results/model.json]

Every timed call is one forward of `QFace` on random 150×150 inputs (the network's cost does not depend on the
pixels). Each round runs every variant once, in an order that flips every round; the table reports the median and
the spread (min–max) of the rounds. MACs count every Conv2d and Linear from the shapes their hooks see; the attention
products inside `nn.MultiheadAttention` are left out, so the whole-model count is a lower bound.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import interleaved, rate

from qface.analyzer import load_model
from qface.model.qface import QFace, precision_context

SUBSETS = {"all tasks": None, "expression": ["expression"], "age + attributes": ["age", "attributes"]}


def count_macs(model: torch.nn.Module, images: torch.Tensor, **kwargs) -> int:
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
        model(images[:1], **kwargs)
    for handle in handles:
        handle.remove()
    return total


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a square matmul: the practical peak of this CPU on the current torch threads."""
    a, b = torch.rand(size, size).to(dtype), torch.rand(size, size).to(dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def variants(plain: QFace, folded: QFace, images: torch.Tensor) -> dict[str, Callable[[], None]]:
    def run(model: QFace, precision: str = "fp32", tasks: list[str] | None = None) -> Callable[[], None]:
        def call() -> None:
            with torch.inference_mode(), precision_context(precision):
                model(images, tasks)

        return call

    runs = {"all tasks, fp32, affines not folded": run(plain)}
    for precision in ("fp32", "bf16"):
        for subset, tasks in SUBSETS.items():
            runs[f"{subset}, {precision}"] = run(folded, precision, tasks)
        runs[f"backbone alone, {precision}"] = lambda p=precision: run_backbone(folded, images, p)
    return runs


def run_backbone(model: QFace, images: torch.Tensor, precision: str) -> None:
    with torch.inference_mode(), precision_context(precision):
        model.backbone(images)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--repeats", type=int, default=7, help="rounds per batch size and thread count")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    plain = load_model()
    folded = copy.deepcopy(plain).fold_for_inference()
    probe = torch.rand(1, 3, plain.input_size, plain.input_size)
    macs = {subset: count_macs(folded, probe, tasks=tasks) for subset, tasks in SUBSETS.items()}
    macs["backbone alone"] = count_macs(folded.backbone, probe)
    load = os.getloadavg()
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        peaks = {str(dtype): matmul_peak(dtype) for dtype in (torch.float32, torch.bfloat16)}
        for batch in args.batches:
            images = torch.rand(batch, 3, plain.input_size, plain.input_size)
            runs = {
                name: rate(lambda r=run, b=batch: r() or b) for name, run in variants(plain, folded, images).items()
            }
            samples = interleaved(runs, args.repeats)
            for name, rates in samples.items():
                results.append(
                    {"threads": threads, "batch": batch, "variant": name, "faces_per_s": statistics.median(rates)}
                    | {"min": min(rates), "max": max(rates), "matmul_peak_gflops": peaks}
                )
    report = {
        "model": plain.model_id,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "torch": torch.__version__,
        "load_average_before_after": [load[0], os.getloadavg()[0]],
        "macs_per_face": macs,
        "results": results,
    }
    load_line = f"load average {load[0]:.2f} before, {report['load_average_before_after'][1]:.2f} after"
    print(f"{report['model']} on {report['machine']}, torch {report['torch']}, {load_line}")
    print("MMACs per face: " + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in macs.items()))
    print("\n| threads | batch | variant | faces/s (median) | min–max | share of matmul peak |")
    print("|---:|---:|---|---:|---|---:|")
    for row in results:
        subset = next((s for s in macs if row["variant"].startswith(s)), "all tasks")
        dtype = "torch.bfloat16" if "bf16" in row["variant"] else "torch.float32"
        share = 2 * macs[subset] * row["faces_per_s"] / 1e9 / row["matmul_peak_gflops"][dtype]
        print(
            f"| {row['threads']} | {row['batch']} | {row['variant']} | {row['faces_per_s']:.1f} "
            f"| {row['min']:.1f}–{row['max']:.1f} | {share:.0%} |"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
