"""A test client of a library's service opened with other settings (shared by the security tests)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fastapi.testclient import TestClient

from lookalike.api.app import create_app
from lookalike.config import Settings
from lookalike.library import Library


@contextlib.contextmanager
def client_for(lib: Library, **overrides) -> Iterator[TestClient]:
    """A client of the service of ``lib``'s library opened with these settings (the parts take theirs when opened)."""
    s = Settings(**{**lib.settings.model_dump(), **overrides})
    with Library(s, embedder=lib.embedder) as served, TestClient(create_app(s, library=served)) as client:
        yield client
