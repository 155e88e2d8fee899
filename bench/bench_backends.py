"""Faces/s of the whole network (all tasks, aligned chips) in torch fp32 and bf16, onnxruntime fp32 and int8.

    python bench/bench_backends.py [--fp32 FILE] [--int8 FILE] [--threads 2] [--batches 8 32] [--repeats 7]

The three run interleaved (each repeat times every backend at every batch size once, in turn), so a change of load
hits all of them alike; the table gives the median and the spread (min–max) over the repeats, and the load average
before and after. Without --fp32 the export is made (or found) in qface.onnx's cache; without --int8 one is made from
300 training chips under cache/chips. Writes bench/results/backends.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from common import cpu_name

from qface.analyzer import load_model
from qface.model.qface import precision_context
from qface.onnx import OnnxModel, default_onnx_path, export_onnx, quantize_int8, training_chips

CHIPS = Path("cache/chips")


def faces_per_second(run, images: torch.Tensor, seconds: float) -> float:
    """Calls `run(images)` for at least `seconds` (after one warm-up call) and gives faces per second."""
    run(images)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(images)
        calls += 1
    return calls * len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fp32", type=Path, help="ONNX fp32 file (default: qface.onnx's cached export)")
    parser.add_argument("--int8", type=Path, help="ONNX int8 file (default: quantized here on cache/chips)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.5, help="per timing")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "backends.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model()
    scratch = tempfile.TemporaryDirectory()
    fp32 = args.fp32 or default_onnx_path(model)
    if not fp32.is_file():
        export_onnx(model, fp32)
    folders = sorted(p.parent for p in CHIPS.glob("*/labels.npz"))
    int8 = args.int8 or quantize_int8(fp32, Path(scratch.name) / "int8.onnx", training_chips(folders, 300))
    if folders:  # real faces (speed hardly depends on them, but denormals and ranges could), else noise
        images = torch.from_numpy(training_chips(folders, max(args.batches), seed=1))
    else:
        images = torch.rand(max(args.batches), 3, model.input_size, model.input_size)
    onnx_fp32, onnx_int8 = OnnxModel(model, fp32, args.threads), OnnxModel(model, int8, args.threads)
    model.fold_for_inference()  # torch as FaceAnalyzer runs it (the ONNX files are keyed by the unfolded weights)

    def torch_bf16(images: torch.Tensor):
        with precision_context("bf16"):
            return model(images)

    backends = {
        "torch fp32": model,
        "torch bf16": torch_bf16,
        "onnxruntime fp32": onnx_fp32,
        "onnxruntime int8": onnx_int8,
    }
    load_before = os.getloadavg()
    rates: dict[str, dict[int, list[float]]] = {name: {b: [] for b in args.batches} for name in backends}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for batch in args.batches:
                for name, run in backends.items():
                    rates[name][batch].append(faces_per_second(run, images[:batch], args.seconds))
    load_after = os.getloadavg()
    machine = f"{cpu_name()}, {os.cpu_count()} logical CPUs"
    print(f"machine: {machine}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    print(f"{args.threads} threads, all tasks, {args.repeats} interleaved repeats of {args.seconds} s")
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}\n")
    print("| backend | " + " | ".join(f"batch {b}: faces/s (min–max)" for b in args.batches) + " |")
    print("|---|" + "---:|" * len(args.batches))
    table = {}
    for name, per_batch in rates.items():
        cells, table[name] = [], {}
        for batch, values in per_batch.items():
            median = float(np.median(values))
            table[name][batch] = {"median": median, "min": min(values), "max": max(values), "all": values}
            cells.append(f"{median:.0f} ({min(values):.0f}–{max(values):.0f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    report = {
        "model": model.model_id,
        "machine": machine,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "threads": args.threads,
        "repeats": args.repeats,
        "seconds_per_timing": args.seconds,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "faces_per_second": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    scratch.cleanup()


if __name__ == "__main__":
    main()
