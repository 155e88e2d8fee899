"""Fuzz the API from its own OpenAPI document (schemathesis): whatever comes in, no 5xx, and every answer matches
the documented status codes, content types and schemas. Bounded: a few dozen examples per route."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install -e '.[test]')")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from qface.serve.app import create_app  # noqa: E402
from qface.serve.settings import Settings  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema():
    app = create_app(Settings(detector="dlib-hog", api_key="fuzz", max_file_bytes=256 * 1024))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    app.state.batcher.close()


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_gives_a_server_error(case):
    case.call_and_validate(headers={"X-API-Key": "fuzz"}, checks=CHECKS, timeout=120)
