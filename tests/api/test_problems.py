"""Errors that say a request cannot be served as asked are 422 problem details, each with its title."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lookalike.api import problems
from lookalike.errors import LibraryError
from lookalike.fields import FieldError
from lookalike.filters import FilterError
from lookalike.store.payload import UnsupportedFilter


@pytest.mark.parametrize(("error", "title"), [
    (FieldError, "Invalid fields"), (FilterError, "Invalid filter"), (UnsupportedFilter, "Filter not supported"),
    (LibraryError, "Request cannot be served")])  # fmt: skip
def test_unprocessable_errors_are_422_with_their_title(error: type[Exception], title: str) -> None:
    app = FastAPI()
    problems.install(app)

    @app.get("/boom")
    def boom() -> None:
        raise error("the reason")

    response = TestClient(app).get("/boom")
    assert response.status_code == 422 and response.headers["content-type"] == problems.PROBLEM
    assert response.json() == {"type": "about:blank", "title": title, "status": 422, "detail": "the reason",
                               "instance": "/boom"}  # fmt: skip
