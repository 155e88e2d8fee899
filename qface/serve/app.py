"""The FastAPI app: routes, JSON errors, the API key, CORS, and the page in `static/`.

    app = create_app(Settings())           # loads the model once; one worker thread runs it (batcher.py)
    run(Settings(port=8000))               # the same under uvicorn, as `qface serve` does

Routes: POST /v1/analyze (one image), POST /v1/analyze/batch (several, a result or an error each), POST /v1/compare
(two images → identity distance), GET /v1/health, GET /v1/model, the page at /, OpenAPI docs at /docs.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, create_model
from starlette.exceptions import HTTPException

from qface.analyzer import SAME_PERSON_THRESHOLD, FaceAnalyzer
from qface.pipeline.detect import DETECTORS, YUNET_MODEL_ENV, get_detector
from qface.pipeline.io import ImageDecodeError, ImageTooLargeError, NotAnImageError, load_image
from qface.pipeline.results import Face
from qface.resources import SAMPLE_IMAGE, model_card_summary
from qface.serve.batcher import Batcher
from qface.serve.errors import ApiError, bad_field, megabytes, too_large
from qface.serve.form import Form, Upload, read_form
from qface.serve.settings import Settings
from qface.tasks import TASKS

STATIC = Path(__file__).resolve().parent / "static"
ALWAYS = ("box", "score", "points", "model")
log = logging.getLogger("qface.serve")


# ---------------------------------------------------------------------------------------------------------------
# Response schemas (for the OpenAPI document; responses are built as plain dicts)


class ErrorBody(BaseModel):
    code: str
    message: str


class AttentionBody(BaseModel):
    grid: int  # each map is grid × grid cells over the aligned face `chip`, row-major, scaled to a maximum of 1
    maps: dict[str, dict[str, list[float]]]  # task → label → map (the last decoder layer, heads averaged)


class FaceWhere(BaseModel):
    box: list[float]
    score: float
    points: list[list[float]]
    model: str
    chip: str | None = None  # with attention: the aligned face the maps lie over, a data: URL (JPEG)
    attention: AttentionBody | None = None


# A face's JSON: where it is, then every task's result fields as the registry declares them (Field kind → type).
FIELD_TYPES = {"labels": dict[str, float], "value": float | str, "points": list[list[float]], "vector": list[float]}
FaceBody = create_model(
    "FaceBody",
    __base__=FaceWhere,
    **{f.name: (FIELD_TYPES[f.kind] | None, None) for task in TASKS.values() for f in task.fields},
)


class AnalyzeBody(BaseModel):
    model: str
    width: int
    height: int
    faces: list[FaceBody]


class BatchItem(BaseModel):
    file: str
    width: int | None = None
    height: int | None = None
    faces: list[FaceBody] | None = None
    error: ErrorBody | None = None


class BatchBody(BaseModel):
    model: str
    results: list[BatchItem]


class CompareBody(BaseModel):
    model: str
    distance: float
    same_person: bool
    threshold: float
    faces: list[FaceBody]  # the largest face of a, then of b


class HealthBody(BaseModel):
    status: str
    model: str
    queue: dict[str, float]
    limits: dict[str, float]


class ModelBody(BaseModel):
    id: str
    name: str
    version: str
    tasks: dict[str, list[str]]  # every label in output order
    detectors: list[str]
    default_detector: str
    card: str | None  # the model card's summary


ERRORS = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "bad image (corrupt or truncated) or malformed form",
        401: "missing or wrong X-API-Key",
        413: "upload, image pixels or file count over its limit",
        415: "not an image, or not multipart/form-data",
        422: "bad field (unknown name, task, detector or value), or no face to compare",
        429: "queue full: retry after Retry-After seconds",
        503: "the request took longer than the request time limit",
    }.items()
}


# ---------------------------------------------------------------------------------------------------------------
# The worker's side: decode, detect, align, one network pass


@dataclass
class ImageJob:
    name: str  # the upload's file name, for messages
    data: bytes
    detector: str


@dataclass
class Analysis:
    width: int
    height: int
    faces: list[Face]


class Engine:
    """What the worker thread runs for a batch of images. Decoding happens here, not in the requests, so at most
    `batch_images` decoded images are in memory at once."""

    def __init__(self, analyzer: FaceAnalyzer, settings: Settings, yunet_model: str | None):
        self.analyzer, self.max_pixels, self.yunet_model = analyzer, settings.max_pixels, yunet_model
        self.detectors: dict = {}  # used by the worker thread only (detectors are not thread-safe)
        self.detector(settings.detector)(load_image(SAMPLE_IMAGE))  # its models load now, not on the first request

    def detector(self, name: str):
        if name not in self.detectors:
            options = {"model": self.yunet_model} if name in ("auto", "yunet") and self.yunet_model else {}
            self.detectors[name] = get_detector(name, **options)
        return self.detectors[name]

    def __call__(self, jobs: list[ImageJob]) -> list[Analysis | Exception]:
        outcomes: list[Analysis | Exception | None] = [None] * len(jobs)
        decoded = []
        for index, job in enumerate(jobs):
            try:
                decoded.append((index, load_image(job.data, max_pixels=self.max_pixels)))
            except ImageDecodeError as error:
                outcomes[index] = image_error(error, job)
        images = [image for _, image in decoded]
        detectors = [self.detector(jobs[index].detector) for index, _ in decoded]
        try:
            results = self.analyzer.analyze_arrays(images, detectors)
        except Exception:  # one image broke the batch: run them one by one so that only that one fails
            results = [self._one(image, detector) for image, detector in zip(images, detectors)]
        for (index, image), faces in zip(decoded, results):
            outcomes[index] = faces if isinstance(faces, Exception) else Analysis(image.shape[1], image.shape[0], faces)
        return outcomes

    def _one(self, image: np.ndarray, detector) -> list[Face] | Exception:
        try:
            return self.analyzer.analyze_arrays([image], [detector])[0]
        except Exception as error:
            log.exception("analysis of one image failed")
            return error


def image_error(error: ImageDecodeError, job: ImageJob) -> ApiError:
    message = str(error).replace(f"<{len(job.data)} bytes>", job.name or "the upload", 1)  # load_image's name
    if isinstance(error, ImageTooLargeError):
        return ApiError(413, "too_large", message)
    if isinstance(error, NotAnImageError):
        return ApiError(415, "not_an_image", message)
    return ApiError(400, "bad_image", message)


# ---------------------------------------------------------------------------------------------------------------
# Requests → jobs, analyses → JSON


@dataclass
class Options:
    tasks: list[str]
    detector: str
    attention: bool


def parse_options(form: Form, files: dict[str, int], tasks: list[str], detectors: list[str], default: str) -> Options:
    """The fields of an analysis form, checked (422 for anything unknown, missing or malformed). `files`: the file
    fields this endpoint takes and how many of each."""
    unknown = sorted(form.fields.keys() - {"tasks", "detector", "attention"}) + sorted(
        {upload.name for upload in form.files} - files.keys()
    )
    if unknown:
        takes = ", ".join([*files, "tasks", "detector", "attention"])
        raise bad_field(f"unknown field {unknown[0]!r}; this endpoint takes {takes}")
    for name, most in files.items():
        count = sum(upload.name == name for upload in form.files)
        if count == 0:
            raise bad_field(f"missing the file field {name!r}")
        if count > most:
            raise bad_field(f"give one file as {name!r}, not {count} (POST /v1/analyze/batch takes several)")
    chosen = form.fields.get("tasks", "").replace(",", " ").split() or tasks
    for task in chosen:
        if task not in tasks:
            raise bad_field(f"unknown task {task!r}; this model has {', '.join(tasks)}")
    detector = form.fields.get("detector", "") or default
    if detector not in detectors:
        raise bad_field(f"unknown or unavailable detector {detector!r}; this server has {', '.join(detectors)}")
    attention = form.fields.get("attention", "false").strip().lower()
    if attention not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise bad_field(f"attention must be true or false, got {attention!r}")
    return Options([t for t in tasks if t in chosen], detector, attention in ("true", "1", "yes", "on"))


def face_json(face: Face, options: Options) -> dict[str, Any]:
    """Face.to_dict() limited to the asked tasks; with attention, the aligned face and every label's map."""
    full = face.to_dict()
    keep = set(ALWAYS) | {f.name for task in options.tasks for f in TASKS[task].fields}
    result = {key: value for key, value in full.items() if key in keep}
    if options.attention and face.attention and face.chip is not None:
        result["chip"] = jpeg_data_url(face.chip)
        result["attention"] = attention_json(face, options.tasks)
    return result


def attention_json(face: Face, tasks: list[str]) -> dict[str, Any]:
    maps, grid = {}, 0
    for task in tasks:
        if task in face.attention:
            last = face.attention[task][-1]  # (labels, grid²)
            scaled = last / np.maximum(last.max(axis=1, keepdims=True), 1e-12)
            grid = round(last.shape[1] ** 0.5)
            maps[task] = dict(zip(TASKS[task].labels, np.round(scaled, 3).tolist()))
    return {"grid": grid, "maps": maps}


def jpeg_data_url(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def analysis_json(analysis: Analysis, options: Options) -> dict[str, Any]:
    return {
        "width": analysis.width,
        "height": analysis.height,
        "faces": [face_json(face, options) for face in analysis.faces],
    }


def form_schema(files: dict[str, str], batch: bool = False, detectors: list[str] | None = None) -> dict:
    """The OpenAPI request body of an analysis form (the form is parsed by hand: see form.py)."""
    binary = {"type": "string", "format": "binary"}
    properties: dict[str, Any] = {
        name: ({"type": "array", "items": binary} if batch else binary) | {"description": text}
        for name, text in files.items()
    }
    properties["detector"] = {"type": "string", "enum": detectors, "description": "the face detector"}
    if "file" in files or batch:
        properties["tasks"] = {"type": "string", "description": "tasks to return, comma-separated (default: all)"}
        properties["attention"] = {"type": "boolean", "description": "add the aligned face and its attention maps"}
    schema = {"type": "object", "required": list(files), "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


# ---------------------------------------------------------------------------------------------------------------
# The app


def create_app(settings: Settings | None = None, analyzer: FaceAnalyzer | None = None) -> FastAPI:
    """The service around one model: `analyzer` (for tests that share one) or the model of `settings.weights`."""
    settings = settings or Settings()
    analyzer = analyzer or FaceAnalyzer(settings.weights, attention=True)
    analyzer.keep_attention = True
    model = analyzer.model
    yunet_model = str(settings.detector_model or os.environ.get(YUNET_MODEL_ENV) or "") or None
    detectors = ["auto", *(name for name in DETECTORS if name != "yunet" or yunet_model)]
    if settings.detector not in detectors:
        raise ValueError(f"detector {settings.detector!r} is not available here; choose one of {detectors}")
    tasks = list(analyzer.tasks)
    batcher = Batcher(Engine(analyzer, settings, yunet_model), settings.queue_size, settings.batch_images)

    async def lifespan(app: FastAPI):
        yield
        batcher.close()

    app = FastAPI(
        title="qface",
        version=model.config.version,
        description="Multi-task face analysis (Task-adaptive Q-Face). Every error is JSON {code, message}.",
        lifespan=lifespan,
    )
    app.state.batcher, app.state.settings = batcher, settings
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key"],
        )  # fmt: skip

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), error.status, error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return JSONResponse({"code": code, "message": str(error.detail)}, error.status_code, error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(bad_field(str(error.errors())).body(), 422)

    guard = []
    if settings.api_key:
        header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the key `qface serve` was given")

        async def check_key(key: str | None = Depends(header)) -> None:
            if not key or not hmac.compare_digest(key.encode(), settings.api_key.encode()):
                raise ApiError(401, "unauthorized", "missing or wrong X-API-Key header")

        guard = [Depends(check_key)]

    async def run_analysis(request: Request, files: dict[str, int]) -> tuple[list[Upload], Options, list[Any]]:
        """Admission, the form, its checks and the worker's outcomes, all within the request time limit."""
        try:
            async with asyncio.timeout(settings.request_timeout):
                with batcher.admit():
                    form = await read_form(
                        request, settings.max_file_bytes, settings.max_files, settings.max_request_bytes
                    )
                    options = parse_options(form, files, tasks, detectors, settings.detector)
                    uploads, limit = form.files, settings.max_file_bytes
                    jobs = [ImageJob(u.filename, bytes(u.data), options.detector) for u in uploads if u.size <= limit]
                    outcomes = iter(await batcher.run(jobs))
                    results = [next(outcomes) if u.size <= limit else file_too_large(u, settings) for u in uploads]
                    return uploads, options, results
        except TimeoutError:
            raise ApiError(
                503,
                "timeout",
                f"the request took longer than the limit of {settings.request_timeout:g} s; retry later",
                {"Retry-After": str(batcher.retry_after())},
            ) from None

    @app.post("/v1/analyze", response_model=AnalyzeBody, responses=ERRORS, dependencies=guard,
              openapi_extra=form_schema({"file": "the image"}, detectors=detectors))  # fmt: skip
    async def analyze(request: Request) -> JSONResponse:
        """One image → its faces, as Face.to_dict() (README, "Use"), with the image size and the model id."""
        _, options, (outcome,) = await run_analysis(request, {"file": 1})
        if isinstance(outcome, Exception):
            raise as_api_error(outcome)
        return JSONResponse({"model": model.model_id, **analysis_json(outcome, options)})

    @app.post("/v1/analyze/batch", response_model=BatchBody, responses=ERRORS, dependencies=guard,
              openapi_extra=form_schema({"files": "the images"}, batch=True, detectors=detectors))  # fmt: skip
    async def analyze_batch(request: Request) -> JSONResponse:
        """Several images (up to the files limit) → one result or one error per file, in order."""
        uploads, options, outcomes = await run_analysis(request, {"files": settings.max_files})
        results = []
        for upload, outcome in zip(uploads, outcomes):
            if isinstance(outcome, Exception):
                results.append({"file": upload.filename, "error": as_api_error(outcome).body()})
            else:
                results.append({"file": upload.filename, **analysis_json(outcome, options)})
        return JSONResponse({"model": model.model_id, "results": results})

    @app.post("/v1/compare", response_model=CompareBody, responses=ERRORS, dependencies=guard,
              openapi_extra=form_schema({"a": "a photo", "b": "another photo"}, detectors=detectors))  # fmt: skip
    async def compare(request: Request) -> JSONResponse:
        """Two images → the identity distance between their largest faces, and whether they are the same person."""
        if "identity" not in tasks:
            raise bad_field(f"model {model.model_id} has no identity task to compare faces with")
        uploads, options, outcomes = await run_analysis(request, {"a": 1, "b": 1})
        by_name = {upload.name: outcome for upload, outcome in zip(uploads, outcomes)}
        faces = []
        for name in ("a", "b"):
            outcome = by_name[name]
            if isinstance(outcome, Exception):
                error = as_api_error(outcome)
                raise ApiError(error.status, error.code, f"image {name}: {error.message}")
            if not outcome.faces:
                raise ApiError(422, "no_face", f"no face found in image {name}")
            faces.append(max(outcome.faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
        verdict = analyzer.compare(*faces, threshold=SAME_PERSON_THRESHOLD)
        shown = Options(["identity"], options.detector, False)
        return JSONResponse({"model": model.model_id, **verdict, "faces": [face_json(f, shown) for f in faces]})

    @app.get("/v1/health", response_model=HealthBody)
    async def health() -> dict[str, Any]:
        """Liveness, the queue's state and every limit (open without the API key, for load balancers)."""
        return {"status": "ok", "model": model.model_id, "queue": batcher.stats(), "limits": settings.limits()}

    @app.get("/v1/model", response_model=ModelBody, responses={401: ERRORS[401]}, dependencies=guard)
    async def model_info() -> dict[str, Any]:
        """The model: every label in output order, the detectors on offer and the model card's summary."""
        return {
            "id": model.model_id,
            "name": model.config.name,
            "version": model.config.version,
            "tasks": {t.name: list(t.labels) if t.uses_queries else [] for t in model.tasks if t.name in tasks},
            "detectors": detectors,
            "default_detector": settings.detector,
            "card": model_card_summary(settings.weights),
        }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


PAGE_POLICY = "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; object-src 'none'"


def file_too_large(upload: Upload, settings: Settings) -> ApiError:
    return too_large(f"{upload.filename or upload.name}: {megabytes(upload.size)} is over the limit of "
                     f"{megabytes(settings.max_file_bytes)} per file")  # fmt: skip


def as_api_error(outcome: Exception) -> ApiError:
    if isinstance(outcome, ApiError):
        return outcome
    return ApiError(500, "internal", f"the analysis failed ({type(outcome).__name__}); see the server's log")


def run(settings: Settings) -> int:
    """`qface serve`: the app under uvicorn, bound to settings.host (loopback by default)."""
    import uvicorn

    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        log.warning("serving on %s without an API key: anyone who can reach it can use it", settings.host)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=5,
        log_level="info",
    )
    return 0
