"""What the HTTP tests share: a service on a library of their own, started per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from lookalike.api.app import create_app
from lookalike.config import Settings
from lookalike.library import Library

OpenClient = Callable[..., TestClient]


@pytest.fixture
def open_client(settings: Settings, embedder) -> Iterator[OpenClient]:
    """``open_client(prepare=None, **settings)``: a started service on a new library with these settings (validated,
    unlike model_copy), ``prepare`` run on the library first; every one stopped and closed after the test."""
    opened: list[tuple[TestClient, Library]] = []

    def make(prepare: Callable[[Library], object] | None = None, **overrides: object) -> TestClient:
        s = Settings(**{**settings.model_dump(), **overrides})
        lib = Library(s, embedder=embedder)
        if prepare is not None:
            prepare(lib)
        client = TestClient(create_app(s, library=lib), raise_server_exceptions=True)
        client.__enter__()
        opened.append((client, lib))
        return client

    yield make
    for client, lib in opened:
        client.__exit__(None, None, None)
        lib.close()
