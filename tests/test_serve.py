"""The REST API through its ASGI app, with the real model and detector: the schema, every error code and limit,
the API key, CORS, no upload on disk, and concurrent requests batched with the same results as sequential ones."""

from __future__ import annotations

import asyncio
import io
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[test]')")
import httpx  # noqa: E402

from qface.analyzer import FaceAnalyzer  # noqa: E402
from qface.cli import main  # noqa: E402
from qface.resources import SAMPLE_IMAGE  # noqa: E402
from qface.serve.app import create_app  # noqa: E402
from qface.serve.settings import Settings  # noqa: E402
from qface.tasks import TASKS  # noqa: E402

ASTRONAUT = SAMPLE_IMAGE.read_bytes()


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer(detector="dlib-hog", attention=True)


@pytest.fixture(scope="module")
def app(analyzer):
    return make_app(analyzer)


def make_app(analyzer, **settings):
    return create_app(Settings(detector="dlib-hog", **settings), analyzer)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def send(app, *requests: dict) -> list[httpx.Response]:
    """Send the requests (keyword arguments of httpx's `request`) concurrently to the app; responses in order."""

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client:
            return await asyncio.gather(*(client.request(**request) for request in requests))

    return asyncio.run(go())


def analyze(data: bytes = ASTRONAUT, name: str = "photo.png", path: str = "/v1/analyze", **fields) -> dict:
    return {"method": "POST", "url": path, "files": {"file": (name, data, "image/png")}, "data": fields}


def raw(content: bytes, content_type: str = "multipart/form-data; boundary=x", **headers: str) -> dict:
    """A POST /v1/analyze with this body as it is (for malformed and oversized forms)."""
    headers = {"content-type": content_type, **headers}
    return {"method": "POST", "url": "/v1/analyze", "content": content, "headers": headers}


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == code
    return body["message"]


def test_analyze_gives_face_to_dict_with_the_image_size_and_model(app, analyzer):
    (response,) = send(app, analyze())
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == analyzer.model.model_id and (body["width"], body["height"]) == (512, 512)
    expected = [face.to_dict() for face in analyzer.analyze(ASTRONAUT)]
    assert len(body["faces"]) == len(expected) >= 1
    for got, want in zip(body["faces"], expected):
        assert got.keys() == want.keys()
        assert got["top_expression"] == want["top_expression"]
        assert np.allclose(got["box"], want["box"]) and got["age"] == pytest.approx(want["age"], abs=0.05)


def test_tasks_limit_the_fields_and_attention_adds_the_chip_and_every_label_map(app):
    (plain, chosen) = send(app, analyze(tasks="age"), analyze(tasks="expression, pose", attention="true"))
    face = plain.json()["faces"][0]
    assert set(face) == {"box", "score", "points", "model", "age"}
    face = chosen.json()["faces"][0]
    assert set(face) == {"box", "score", "points", "model", "expression", "top_expression", "pose", "chip", "attention"}
    assert face["chip"].startswith("data:image/jpeg;base64,")
    maps, grid = face["attention"]["maps"], face["attention"]["grid"]
    assert list(maps) == ["expression", "pose"] and list(maps["expression"]) == list(TASKS["expression"].labels)
    for values in maps["expression"].values():
        assert len(values) == grid * grid and max(values) == pytest.approx(1.0)


def test_the_openapi_schema_documents_every_route_form_and_error(app):
    (response,) = send(app, {"method": "GET", "url": "/openapi.json"})
    schema = response.json()
    assert {"/v1/analyze", "/v1/analyze/batch", "/v1/compare", "/v1/health", "/v1/model"} <= set(schema["paths"])
    analyze_op = schema["paths"]["/v1/analyze"]["post"]
    form = analyze_op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"] and set(form["properties"]) == {"file", "tasks", "detector", "attention"}
    assert {"200", "400", "413", "415", "422", "429", "503"} <= set(analyze_op["responses"])
    (docs,) = send(app, {"method": "GET", "url": "/docs"})
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_model_lists_every_label_in_output_order_and_health_every_limit(app, analyzer):
    model, health = send(app, {"method": "GET", "url": "/v1/model"}, {"method": "GET", "url": "/v1/health"})
    body = model.json()
    assert body["id"] == analyzer.model.model_id
    assert body["tasks"]["attributes"] == list(TASKS["attributes"].labels) and body["tasks"]["identity"] == []
    assert "dlib-hog" in body["detectors"] and "Summary" not in body["card"] and "FER2013" in body["card"]
    limits = health.json()["limits"]
    assert limits["max_file_bytes"] == 10 * 2**20 and limits["max_pixels"] == 50_000_000 and limits["max_files"] == 8


@pytest.mark.parametrize(
    "request_, status, code",
    [
        (analyze(ASTRONAUT[:2000]), 400, "bad_image"),  # a truncated PNG
        (analyze(b"just some text", "notes.txt"), 415, "not_an_image"),
        (analyze(b"", "empty.png"), 415, "not_an_image"),
        (raw(ASTRONAUT, "image/png"), 415, "unsupported_media_type"),
        (raw(b"--x\r\nnonsense"), 400, "bad_request"),
        (analyze(tasks="expression,wisdom"), 422, "bad_field"),
        (analyze(detector="crystal-ball"), 422, "bad_field"),
        (analyze(detector="yunet"), 422, "bad_field"),  # no YuNet model given to this server
        (analyze(attention="maybe"), 422, "bad_field"),
        (analyze(colour="blue"), 422, "bad_field"),
        (
            {"method": "POST", "url": "/v1/analyze", "data": {"tasks": "age"}, "files": {"x": ("a", b"1")}},
            422,
            "bad_field",
        ),  # fmt: skip
        (
            {
                "method": "POST",
                "url": "/v1/analyze",
                "files": [("file", ("a.png", ASTRONAUT)), ("file", ("b.png", b"1"))],
            },
            422,
            "bad_field",
        ),  # fmt: skip
        ({"method": "GET", "url": "/v1/nothing"}, 404, "not_found"),
        ({"method": "GET", "url": "/v1/analyze"}, 405, "method_not_allowed"),
    ],
)
def test_every_refusal_is_json_with_its_status_and_code(app, request_, status, code):
    (response,) = send(app, request_)
    error_of(response, status, code)


def test_every_size_limit_is_enforced(analyzer):
    small = make_app(analyzer, max_file_bytes=100_000, max_pixels=200_000, max_files=2)
    noise = png(np.random.default_rng(0).integers(0, 256, (200, 200, 3), np.uint8))  # 120 kB, 40,000 pixels
    three = {"method": "POST", "url": "/v1/analyze/batch",
             "files": [("files", (f"{i}.png", ASTRONAUT[:10])) for i in range(3)]}  # fmt: skip
    declared = raw(b"x", **{"content-length": "999999999"})
    streamed = raw(b"--x\r\n" + b"a" * (small.state.settings.max_request_bytes + 10))
    file_bytes, pixels, files, too_long, too_long_streamed = send(
        small, analyze(noise), analyze(png(np.zeros((500, 500, 3), np.uint8))), three, declared, streamed
    )
    assert "is over the limit of 100,000 bytes per file" in error_of(file_bytes, 413, "too_large")
    assert "megapixels exceeds the limit" in error_of(pixels, 413, "too_large")  # refused before decoding
    assert "more than 2 files" in error_of(files, 413, "too_large")
    error_of(too_long, 413, "too_large")
    error_of(too_long_streamed, 413, "too_large")


def test_a_batch_gives_a_result_or_an_error_per_file_in_order(app):
    files = [("files", ("a.png", ASTRONAUT)), ("files", ("b.txt", b"text")), ("files", ("c.png", ASTRONAUT))]
    (response,) = send(app, {"method": "POST", "url": "/v1/analyze/batch", "files": files, "data": {"tasks": "age"}})
    results = response.json()["results"]
    assert [r["file"] for r in results] == ["a.png", "b.txt", "c.png"]
    assert results[1]["error"]["code"] == "not_an_image" and "faces" not in results[1]
    assert results[1]["error"]["message"].startswith("b.txt: not an image")
    assert results[0]["faces"] == results[2]["faces"] and set(results[0]["faces"][0]) >= {"age"}


def test_compare_finds_the_same_person_in_a_mirror_image_and_refuses_a_picture_without_a_face(app):
    mirrored = png(np.asarray(Image.open(io.BytesIO(ASTRONAUT)).convert("RGB"))[:, ::-1].copy())
    blank = png(np.full((200, 200, 3), 128, np.uint8))
    same, no_face = send(
        app,
        {"method": "POST", "url": "/v1/compare", "files": {"a": ("a.png", ASTRONAUT), "b": ("b.png", mirrored)}},
        {"method": "POST", "url": "/v1/compare", "files": {"a": ("a.png", ASTRONAUT), "b": ("b.png", blank)}},
    )
    verdict = same.json()
    assert verdict["same_person"] is True and verdict["distance"] < verdict["threshold"]
    assert len(verdict["faces"]) == 2 and "embedding" in verdict["faces"][0]
    assert "image b" in error_of(no_face, 422, "no_face")


@pytest.mark.slow
def test_a_full_queue_answers_429_with_retry_after(analyzer):
    app = make_app(analyzer, queue_size=1)
    with app.state.batcher.admit():  # one request inside: the queue's one place is taken
        (refused,) = send(app, analyze())
    error_of(refused, 429, "busy")
    assert int(refused.headers["Retry-After"]) >= 1
    statuses = [r.status_code for r in send(app, *[analyze() for _ in range(6)])]  # real contention
    assert 200 in statuses and 429 in statuses and set(statuses) == {200, 429}


def test_a_request_over_the_time_limit_answers_503_and_the_server_goes_on(analyzer):
    app = make_app(analyzer, request_timeout=0.001)
    (response,) = send(app, analyze())
    assert "0.001 s" in error_of(response, 503, "timeout") and "Retry-After" in response.headers
    (health,) = send(app, {"method": "GET", "url": "/v1/health"})
    assert health.json()["queue"]["in_progress"] == 0


def test_the_api_key_guards_the_api_but_not_health_or_the_page(analyzer):
    app = make_app(analyzer, api_key="s3cret")
    missing, wrong, right, health, page, model = send(
        app,
        analyze(),
        {**analyze(), "headers": {"X-API-Key": "guess"}},
        {**analyze(), "headers": {"X-API-Key": "s3cret"}},
        {"method": "GET", "url": "/v1/health"},
        {"method": "GET", "url": "/"},
        {"method": "GET", "url": "/v1/model"},
    )
    error_of(missing, 401, "unauthorized")
    error_of(wrong, 401, "unauthorized")
    error_of(model, 401, "unauthorized")
    assert right.status_code == 200 and health.status_code == 200 and page.status_code == 200


def test_cors_is_off_by_default_and_on_for_the_listed_origins(app, analyzer):
    preflight = {"method": "OPTIONS", "url": "/v1/analyze",
                 "headers": {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}}  # fmt: skip
    (closed,) = send(app, preflight)
    assert "access-control-allow-origin" not in closed.headers
    (opened,) = send(make_app(analyzer, cors_origins=("https://example.org",)), preflight)
    assert opened.headers["access-control-allow-origin"] == "https://example.org"


@pytest.mark.slow
def test_uploads_are_never_written_to_disk(app, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an upload went to a temporary file")

    for name in ("TemporaryFile", "SpooledTemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    large = png(np.random.default_rng(1).integers(0, 256, (1000, 1200, 3), np.uint8))  # 3.6 MB
    assert len(large) > 3 * 2**20
    (response,) = send(app, analyze(large))
    assert response.status_code == 200 and response.json()["width"] == 1200


@pytest.mark.slow
def test_concurrent_requests_are_batched_and_give_the_same_results_as_sequential_ones(analyzer):
    app = make_app(analyzer)
    photo = np.asarray(Image.open(io.BytesIO(ASTRONAUT)).convert("RGB"))
    variants = [photo, photo[:, ::-1], photo[40:480, 30:470], np.rot90(photo, -1), photo[::2, ::2], 255 - photo]
    requests = [analyze(png(np.ascontiguousarray(v)), tasks="expression,age,pose,landmarks") for v in variants]
    sequential = [send(app, request)[0].json() for request in requests]
    assert app.state.batcher.largest_batch == 1
    concurrent = [response.json() for response in send(app, *requests)]
    assert app.state.batcher.largest_batch > 1  # they shared a network pass
    assert sum(len(body["faces"]) for body in sequential) >= 5
    for one, other in zip(sequential, concurrent):
        assert len(one["faces"]) == len(other["faces"])
        for a, b in zip(one["faces"], other["faces"]):
            assert a["top_expression"] == b["top_expression"] and a["box"] == b["box"]
            for key in ("expression", "pose"):
                assert a[key] == pytest.approx(b[key], abs=1e-3)
            assert a["age"] == pytest.approx(b["age"], abs=0.02)
            assert np.allclose(a["landmarks"], b["landmarks"], atol=0.05)


def test_the_page_and_its_files_are_served_from_the_package(app):
    page, script, style = send(
        app, *[{"method": "GET", "url": u} for u in ("/", "/static/app.js", "/static/style.css")]
    )
    assert (
        page.status_code == 200
        and 'id="drop"' in page.text
        and "default-src 'self'" in page.headers["content-security-policy"]
    )
    assert "/v1/analyze" in script.text and "http" not in script.text.replace("https or localhost", "")  # no CDN
    assert style.status_code == 200


def test_serve_binds_loopback_by_default_and_names_the_extra_when_fastapi_is_missing(monkeypatch, capsys):
    assert Settings().host == "127.0.0.1" and Settings().cors_origins == () and Settings().api_key is None
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the serve extra were not installed
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == "error: qface serve needs 'fastapi': pip install \"qface[serve]\"\n"
