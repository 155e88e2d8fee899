"""Every limit and switch of `qface serve` in one place, with the command-line flags that set them.

No web framework is imported here: `qface --help` lists the serve flags without FastAPI installed.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path

from qface.pipeline.io import MAX_PIXELS

API_KEY_ENV = "QFACE_API_KEY"
FORM_OVERHEAD = 64 * 1024  # multipart headers and the small text fields around the files of one request


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"  # loopback only unless told otherwise
    port: int = 8000
    weights: Path | None = None  # a model folder; None: the bundled default
    detector: str = "auto"  # what a request without a `detector` field gets
    detector_model: Path | None = None  # YuNet's .onnx file; requests may ask for "yunet" only when given
    api_key: str | None = None  # when set, /v1/* (but /v1/health) needs the header X-API-Key
    cors_origins: tuple[str, ...] = ()  # CORS is off unless origins are listed
    max_file_bytes: int = 10 * 2**20  # one uploaded image
    max_pixels: int = MAX_PIXELS  # width × height, checked from the header before decoding (as the CLI does)
    max_files: int = 8  # images in one /v1/analyze/batch request
    request_timeout: float = 60.0  # seconds for the whole request: upload, waiting in the queue and analysis
    queue_size: int = 16  # analysis requests admitted at once (waiting or running); the next gets 429
    batch_images: int = 8  # images whose faces go through the network together, at most
    max_connections: int = 128  # open connections; uvicorn answers 503 beyond

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and field.name != "port" and value <= 0:
                raise ValueError(f"{field.name} must be positive, got {value}")

    @property
    def max_request_bytes(self) -> int:
        """A request body is cut off with 413 beyond this: its files at their limit plus the form around them."""
        return max(self.max_files, 2) * self.max_file_bytes + FORM_OVERHEAD

    def limits(self) -> dict[str, int | float]:
        """The limits a client may want to know (GET /v1/health shows them; the page checks sizes with them)."""
        names = ("max_file_bytes", "max_pixels", "max_files", "request_timeout", "queue_size", "batch_images")
        return {name: getattr(self, name) for name in names} | {"max_request_bytes": self.max_request_bytes}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    default = Settings()
    parser.add_argument("--host", default=default.host, help="address to bind (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=default.port)
    parser.add_argument("--weights", type=Path, help="a model folder (default: the bundled model)")
    parser.add_argument("--detector", default=default.detector, help="auto (default), dlib-hog, dlib-cnn, yunet, none")
    parser.add_argument("--detector-model", type=Path, help="YuNet's .onnx file (enables the yunet detector)")
    parser.add_argument(
        "--api-key", default=os.environ.get(API_KEY_ENV), help=f"require this X-API-Key header (or ${API_KEY_ENV})"
    )
    parser.add_argument("--cors-origin", action="append", default=[], help="allow this origin (repeatable; off)")
    parser.add_argument("--max-file-mb", type=float, default=default.max_file_bytes / 2**20, help="per image (10)")
    parser.add_argument("--max-pixels", type=int, default=default.max_pixels, help="per image (50,000,000)")
    parser.add_argument("--max-files", type=int, default=default.max_files, help="per batch request (8)")
    parser.add_argument("--timeout", type=float, default=default.request_timeout, help="seconds per request (60)")
    parser.add_argument("--queue-size", type=int, default=default.queue_size, help="requests admitted at once (16)")
    parser.add_argument("--batch-images", type=int, default=default.batch_images, help="images per network pass (8)")
    parser.add_argument("--max-connections", type=int, default=default.max_connections, help="open connections (128)")


def from_args(args: argparse.Namespace) -> Settings:
    return Settings(
        host=args.host,
        port=args.port,
        weights=args.weights,
        detector=args.detector,
        detector_model=args.detector_model,
        api_key=args.api_key or None,
        cors_origins=tuple(args.cors_origin),
        max_file_bytes=round(args.max_file_mb * 2**20),
        max_pixels=args.max_pixels,
        max_files=args.max_files,
        request_timeout=args.timeout,
        queue_size=args.queue_size,
        batch_images=args.batch_images,
        max_connections=args.max_connections,
    )
