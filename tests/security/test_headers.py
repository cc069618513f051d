"""Web review, findings 2 and 3: every answer of the service refuses to be framed (clickjacking) or sniffed, the
page allows only its own script, and answers behind a read key are not kept by caches."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lookalike.config import Settings
from lookalike.library import Library
from tests.security.serving import client_for

API = "/api/v1"
KEY = "h" * 32
EVERY = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


@pytest.fixture
def lib(settings: Settings, embedder, photo_dir: Path):
    with Library(settings, embedder=embedder) as library:
        library.index([str(photo_dir)])
        yield library


def requests(image_id: int) -> list[tuple[str, str, dict | None]]:
    """One request of each kind of answer: the page, its script, JSON, photos, documents, errors."""
    return [
        ("GET", "/", None), ("HEAD", "/", None), ("GET", "/static/app.js", None), ("GET", f"{API}/stats", None),
        ("GET", f"{API}/images", None), ("GET", f"{API}/images/{image_id}", None),
        ("GET", f"{API}/images/{image_id}/thumbnail", None), ("GET", f"{API}/images/{image_id}/original", None),
        ("POST", f"{API}/search", {"image_id": image_id}), ("GET", "/docs", None), ("GET", "/redoc", None),
        ("GET", "/openapi.json", None), ("GET", "/docs-assets/swagger-ui.css", None), ("GET", "/metrics", None),
        ("GET", "/healthz", None), ("GET", f"{API}/images/999999", None), ("GET", "/no/such/path", None),
        ("POST", f"{API}/search", {"image_id": "x"}), ("PUT", f"{API}/stats", None),
    ]  # fmt: skip


def test_every_answer_refuses_framing_and_sniffing(lib) -> None:
    image_id = int(lib.catalog.ids()[0])
    with client_for(lib) as c:
        for method, path, body in requests(image_id):
            r = c.request(method, path, json=body)
            assert r.status_code < 500, (method, path, r.status_code)
            for name, value in EVERY.items():
                assert r.headers.get(name) == value, (method, path, name, r.headers.get(name))
            policy = r.headers.get("content-security-policy", "")
            assert "frame-ancestors 'none'" in policy, (method, path, policy)
            assert len(r.headers.get_list("content-security-policy")) == 1, (method, path)  # one policy, not two
            if path == "/":
                continue
            # the API documents run inline scripts (Swagger UI, ReDoc): no script-src but on the page
            assert policy == "frame-ancestors 'none'", (method, path, policy)


def test_the_page_runs_only_its_own_script(lib) -> None:
    with client_for(lib) as c:
        r = c.get("/")
    directives = {d.strip().split()[0]: d.strip().split()[1:] for d in r.headers["content-security-policy"].split(";")}
    assert directives == {
        "frame-ancestors": ["'none'"], "script-src": ["'self'"], "object-src": ["'none'"], "base-uri": ["'none'"],
        "form-action": ["'self'"],
    }  # fmt: skip
    assert "img-src" not in directives and "default-src" not in directives  # photos may come from a bucket's URL
    assert r.headers["cache-control"] == "no-cache"  # the page's own headers stay
    page = r.text
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="/static/app.js">']  # no inline script
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", page, re.IGNORECASE)  # no inline handler
    assert not re.search(r"javascript:", page, re.IGNORECASE)


def test_keyed_answers_are_not_cached_but_photos_keep_theirs(lib) -> None:
    image_id = int(lib.catalog.ids()[0])
    key = {"X-API-Key": KEY}
    with client_for(lib, api_key=KEY, api_key_for_reads=True) as c:
        for path in (f"{API}/stats", f"{API}/images", f"{API}/images/{image_id}", "/openapi.json", "/docs",
                     "/metrics", f"{API}/images/999999"):  # fmt: skip
            r = c.get(path, headers=key)
            assert r.headers.get("cache-control") == "no-store", (path, r.headers.get("cache-control"))
        assert c.get(f"{API}/stats").headers["cache-control"] == "no-store"  # the 401 too
        r = c.post(f"{API}/search", json={"image_id": image_id}, headers=key)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        for path in (f"{API}/images/{image_id}/thumbnail", f"{API}/images/{image_id}/original"):
            assert c.get(path, headers=key).headers["cache-control"] == "private, max-age=31536000, immutable"
        assert c.get("/").headers["cache-control"] == "no-cache"
        assert "no-store" not in c.get("/static/app.js").headers.get("cache-control", "")  # public files: cacheable
    with client_for(lib, api_key=KEY, api_key_for_reads=False) as c:  # reads open: nothing secret to keep out
        assert "cache-control" not in c.get(f"{API}/stats").headers
    with client_for(lib) as c:
        assert "cache-control" not in c.get(f"{API}/stats").headers
        r = c.get(f"{API}/images/{image_id}/thumbnail")
        assert r.headers["cache-control"].startswith("public")  # unchanged without a key
