"""Issue #24, point 12: anonymous callers learn nothing about the server's folders or its database's messages."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lookalike.api.app import create_app
from lookalike.config import Settings
from lookalike.library import Library
from tests.conftest import MODELS

API = "/api/v1"


def broken(c: TestClient) -> dict:
    deadline = time.monotonic() + 60
    while (r := c.get("/healthz")).json().get("status") == "loading":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert r.status_code == 503
    return r.json()


@pytest.mark.parametrize("fault", ["corrupt catalog", "missing model files"])
def test_a_library_that_cannot_open_is_reported_without_paths_or_messages(tmp_path: Path, fault: str) -> None:
    home, models = tmp_path / "secret-home", tmp_path / "secret-models"
    home.mkdir()
    if fault == "corrupt catalog":
        (home / "catalog.sqlite").write_bytes(b"this is not a database" * 100)
    settings = Settings(home=home, models_dir=models if fault == "missing model files" else MODELS,
                        allow_download=False)  # fmt: skip
    with TestClient(create_app(settings)) as c:
        health = broken(c)
        stats = c.get(f"{API}/stats")
        assert stats.status_code == 503
        for text in (str(health), stats.text):
            for secret in ("secret-home", "secret-models", "not a database", "sqlite3", str(tmp_path)):
                assert secret not in text, (fault, secret, text)


def test_stats_do_not_show_the_library_folder(tmp_path: Path, embedder) -> None:
    settings = Settings(home=tmp_path / "secret-home", models_dir=MODELS, allow_download=False)
    with Library(settings, embedder=embedder) as lib, TestClient(create_app(settings, library=lib)) as c:
        r = c.get(f"{API}/stats")
        assert r.status_code == 200 and "secret-home" not in r.text and r.json()["images"] == 0
