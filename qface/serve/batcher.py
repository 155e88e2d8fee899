"""A bounded queue in front of one worker thread that owns the model and runs waiting requests together.

Why one thread: the model and the detectors are not thread-safe, and on a CPU one network pass over many faces is
cheaper than many passes over one (bench/serve_load.md measures it). Requests never touch the model: they hand
their images to the queue and wait on futures. While the worker is busy, new images pile up, and its next pass
takes all of them (up to `batch_images`): no timer, so a lone request is never held back to wait for company.

Admission is bounded: at most `capacity` requests are inside at once (waiting or running); the next is refused at
the door with 429 and a Retry-After estimated from the measured time per image, before its body is read.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from qface.serve.errors import ApiError

log = logging.getLogger("qface.serve")


@dataclass
class _Job:
    item: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class Batcher:
    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], capacity: int, batch_images: int):
        """`run_batch(items) → outcomes` runs in the worker thread: one outcome per item, an exception as a value
        for an item that failed (it must not raise for one bad item)."""
        self.run_batch, self.capacity, self.batch_images = run_batch, capacity, batch_images
        self.admitted = 0  # requests inside now
        self.batches = self.images = self.largest_batch = 0
        self.seconds_per_image = 0.5  # a first guess for Retry-After, replaced by measurements
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="qface-batcher", daemon=True)
        self._thread.start()

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place for one request, or raise 429 when all `capacity` places are taken."""
        with self._lock:
            if self.admitted >= self.capacity:
                raise ApiError(
                    429,
                    "busy",
                    f"the server is busy ({self.capacity} requests in progress, the queue's limit); retry later",
                    {"Retry-After": str(self.retry_after())},
                )
            self.admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self.admitted -= 1

    def retry_after(self) -> int:
        """Seconds until the images waiting now are likely done (1 to 60)."""
        return min(60, max(1, math.ceil(self._jobs.qsize() * self.seconds_per_image)))

    async def run(self, items: list[Any]) -> list[Any]:
        """Queue the items and wait for their outcomes. If the caller is cancelled (request timeout), items not yet
        started are skipped by the worker."""
        loop = asyncio.get_running_loop()
        jobs = [_Job(item, loop.create_future(), loop) for item in items]
        for job in jobs:
            self._jobs.put(job)
        try:
            return list(await asyncio.gather(*(job.future for job in jobs)))
        finally:
            for job in jobs:
                job.future.cancel()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)

    def stats(self) -> dict[str, int | float]:
        return {
            "in_progress": self.admitted,
            "capacity": self.capacity,
            "waiting_images": self._jobs.qsize(),
            "batches": self.batches,
            "images": self.images,
            "largest_batch": self.largest_batch,
            "seconds_per_image": round(self.seconds_per_image, 4),
        }

    def _take(self) -> list[_Job] | None:
        """Block for one job, then take whatever else is waiting (up to batch_images); None: closed."""
        first = self._jobs.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.batch_images:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:  # closing: finish this batch, stop at the next take
                self._jobs.put(None)
                break
            batch.append(job)
        return [job for job in batch if not job.future.cancelled()]

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            start = time.perf_counter()
            try:
                outcomes = self.run_batch([job.item for job in batch])
            except Exception as error:  # a bug must fail these requests, not kill the worker
                log.exception("batch of %d images failed", len(batch))
                outcomes = [error] * len(batch)
            seconds = (time.perf_counter() - start) / len(batch)
            self.seconds_per_image = 0.8 * self.seconds_per_image + 0.2 * seconds
            self.batches, self.images = self.batches + 1, self.images + len(batch)
            self.largest_batch = max(self.largest_batch, len(batch))
            for job, outcome in zip(batch, outcomes, strict=True):
                try:
                    job.loop.call_soon_threadsafe(_settle, job.future, outcome)
                except RuntimeError:  # that request's event loop is gone: nobody waits for this outcome
                    pass


def _settle(future: asyncio.Future, outcome: Any) -> None:
    if not future.done():  # cancelled meanwhile (request timeout)
        future.set_result(outcome)
