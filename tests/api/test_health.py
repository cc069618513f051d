"""Liveness and readiness (issue 25): live while the process serves, ready only once the first search will be
fast and every part answers; /healthz stays readiness for the probes that use it."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from lookalike.api import health
from lookalike.api.app import create_app, wait_ready
from lookalike.config import Settings
from tests.conftest import MODELS

READY = ("/healthz/ready", "/readyz", "/healthz", "/api/v1/healthz", "/api/v1/healthz/ready")
LIVE = ("/healthz/live", "/livez", "/api/v1/healthz/live")


def test_ready_only_after_the_warm_up_search_live_all_along(settings: Settings, monkeypatch) -> None:
    """Readiness waits for the warm-up search (what the first search needs is loaded before it, e.g. the copy
    descriptor; the keypoint index of earlier versions made the first search take 6.5 s), liveness does not wait for
    anything."""
    release, warmed = threading.Event(), []
    real = health.warm_up

    def slow_warm_up(library) -> None:
        release.wait(60)
        real(library)
        warmed.append(True)

    monkeypatch.setattr(health, "warm_up", slow_warm_up)
    app = create_app(settings.model_copy(update={"models_dir": MODELS}))
    with TestClient(app) as client:
        for path in READY:
            r = client.get(path)
            assert r.status_code == 503 and r.json()["status"] == "loading" and r.headers["retry-after"], path
        for path in LIVE:
            assert client.get(path).status_code == 200, path
        release.set()
        wait_ready(app)
        assert warmed == [True]
        for path in READY:
            r = client.get(path)
            assert r.status_code == 200, (path, r.text)
            assert r.json()["checks"] == {"catalog": "ok", "engine": "ok", "store": "ok", "models": "ok"}
        assert "/api/v1/healthz/ready" in client.get("/openapi.json").json()["paths"]


def test_not_ready_when_the_image_store_cannot_be_written(settings: Settings, tmp_path) -> None:
    """A part that stops answering turns readiness off (and says which), not liveness."""
    store_parent = tmp_path / "not-a-folder"
    store_parent.write_bytes(b"")  # the image store's folder cannot be created under a file
    app = create_app(settings.model_copy(update={"models_dir": MODELS}))
    with TestClient(app) as client:
        wait_ready(app)
        app.state.lookalike.library.images.root = store_parent / "images"
        r = client.get("/healthz/ready")
        assert r.status_code == 503 and r.json()["status"] == "unavailable", r.text
        assert r.json()["checks"]["store"] != "ok" and r.json()["checks"]["catalog"] == "ok"
        assert client.get("/healthz/live").status_code == 200
