"""qface side by side with the specialist stack (bench/specialist_stack.py), in one process, interleaved.

Set-up, once (the stack's packages are bench-only, never qface dependencies):

    python -m venv --system-site-packages /work/benchenv        # sees torch, dlib, mediapipe, qface
    /work/benchenv/bin/pip install --no-deps -r bench/requirements-stack.txt

Run from the repository root, on an otherwise idle machine (../shared beside the repository):

    PYTHONPATH=$PWD /work/benchenv/bin/python bench/bench_compare.py            # the full run, ~10 min quiet
    PYTHONPATH=$PWD /work/benchenv/bin/python bench/bench_compare.py --quick    # a smoke run, ~1-2 min

Writes bench/results/compare-<model>[-<backend>][-<precision>][-quick].json and .md, and prints the table.

What is measured (every timed section alternates the two sides, and the order flips each repeat):
(a) aligned faces: 64 real faces (the bundled sample + CelebA photos, detected and aligned once with qface's dlib-hog
    before any timing) through `FaceAnalyzer(detector="none").analyze_arrays` at batch 1, 8, 32 — all tasks, only
    expression, and age + attributes (the nearest qface subset to age + gender) — against the stack's
    `analyze_aligned` loop (one face at a time; its batch is always 1);
(b) one 640×480 PNG with one face (the sample on a grey canvas), decode → detect → align → networks → results;
(c) a folder of CelebA photos: `python -m qface.cli analyze FOLDER --out x.csv` against
    `python bench/specialist_stack.py FOLDER --out y.csv`, wall time with start-up, in child processes;
(d) qface's stages, timed by calling the pipeline pieces directly (the torch modules, whatever --backend says);
(e) the peak RSS of each child of (c) (its VmHWM, reported by bench/peak_rss.py);
(f) the backbone's FLOP/s against this CPU's fp32 and bf16 matmul peak on the same torch threads.
qface runs `--threads` torch threads (default 2, torch's default on 2 cores); the stack runs one (serial per face).
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dlib
import numpy as np
import onnxruntime
import torch
from bench_model import count_macs
from common import interleaved, photo_640x480, rate
from peak_rss import MARKER as PEAK_RSS_MARKER
from PIL import Image
from specialist_stack import TASKS as STACK_TASKS
from specialist_stack import SpecialistStack

from qface.analyzer import FaceAnalyzer, chips_to_tensor
from qface.model.qface import backbone_input
from qface.pipeline.align import align
from qface.pipeline.detect import get_detector
from qface.pipeline.io import detection_view, load_image
from qface.pipeline.output import ResultWriter
from qface.resources import SAMPLE_IMAGE

BENCH = Path(__file__).resolve().parent
CELEBA = BENCH.parents[1] / "shared" / "data" / "celeba" / "img_align_celeba"
STACK_SUBSETS = {"all": None, "expression": ("expression",), "age+gender": ("age", "gender")}
QFACE_SUBSETS = {"all": None, "expression": ["expression"], "age+gender": ["age", "attributes"]}


# ---------------------------------------------------------------------------------------------------------------
# Timing


def summary(samples: list[float]) -> dict[str, float]:
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    return {"median": median, "min": min(samples), "max": max(samples), "q1": q1, "q3": q3, "samples": samples}


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# ---------------------------------------------------------------------------------------------------------------
# Inputs and the two sides


def machine(threads: int) -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "flags": []}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        info["cpu"] = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
        flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
        wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")
        info["flags"] = [flag for flag in wanted if flag in flags]
    return info | {
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "dlib": dlib.__version__,
        "qface_torch_threads": threads,
        "stack_threads": 1,
    }


def png(image: np.ndarray) -> bytes:
    """Lossless, so both detectors see the canvas itself: saved as a JPEG (quality 95) its artefacts give dlib's HOG a
    third, false face besides the known one on the sleeve patch (bench/detectors.md)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def aligned_chips(count: int) -> list[np.ndarray]:
    """`count` real faces as qface's 150 px chips: the sample image's, then CelebA's (first face of each photo)."""
    detector = get_detector("dlib-hog")
    paths = [SAMPLE_IMAGE] + sorted(CELEBA.glob("*.jpg"))
    chips = []
    for path in paths:
        image = load_image(path)
        found = detector(image)
        if found:
            chips.append(align(image, found[0].shape).chip)
        if len(chips) == count:
            return chips
    raise SystemExit(f"only {len(chips)} faces found in the sample and {CELEBA}; {count} wanted")


def analyzer_options(args: argparse.Namespace) -> dict:
    """--backend / --precision for FaceAnalyzer, refused (not silently dropped) when its constructor lacks them."""
    parameters = inspect.signature(FaceAnalyzer.__init__).parameters
    options = {}
    for name in ("backend", "precision"):
        value = getattr(args, name)
        if value is None:
            continue
        if name not in parameters or parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            raise SystemExit(f"--{name}: this qface's FaceAnalyzer takes no {name!r} argument")
        options[name] = value
    return options


def cli_options(args: argparse.Namespace) -> list[str]:
    """The same choices for `qface analyze`, refused when its --help does not list them."""
    wanted = [(f"--{name}", getattr(args, name)) for name in ("detector", "backend", "precision")]
    wanted = [(flag, value) for flag, value in wanted if value is not None]
    if not wanted:
        return []
    help_text = subprocess.run(
        [sys.executable, "-m", "qface.cli", "analyze", "--help"], capture_output=True, text=True
    ).stdout
    for flag, _ in wanted:
        if flag not in help_text:
            raise SystemExit(f"{flag}: `qface analyze` has no such option")
    return [item for pair in wanted for item in pair]


# ---------------------------------------------------------------------------------------------------------------
# The measurements


def measure_aligned(args, options: dict, stack: SpecialistStack, chips: list[np.ndarray]) -> dict:
    """(a): faces/s on aligned chips; qface at each batch size, the stack one face at a time."""
    results = {}
    for subset, stack_tasks in STACK_SUBSETS.items():
        analyzer = FaceAnalyzer(tasks=QFACE_SUBSETS[subset], detector="none", batch_size=max(args.batches), **options)

        def qface_batches(batch: int, analyzer=analyzer) -> int:
            for start in range(0, len(chips), batch):
                analyzer.analyze_arrays(chips[start : start + batch])
            return len(chips)

        def stack_loop(tasks=stack_tasks) -> int:
            for chip in chips:
                stack.analyze_aligned(chip, tasks or STACK_TASKS)
            return len(chips)

        runs = {"stack": rate(stack_loop)}
        runs |= {f"qface batch {batch}": rate(lambda batch=batch: qface_batches(batch)) for batch in args.batches}
        stack.timer.reset()
        samples = interleaved(runs, args.repeats)
        results[subset] = {
            "qface_tasks": analyzer.tasks,
            "stack_tasks": list(stack_tasks or STACK_TASKS),
            "faces": len(chips),
            "mirror": analyzer.mirror,
            "faces_per_s": {name: summary(values) for name, values in samples.items()},
            "stack_ms_per_face": stage_ms(stack, len(chips) * (args.repeats + 1)),
        }
        print(f"  aligned, {subset}: done", file=sys.stderr)
    return results


def stage_ms(stack: SpecialistStack, items: int) -> dict[str, float]:
    return {stage: 1e3 * seconds / items for stage, seconds in stack.timer.seconds.items()}


def measure_photo(args, options: dict, stack: SpecialistStack, photo: bytes) -> dict:
    """(b): one PNG, decoded and analysed end to end; photos/s over `calls` calls per sample."""
    analyzer = photo_analyzer(args, options)
    calls = 1 if args.quick else 3
    found = {"qface": len(analyzer.analyze(photo)), "stack": len(stack.analyze_photo(load_stack(photo)))}

    def qface_photos() -> int:
        for _ in range(calls):
            analyzer.analyze(photo)
        return calls

    def stack_photos() -> int:
        for _ in range(calls):
            stack.analyze_photo(load_stack(photo))
        return calls

    stack.timer.reset()
    samples = interleaved({"stack": rate(stack_photos), "qface": rate(qface_photos)}, args.repeats)
    return {
        "faces_found": found,
        "qface_detector": repr(analyzer.detector),
        "stack_detector": f"dlib HOG, upsample {stack.upsample}",
        "photos_per_s": {name: summary(values) for name, values in samples.items()},
        "stack_ms_per_photo": stage_ms(stack, calls * (args.repeats + 1)),
    }


def photo_analyzer(args, options: dict) -> FaceAnalyzer:
    """The analyzer a user gets for photos: FaceAnalyzer's own default detector unless --detector says."""
    return FaceAnalyzer(**({"detector": args.detector} if args.detector else {}), **options)


def load_stack(photo: bytes) -> np.ndarray:
    """The stack's decode, as a user would write it."""
    return np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))


def measure_folder(args, scratch: Path) -> dict:
    """(c) and (e): each tool in its own child process over the same folder; wall time and peak RSS."""
    folder = scratch / "photos"
    folder.mkdir()
    for path in sorted(CELEBA.glob("*.jpg"))[: args.folder_count]:
        shutil.copy(path, folder / path.name)
    launch = [sys.executable, str(BENCH / "peak_rss.py")]
    commands = {
        "qface": launch + ["-m", "qface.cli", "analyze", str(folder), "--out", str(scratch / "qface.csv")],
        "stack": launch + [str(BENCH / "specialist_stack.py"), str(folder), "--out", str(scratch / "stack.csv")],
    }
    commands["qface"] += cli_options(args)
    rss: dict[str, list[float]] = {name: [] for name in commands}

    def child(name: str) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            done = subprocess.run(commands[name], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            seconds = time.perf_counter() - start
            if done.returncode:
                raise SystemExit(f"{' '.join(commands[name])} failed:\n{done.stderr[-2000:]}")
            last = [line for line in done.stderr.splitlines() if line.startswith(PEAK_RSS_MARKER)][-1]
            rss[name].append(int(last.split()[1]) / 1024)
            return args.folder_count / seconds

        return run

    samples = interleaved({name: child(name) for name in commands}, args.repeats)
    rows = {name: sum(1 for _ in (scratch / f"{name}.csv").open()) - 1 for name in commands}
    return {
        "images": args.folder_count,
        "source": str(CELEBA),
        "commands": {name: " ".join(command) for name, command in commands.items()},
        "csv_rows": rows,
        "images_per_s": {name: summary(values) for name, values in samples.items()},
        "peak_rss_mib": {name: summary(values) for name, values in rss.items()},
    }


def measure_stages(args, options: dict, photo: bytes, chips: list[np.ndarray], scratch: Path) -> dict:
    """(d): qface's pipeline pieces one by one on the photo (ms per photo), and the network parts on aligned
    batches (faces/s), with the model's torch modules."""
    analyzer = photo_analyzer(args, options)
    detector, model, repeats = analyzer.detector, analyzer.model, args.repeats
    image = load_image(photo)
    view, scale = detection_view(image, detector.max_side)
    boxes = detector._detect(np.ascontiguousarray(view))

    def shapes() -> list:  # what FaceDetector.__call__ does with the boxes: back to full size, then the shapes
        return [
            detector._complete(image, np.float32(box) / scale, score, None if p is None else (p + 0.5) / scale - 0.5)
            for box, score, p in boxes
        ]

    detections = shapes()
    found = analyzer._detect(image)
    tasks = analyzer.tasks

    def network_input(faces: list[np.ndarray]) -> torch.Tensor:
        images = chips_to_tensor(faces)
        images = torch.cat([images, images.flip(-1)]) if analyzer.mirror else images
        return backbone_input(images, model.backbone.input_size)

    with torch.inference_mode():
        photo_chips = [align(image, d.shape).chip for d in detections]
        features = model.backbone(network_input(photo_chips))
        faces = analyzer.analyze(photo)
        writer_path = scratch / "stages.csv"

        def write() -> None:
            writer = ResultWriter(writer_path, tasks, model=model)
            writer.faces("photo.jpg", faces)
            writer.close()

        photo_ms = {
            "decode": median_seconds(lambda: load_image(photo), repeats),
            "detect": median_seconds(
                lambda: detector._detect(np.ascontiguousarray(detection_view(image, detector.max_side)[0])), repeats
            ),
            "shapes (5 + 68 points)": median_seconds(shapes, repeats),
            "align": median_seconds(lambda: [align(image, d.shape) for d in detections], repeats),
            "backbone": median_seconds(lambda: model.backbone(network_input(photo_chips)), repeats),
            "fusion + decoder + heads": median_seconds(
                lambda: model.forward_features(model.fusion.resample(features.stages), features.embedding, tasks),
                repeats,
            ),
            "network + read-out (analyzer, from aligned)": median_seconds(
                lambda: analyzer._analyze_detected([found]), repeats
            ),
            "writing (CSV)": median_seconds(write, repeats),
            "whole analyze(png)": median_seconds(lambda: analyzer.analyze(photo), repeats),
        }
        network = {}
        for batch in args.batches:
            inputs = network_input(chips[:batch])
            feats = model.backbone(inputs)
            backbone_s = median_seconds(lambda inputs=inputs: model.backbone(inputs), repeats)
            head_s = median_seconds(
                lambda f=feats: model.forward_features(model.fusion.resample(f.stages), f.embedding, tasks), repeats
            )
            faces_in = len(inputs)  # with mirror: twice the faces
            network[f"batch {batch}"] = {
                "network_images": faces_in,
                "backbone_images_per_s": faces_in / backbone_s,
                "fusion_decoder_heads_images_per_s": faces_in / head_s,
                "network_images_per_s": faces_in / (backbone_s + head_s),
            }
    return {
        "detector": repr(detector),
        "faces_in_photo": len(detections),
        "mirror": analyzer.mirror,
        "photo_ms": {stage: 1e3 * seconds for stage, seconds in photo_ms.items()},
        "network": network,
    }


def measure_flops(args, options: dict, chips: list[np.ndarray]) -> dict:
    """(f): the backbone's achieved FLOP/s at the largest batch against big fp32 and bf16 matmuls."""
    model = FaceAnalyzer(detector="none", **options).model
    batch = max(args.batches)
    images = backbone_input(chips_to_tensor(chips[:batch]), model.backbone.input_size)
    macs = count_macs(model.backbone, images)
    with torch.inference_mode():
        backbone_s = median_seconds(lambda: model.backbone(images), args.repeats)
        peaks = {}
        for dtype in (torch.float32, torch.bfloat16):
            a, b = (
                torch.randn(args.matmul, args.matmul, dtype=dtype),
                torch.randn(args.matmul, args.matmul, dtype=dtype),
            )
            seconds = median_seconds(lambda a=a, b=b: a @ b, args.repeats)
            peaks[str(dtype).removeprefix("torch.")] = 2 * args.matmul**3 / seconds / 1e9
    achieved = 2 * macs * batch / backbone_s / 1e9
    return {
        "backbone_mmacs_per_face": macs / 1e6,
        "batch": batch,
        "backbone_faces_per_s": batch / backbone_s,
        "backbone_gflops": achieved,
        "matmul_size": args.matmul,
        "matmul_peak_gflops": peaks,
        "fraction_of_peak": {dtype: achieved / peak for dtype, peak in peaks.items()},
    }


# ---------------------------------------------------------------------------------------------------------------
# Report


def table(result: dict) -> str:
    def cell(s: dict, digits: int = 1) -> str:
        return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"

    lines = [
        "| measurement | unit | qface median (min–max) | stack median (min–max) | qface ÷ stack |",
        "|---|---|---:|---:|---:|",
    ]

    def row(name: str, unit: str, q: dict, s: dict, digits: int = 1) -> None:
        lines.append(f"| {name} | {unit} | {cell(q, digits)} | {cell(s, digits)} | {q['median'] / s['median']:.2f} |")

    for subset, values in result["aligned"].items():
        rates = values["faces_per_s"]
        for name in rates:
            if name != "stack":
                row(f"aligned, {subset} tasks, {name}", "faces/s", rates[name], rates["stack"])
    photo = result["photo"]
    row(
        "640×480 PNG, 1 face, end to end",
        "photos/s",
        photo["photos_per_s"]["qface"],
        photo["photos_per_s"]["stack"],
        2,
    )
    folder = result["folder"]
    row(
        f"folder of {folder['images']} CelebA photos, CLI (start-up included)",
        "images/s",
        folder["images_per_s"]["qface"],
        folder["images_per_s"]["stack"],
    )
    row("peak RSS of that run", "MiB", folder["peak_rss_mib"]["qface"], folder["peak_rss_mib"]["stack"], 0)
    lines += stage_lines(result["stages"]) + flops_lines(result["flops"])
    lines += [
        "",
        "Stack, ms per face by stage (aligned, all tasks): "
        + ", ".join(f"{k} {v:.1f}" for k, v in result["aligned"]["all"]["stack_ms_per_face"].items()),
        "Stack, ms per photo by stage: " + ", ".join(f"{k} {v:.1f}" for k, v in photo["stack_ms_per_photo"].items()),
    ]
    return "\n".join(lines)


def stage_lines(stages: dict) -> list[str]:
    if "error" in stages:
        return ["", f"qface stages: not measured ({stages['error']})"]
    lines = ["", f"qface stages, one 640×480 photo ({stages['detector']}, mirror={stages['mirror']}):", ""]
    lines += ["| stage | ms |", "|---|---:|"] + [f"| {k} | {v:.1f} |" for k, v in stages["photo_ms"].items()]
    lines += ["", "qface network alone (images incl. mirrored copies):", ""]
    lines += ["| batch | backbone img/s | fusion+decoder+heads img/s | network img/s |", "|---|---:|---:|---:|"]
    for batch, values in stages["network"].items():
        lines.append(
            f"| {batch} | {values['backbone_images_per_s']:.0f} | {values['fusion_decoder_heads_images_per_s']:.0f} "
            f"| {values['network_images_per_s']:.0f} |"
        )
    return lines


def flops_lines(flops: dict) -> list[str]:
    if "error" in flops:
        return ["", f"Backbone FLOP/s: not measured ({flops['error']})"]
    return [
        "",
        f"Backbone: {flops['backbone_mmacs_per_face']:.0f} MMACs/face, {flops['backbone_gflops']:.0f} GFLOP/s at "
        f"batch {flops['batch']} = {flops['fraction_of_peak']['float32']:.0%} of the fp32 matmul peak "
        f"({flops['matmul_peak_gflops']['float32']:.0f} GFLOP/s), {flops['fraction_of_peak']['bfloat16']:.0%} of "
        f"bf16's ({flops['matmul_peak_gflops']['bfloat16']:.0f}); {flops['matmul_size']}² matmuls, same threads.",
    ]


def internals(measure: Callable[..., dict], *args) -> dict:
    """(d) and (f) call qface's pieces directly, which other branches may reshape: a failure there is recorded in
    the results, and the side-by-side numbers are kept."""
    try:
        return measure(*args)
    except Exception as error:
        print(f"  {measure.__name__} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return {"error": f"{type(error).__name__}: {error}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few faces, photos and repeats")
    parser.add_argument("--repeats", type=int, help="rounds per measurement (default 5; --quick 2)")
    parser.add_argument("--threads", type=int, default=2, help="qface's torch threads")
    parser.add_argument("--faces", type=int, help="aligned faces (default 64; --quick 8)")
    parser.add_argument("--folder-count", type=int, help="CelebA photos for the CLI run (default 200; --quick 10)")
    parser.add_argument("--detector", help="qface's detector for (b)-(d) (default: FaceAnalyzer's own)")
    parser.add_argument("--backend", help="FaceAnalyzer(backend=...), when this qface has it")
    parser.add_argument("--precision", help="FaceAnalyzer(precision=...), when this qface has it")
    parser.add_argument("--matmul", type=int, default=2048, help="side of the peak-FLOP/s matmuls")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.faces = args.faces or (8 if args.quick else 64)
    args.folder_count = args.folder_count or (10 if args.quick else 200)
    args.batches = [b for b in (1, 8, 32) if b <= args.faces]
    torch.set_num_threads(args.threads)
    options = analyzer_options(args)
    load_before = os.getloadavg()
    started = time.time()

    chips = aligned_chips(args.faces)  # outside every timed region
    photo = png(photo_640x480())
    stack = SpecialistStack()
    result = {
        "machine": machine(args.threads),
        "load_average_before": load_before,
        "options": {k: str(v) for k, v in vars(args).items()},
        "analyzer_options": options,
    }
    print("measuring (a) aligned faces", file=sys.stderr)
    result["aligned"] = measure_aligned(args, options, stack, chips)
    print("measuring (b) one photo", file=sys.stderr)
    result["photo"] = measure_photo(args, options, stack, photo)
    stack.close()
    with tempfile.TemporaryDirectory() as scratch:
        print("measuring (c, e) a folder through the CLIs", file=sys.stderr)
        result["folder"] = measure_folder(args, Path(scratch))
        print("measuring (d) qface's stages", file=sys.stderr)
        result["stages"] = internals(measure_stages, args, options, photo, chips, Path(scratch))
    print("measuring (f) FLOP/s", file=sys.stderr)
    result["flops"] = internals(measure_flops, args, options, chips)
    result["model"] = FaceAnalyzer(detector="none", **options).model.model_id
    result["load_average_after"] = os.getloadavg()
    result["minutes"] = (time.time() - started) / 60
    result["table"] = table(result)

    name = "-".join(["compare", result["model"], *options.values()] + (["quick"] if args.quick else []))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    header = (
        f"{result['model']} vs the specialist stack; {result['machine']['cpu']}, {result['machine']['logical_cpus']}"
        f" logical CPUs ({', '.join(result['machine']['flags'])}); torch {torch.__version__} on {args.threads} "
        f"threads, the stack on 1; load average before {load_before[0]:.2f}, after "
        f"{result['load_average_after'][0]:.2f}; {args.repeats} interleaved repeats"
    )
    (args.out / f"{name}.md").write_text(header + "\n\n" + result["table"] + "\n")
    print(header + "\n\n" + result["table"])


if __name__ == "__main__":
    main()
