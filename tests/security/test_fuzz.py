"""Fuzzing the API from its own OpenAPI document (schemathesis): no input may get a 5xx.

Every operation of the document, requests generated from its schema (valid and invalid), a fixed budget
and a fixed seed so the run fits CI and repeats. The service runs with a library of 12 real photos.
"""

from __future__ import annotations

import contextlib

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from lookalike.api.app import create_app, wait_ready
from lookalike.config import Settings
from lookalike.library import Library
from tests.conftest import MODELS, copy_photos

EXAMPLES = 40


@pytest.fixture(scope="module")
def app(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("fuzz")
    s = Settings(home=root / "lib", models_dir=MODELS, allow_download=False, upload_wait=5)
    lib = Library(s, embedder=embedder)
    lib.index([str(copy_photos(root / "photos", ("goldfish", "tiger_cat", "bullet_train"), 4))])
    application = create_app(s, library=lib)
    wait_ready(application)
    yield application
    lib.close()


def operations(app) -> list:
    return [result.ok() for result in schemathesis.openapi.from_asgi("/openapi.json", app).get_all_operations()]


def fuzz(operation, mode, failures: list, calls: dict) -> None:
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        response = case.call()
        calls[operation.label] = calls.get(operation.label, 0) + 1
        if response.status_code >= 500:
            failures.append((case.method, case.formatted_path, str(case.body)[:200], response.status_code,
                             response.text[:300]))  # fmt: skip

    with contextlib.suppress(Unsatisfiable):  # nothing to break in it (no parameters, no body)
        run()


def test_no_input_gets_a_server_error(app) -> None:
    """Each operation: EXAMPLES generated requests, valid (by the schema) and invalid (negative mode)."""
    from schemathesis import GenerationMode

    failures, calls = [], {}
    for operation in operations(app):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, failures, calls)
    assert not failures, failures
    assert calls.get("POST /api/v1/search", 0) >= EXAMPLES and calls.get("POST /api/v1/images", 0) >= EXAMPLES, calls
    assert len(calls) >= 14, calls
