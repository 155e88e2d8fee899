"""Load test of `qface serve` on loopback (not part of CI): concurrent clients sending real photos, then a burst that
overfills the queue, then the same load with batching off to see what batching buys.

    nice -n 10 python bench/serve_load.py                       # writes bench/serve_load.md

Reports throughput, p50 / p95 latency, 429s, errors (anything else than 200, or 429 in the burst) and the server's
peak RSS (VmHWM). Each configuration runs in a fresh `qface serve` subprocess.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "celeba" / "img_align_celeba"


class Server:
    """`qface serve` in a subprocess on a free loopback port."""

    def __init__(self, *options: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "qface.cli", "serve", "--port", str(self.port), *options]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.5)
        raise RuntimeError("qface serve did not start")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kilobytes = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
        return kilobytes / 1024

    def queue(self) -> dict:
        return httpx.get(f"{self.url}/v1/health").json()["queue"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def post(client: httpx.Client, url: str, photo: tuple[str, bytes]) -> tuple[int, float]:
    start = time.perf_counter()
    try:
        status = client.post(f"{url}/v1/analyze", files={"file": photo}).status_code
    except httpx.HTTPError:
        status = -1  # a transport error counts as an error
    return status, time.perf_counter() - start


def steady(url: str, photos: list[tuple[str, bytes]], clients: int, requests: int) -> dict:
    """`clients` threads, each sending `requests` photos one after another (keep-alive)."""
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        with httpx.Client(timeout=300) as session:
            for i in range(requests):
                outcome = post(session, url, photos[(number * requests + i) % len(photos)])
                with lock:
                    results.append(outcome)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    latencies = np.array([seconds for status, seconds in results if status == 200])
    return {
        "requests": len(results),
        "seconds": wall,
        "throughput": len(results) / wall,
        "p50": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
        "p95": float(np.percentile(latencies, 95)) if len(latencies) else float("nan"),
        "busy": sum(status == 429 for status, _ in results),
        "errors": sum(status != 200 for status, _ in results),
    }


def burst(url: str, photos: list[tuple[str, bytes]], size: int) -> dict:
    """`size` requests released at the same instant: more than the queue admits."""
    gate = threading.Barrier(size)

    def one(i: int) -> int:
        with httpx.Client(timeout=300) as session:
            gate.wait()
            return post(session, url, photos[i % len(photos)])[0]

    with ThreadPoolExecutor(size) as pool:
        statuses = list(pool.map(one, range(size)))
    return {
        "sent": size,
        "ok": statuses.count(200),
        "busy": statuses.count(429),
        "errors": sum(s not in (200, 429) for s in statuses),
    }


def run(batch_images: int, photos, clients: int, requests: int, burst_size: int | None, queue_size: int) -> dict:
    server = Server("--detector", "dlib-hog", "--batch-images", str(batch_images), "--queue-size", str(queue_size))
    try:
        result = {"batch_images": batch_images, "steady": steady(server.url, photos, clients, requests)}
        result["batches"] = server.queue()
        if burst_size:
            result["burst"] = burst(server.url, photos, burst_size)
        result["peak_rss_mb"] = server.peak_rss_mb()
        return result
    finally:
        server.stop()


def report(runs: list[dict], args, load: tuple[list[float], list[float]], photos: int) -> str:
    before, after = load
    lines = [
        "# `qface serve` under load (bench/serve_load.py)",
        "",
        f"Command: `nice -n 10 python bench/serve_load.py --clients {args.clients} --requests {args.requests} "
        f"--burst {args.burst} --compare-requests {args.compare_requests}`, on loopback, {photos} distinct CelebA "
        f"photos (178×218 JPEG, one face each) sent round-robin to POST /v1/analyze (all tasks, no attention), "
        f"detector dlib-hog, queue size {args.queue_size}.",
        "",
        f"**Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), SHARED with a "
        f"training job and other work** (load average {before[0]:.1f} before, {after[0]:.1f} after): absolute "
        "numbers are lower than on an idle machine; the comparisons ran back to back under the same conditions.",
        "",
        "| run | batch_images | clients × requests | throughput (req/s) | p50 (s) | p95 (s) | 429s | errors | "
        "mean images / network pass | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        s, q = run["steady"], run["batches"]
        lines.append(
            f"| {run['name']} | {run['batch_images']} | {args.clients} × {s['requests'] // args.clients} | "
            f"{s['throughput']:.2f} | {s['p50']:.2f} | {s['p95']:.2f} | {s['busy']} | {s['errors']} | "
            f"{q['images'] / max(q['batches'], 1):.2f} (largest {q['largest_batch']}) | {run['peak_rss_mb']:.0f} |"
        )
    for run in runs:
        if "burst" in run:
            b = run["burst"]
            lines += [
                "",
                f"Burst after the steady load ({run['name']}): {b['sent']} requests released at once against a queue "
                f"of {args.queue_size}: {b['ok']} answered 200, {b['busy']} answered 429 with Retry-After, "
                f"{b['errors']} errors.",
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, default=PHOTOS)
    parser.add_argument("--count", type=int, default=400, help="distinct photos")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="per client, in the main run")
    parser.add_argument("--burst", type=int, default=64)
    parser.add_argument("--queue-size", type=int, default=16)
    parser.add_argument("--compare-requests", type=int, default=50, help="per client, batching on and off")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "serve_load.md")
    args = parser.parse_args()
    files = sorted(args.photos.glob("*.jpg"))[: args.count]
    if not files:
        sys.exit(f"no photos in {args.photos}")
    photos = [(path.name, path.read_bytes()) for path in files]
    before = list(os.getloadavg())
    runs = [{"name": "main", **run(8, photos, args.clients, args.requests, args.burst, args.queue_size)}]
    for batch_images in (8, 1):
        runs.append(
            {
                "name": f"batching {'on' if batch_images > 1 else 'off'}",
                **run(batch_images, photos, args.clients, args.compare_requests, None, args.queue_size),
            }
        )
        print(runs[-1], flush=True)
    text = report(runs, args, (before, list(os.getloadavg())), len(photos))
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
