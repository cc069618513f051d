"""A vector engine that cannot be reached is the engine's fault, never the photo's or the request's: the Milvus and
Elasticsearch clients' connection errors become ``EngineUnavailable`` in one place each (retried by workers, 503 with
Retry-After from the service), while a bad request stays an error. Real clients against a refused loopback port."""

from __future__ import annotations

import socket
import time

import pytest
from fastapi.testclient import TestClient

from lookalike.api.app import create_app
from lookalike.config import Settings
from lookalike.store.errors import EngineUnavailable
from tests.conftest import MODELS, photo


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_milvus_server_is_unavailable(monkeypatch) -> None:
    pytest.importorskip("pymilvus")
    from pymilvus.exceptions import MilvusException, ParamError

    from lookalike.store import milvus

    monkeypatch.setattr(milvus, "CALL_TIMEOUT", 2.0)
    started = time.monotonic()
    with pytest.raises(EngineUnavailable, match="unreachable"):
        milvus.MilvusIndex(f"http://127.0.0.1:{closed_port()}", "photos", 8)
    assert time.monotonic() - started < 30  # bounded by the call timeout, not pymilvus's minutes of retries
    assert not milvus.is_unreachable(ParamError(message="bad metric"))  # a bad request is not an outage
    # what a standalone server answers once its session lease expired (seen after a long freeze): an outage, a 503
    assert milvus.is_unreachable(MilvusException(1, "service not ready[standalone=1]: Abnormal"))
    assert not milvus.is_unreachable(MilvusException(1100, "invalid parameter: limit must be positive"))


def test_an_unreachable_elasticsearch_is_unavailable() -> None:
    pytest.importorskip("elasticsearch")
    from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
    from elasticsearch import ApiError

    from lookalike.store import elastic

    with pytest.raises(EngineUnavailable, match="unreachable"):
        elastic.ElasticsearchIndex(f"http://127.0.0.1:{closed_port()}", "photos", 8)

    def api_error(status: int) -> ApiError:
        meta = ApiResponseMeta(status, "1.1", HttpHeaders(), 0.0, NodeConfig("http", "127.0.0.1", 9200))
        return ApiError("error", meta, {})

    assert elastic.is_unreachable(api_error(503)) and not elastic.is_unreachable(api_error(400))


def test_the_service_waits_for_an_unreachable_engine_and_answers_503(settings: Settings) -> None:
    """A service whose engine is down is live, not ready, and says 503 with Retry-After to a search."""
    pytest.importorskip("elasticsearch")
    backend = f"elasticsearch+http://127.0.0.1:{closed_port()}"
    app = create_app(settings.model_copy(update={"models_dir": MODELS, "vector_backend": backend}))
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and app.state.lookalike.waiting is None:
            time.sleep(0.1)
        assert app.state.lookalike.waiting == "waiting for the vector engine; the service's log has the details"
        assert client.get("/healthz/live").status_code == 200
        ready = client.get("/healthz/ready")
        assert ready.status_code == 503 and ready.headers["retry-after"].isdigit(), ready.text
        with open(photo("goldfish", 0), "rb") as fh:
            r = client.post("/api/v1/search", files={"file": ("q.jpg", fh, "image/jpeg")})
        assert r.status_code == 503 and r.headers["retry-after"].isdigit(), r.text
    # the service's end stops the opener's waiting too (it once retried for the rest of the process's life)
    opener = app.state.lookalike.opener
    opener.join(timeout=60)
    assert not opener.is_alive()
