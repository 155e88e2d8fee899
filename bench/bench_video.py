"""Video speed, track quality and answer jitter on a clip of real faces with known identities.

    nice -n 10 python bench/bench_video.py [--frames 100] [--repeats 1] [--detector dlib-hog] [--smooth 0.5]

No real multi-person clip with identity labels ships with the repository or ../shared, so the clip is made from
CelebA validation photos (qface.eval.tracking.write_clip): four people on a textured background, A and B walking
across each other (B in front, hiding A for a few frames), C leaving for 2 s and coming back, D slowly moving
closer; sensor-like noise on every frame, mp4v compression. The faces are still photos, so their true age and
expression never change: every frame-to-frame change of age and every flip of the top expression is jitter.

Runs, all on the same clip and interleaved `--repeats` times (best time of each), frames/s end to end (decode →
detect → align → network → tracks), model loaded before:
  serial      — frames decoded and detected in the main thread between network batches (the previous pipeline)
  no tracking — analyze_video(track=False): detection prefetched in a worker thread, no track ids
  tracking    — analyze_video(smooth=...): prefetch + tracks + smoothing; raw and smoothed values from this run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from qface.analyzer import FaceAnalyzer, read_video
from qface.eval.tracking import Walk, id_switches, idf1, match_frames, write_clip

PHOTOS = Path("../shared/data/celeba/img_align_celeba")


def photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


def clip(path: Path, frames: int) -> list:
    walks = [
        Walk(photo("163289.jpg"), (0, 10), (500, 10), scale=(0.8, 0.8)),
        Walk(photo("163429.jpg"), (500, 10), (0, 10), scale=(0.8, 0.8)),
        Walk(photo("163908.jpg"), (420, 180), (300, 180), away=range(frames // 3, frames // 3 + 20)),
        Walk(photo("162886.jpg"), (20, 190), (120, 170), scale=(0.7, 0.85)),
    ]
    return write_clip(path, walks, frames=frames, size=(640, 360), fps=10.0)


def serial(analyzer: FaceAnalyzer, path: Path) -> int:
    _, frames = read_video(path)
    batch, count = [], 0
    for _, frame in frames:
        batch.append(frame)
        if len(batch) == analyzer.batch_size:
            count += len(analyzer.analyze_arrays(batch))
            batch = []
    return count + len(analyzer.analyze_arrays(batch))


def timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def jitter(frames, smoothed: bool) -> tuple[float, float]:
    """(mean |Δ age| between consecutive sightings of a track in years, top-expression flips per track-minute)."""
    by_track: dict[int, list] = {}
    for frame in frames:
        for face in frame.faces:
            values = {"age": face.age, "top_expression": face.top_expression} if smoothed else face.raw
            by_track.setdefault(face.track, []).append((frame.seconds, values["age"], values["top_expression"]))
    steps, flips, minutes = [], 0, 0.0
    for seen in by_track.values():
        ages = np.array([age for _, age, _ in seen])
        steps += list(np.abs(np.diff(ages)))
        flips += sum(a != b for (_, _, a), (_, _, b) in zip(seen, seen[1:]))
        minutes += (seen[-1][0] - seen[0][0]) / 60
    return float(np.mean(steps)), flips / max(minutes, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--detector", default="dlib-hog")
    parser.add_argument("--smooth", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    analyzer = FaceAnalyzer(detector=args.detector, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "people.mp4"
        truth = clip(path, args.frames)
        analyzer.analyze(np.zeros((64, 64, 3), np.uint8))  # models loaded before timing
        times: dict[str, list[float]] = {}
        for _ in range(args.repeats):  # interleaved, best of each: a shared machine's load drifts
            for name, run in (
                ("serial", lambda: serial(analyzer, path)),
                ("no tracking", lambda: list(analyzer.analyze_video(path, track=False))),
                ("tracking + smoothing", lambda: list(analyzer.analyze_video(path, smooth=args.smooth))),
            ):
                seconds, frames = timed(run)
                times.setdefault(name, []).append(seconds)
    predicted = [[(face.track, face.box) for face in frame.faces] for frame in frames]
    matches = match_frames(truth, predicted)
    found, true = sum(map(len, predicted)), sum(map(len, truth))
    print(f"model {analyzer.model.model_id}, detector {args.detector}, torch threads {args.threads}, batch "
          f"{args.batch_size}; clip 640x360, {args.frames} frames, {true} true faces, {found} found")  # fmt: skip
    for name, seconds in times.items():
        tries = ", ".join(f"{s:.1f}" for s in seconds)
        print(f"{name:>22}: {args.frames / min(seconds):5.2f} frames/s (best of {tries} s)")
    print(f"tracks: {len({t for frame in predicted for t, _ in frame})} ids, ID switches {id_switches(matches)}, "
          f"IDF1 {idf1(matches, truth, predicted):.3f}")  # fmt: skip
    for name, smoothed in (("raw", False), (f"smoothed ({args.smooth} s)", True)):
        age, flips = jitter(frames, smoothed)
        print(f"{name:>22}: mean |Δage| {age:.2f} years/frame, top-expression flips {flips:.1f} per track-minute")


if __name__ == "__main__":
    main()
