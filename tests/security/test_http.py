"""The service's defaults against a hostile network client: one test per attack of issue #12."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from lookalike.api.app import create_app
from lookalike.api.security import anonymous_refusal, is_loopback
from lookalike.config import Settings
from lookalike.library import Library
from tests.conftest import photo
from tests.security.serving import client_for
from tests.services import cli, free_port

API = "/api/v1"
KEY = "k" * 32


@pytest.fixture
def lib(settings: Settings, embedder, photo_dir: Path):
    with Library(settings, embedder=embedder) as library:
        library.index([str(photo_dir)])
        yield library



def body_without_instance(r) -> tuple[int, dict]:
    data = r.json()
    data.pop("instance", None)
    return r.status_code, data


def test_server_paths_cannot_be_indexed_without_configured_roots(lib) -> None:
    with client_for(lib) as c:
        for paths in (["/etc"], ["/proc/self"], ["s3://any-bucket/"], [str(photo("goldfish", 0))]):
            r = c.post(f"{API}/jobs/index", json={"paths": paths})
            assert r.status_code == 403 and "LOOKALIKE_SOURCE_ROOTS" in r.json()["detail"], paths
        assert c.get(f"{API}/jobs").json()["jobs"] == []  # nothing was queued


def test_outside_the_roots_an_existing_and_a_missing_path_get_the_same_answer(lib, tmp_path) -> None:
    with client_for(lib, source_roots=[str(tmp_path / "allowed")]) as c:
        a = body_without_instance(c.post(f"{API}/jobs/index", json={"paths": ["/etc/passwd"]}))
        b = body_without_instance(c.post(f"{API}/jobs/index", json={"paths": ["/etc/nope"]}))
        assert a == b and a[0] == 403
        outside_by_link = tmp_path / "allowed"
        outside_by_link.mkdir()
        (outside_by_link / "escape").symlink_to("/etc")
        r = c.post(f"{API}/jobs/index", json={"paths": [str(outside_by_link / "escape")]})
        assert r.status_code == 403  # a link inside a root that leads out of it is outside


def test_search_by_url_takes_http_urls_only_and_reveals_nothing_about_files(lib) -> None:
    with client_for(lib) as c:
        answers = {json.dumps(body_without_instance(c.post(f"{API}/search", json={"url": url})), sort_keys=True)
                   for url in ("/etc/passwd", "/etc/nope", "/etc", "file:///etc/shadow", "/dev/urandom")}  # fmt: skip
        assert len(answers) == 1
        status, data = json.loads(answers.pop())
        assert status == 422 and "http" in data["detail"] and "passwd" not in data["detail"]


def test_serve_on_the_network_without_a_key_refuses_to_start(tmp_path) -> None:
    run = cli(tmp_path / "home", "serve", "--host", "0.0.0.0", "--port", str(free_port()), timeout=60)
    assert run.returncode == 1
    assert "LOOKALIKE_API_KEY" in run.stderr and "--allow-anonymous" in run.stderr
    s = Settings(home=tmp_path)
    assert anonymous_refusal("127.0.0.1", s, False) is None and anonymous_refusal("::1", s, False) is None
    assert anonymous_refusal("192.168.1.5", s, True) is None
    assert anonymous_refusal("192.168.1.5", s.model_copy(update={"api_key": "x"}), False) is None
    assert is_loopback("localhost") and not is_loopback("0.0.0.0") and not is_loopback("example.com")


def test_with_keys_for_reads_every_read_needs_the_key(lib) -> None:
    with client_for(lib, api_key=KEY, api_key_for_reads=True) as c:
        thumb = f"{API}/images/{int(lib.catalog.ids()[0])}/thumbnail"
        for path in ("/metrics", "/openapi.json", "/docs", "/redoc", f"{API}/stats", f"{API}/labels", f"{API}/jobs",
                     thumb):  # fmt: skip
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers={"X-API-Key": "k" * 31 + "x"}).status_code == 401, path  # same length
            assert c.get(path, headers={"X-API-Key": KEY}).status_code == 200, path
        assert c.post(f"{API}/session", headers={"X-API-Key": KEY}).status_code == 204
        assert c.get(thumb).status_code == 200  # the page's read cookie: for reads (thumbnails in <img>) ...
        image_id = int(lib.catalog.ids()[0])
        assert c.delete(f"{API}/images/{image_id}").status_code == 401  # ... never for writes
        assert c.get("/healthz").status_code == 200  # liveness stays open for load balancers
    with client_for(lib, api_key=KEY, api_key_for_reads=True, metrics_public=True) as c:
        assert c.get("/metrics").status_code == 200 and c.get(f"{API}/stats").status_code == 401


def test_the_pages_cookie_holds_a_read_token_never_the_key(lib) -> None:
    """Web review, finding 1: the page put the key itself in a script-set cookie, which every app on the same host
    (cookies ignore ports) received and could write with. Now the service sets an HttpOnly cookie whose token is
    derived from the key: it reads (thumbnails in <img>), never writes, and the old key cookie counts for nothing."""
    image_id = int(lib.catalog.ids()[0])
    thumb, record = f"{API}/images/{image_id}/thumbnail", f"{API}/images/{image_id}"
    with client_for(lib, api_key=KEY, api_key_for_reads=True) as c:
        assert c.post(f"{API}/session").status_code == 401  # the key goes in the header, as for a write
        assert c.post(f"{API}/session", headers={"X-API-Key": "k" * 31 + "x"}).status_code == 401
        assert "set-cookie" not in c.post(f"{API}/session", headers={"X-API-Key": "x"}).headers
        r = c.post(f"{API}/session", headers={"X-API-Key": KEY})
        assert r.status_code == 204, r.text
        cookie = r.headers["set-cookie"]
        name, *rest = (part.strip() for part in cookie.split(";"))
        attributes = {a.split("=")[0].lower(): a.partition("=")[2].lower() for a in rest}
        assert name.startswith("lookalike_read=") and attributes["path"] == "/", cookie
        assert "httponly" in attributes and attributes["samesite"] == "strict", cookie
        assert "secure" not in attributes  # plain http: a Secure cookie would never come back
        token = c.cookies["lookalike_read"]
        assert KEY not in cookie and len(token) == 64 and int(token, 16) >= 0  # hex HMAC-SHA256, not the key
        assert c.get(thumb).status_code == 200 and c.get("/docs").status_code == 200  # reads, /docs included
        assert c.patch(record, json={"fields": {"pwned": True}}).status_code == 401  # never a write
        assert c.delete(record).status_code == 401
        assert c.post(f"{API}/session", headers={"X-API-Key": KEY}).status_code == 204
        assert c.get(thumb, headers={"X-API-Key": "k" * 31 + "x"}).status_code == 401  # a wrong header beats it
        assert c.delete(f"{API}/session").status_code == 204  # the page's key emptied: the cookie is gone
        assert "lookalike_read" not in c.cookies and c.get(thumb).status_code == 401
        c.cookies.set("lookalike_api_key", KEY)  # the key's own cookie, as older pages set it: no longer a key
        assert c.get(thumb).status_code == 401
        c.cookies.clear()
        c.cookies.set("lookalike_read", KEY)  # nor the key in the new cookie
        assert c.get(thumb).status_code == 401
    with client_for(lib, api_key=KEY, api_key_for_reads=True) as other:  # a replica with the same key: same token
        r = other.post(f"{API}/session", headers={"X-API-Key": KEY})
        assert other.cookies["lookalike_read"] == token
    with client_for(lib) as c:  # no key: nothing to trade, no cookie
        r = c.post(f"{API}/session")
        assert r.status_code == 204 and "set-cookie" not in r.headers


def test_the_read_cookie_is_secure_over_https(lib) -> None:
    with client_for(lib, api_key=KEY) as c:
        c.base_url = "https://testserver"
        r = c.post(f"{API}/session", headers={"X-API-Key": KEY})
        assert r.status_code == 204 and "secure" in r.headers["set-cookie"].lower().split("; ")


def test_writes_need_the_key_when_one_is_set(lib) -> None:
    for reads in (True, False):
        with client_for(lib, api_key=KEY, api_key_for_reads=reads) as c:
            image_id = int(lib.catalog.ids()[0])
            assert c.delete(f"{API}/images/{image_id}").status_code == 401
            assert c.post(f"{API}/jobs/index", json={"paths": ["https://example.com/x.jpg"]}).status_code == 401
            assert c.post(f"{API}/images", files={"images": ("a.jpg", b"x")}).status_code == 401


def test_a_key_alone_guards_reads_too_unless_the_operator_opens_them(lib) -> None:
    """Hostile probe D2: a key with nothing else set (serve on loopback, or create_app under uvicorn) left every
    read open. Reads need the key unless LOOKALIKE_API_KEY_FOR_READS=0 says otherwise."""
    only_key = Settings(**{**lib.settings.model_dump(exclude={"api_key_for_reads"}), "api_key": KEY})
    assert only_key.api_key_for_reads and "api_key_for_reads" not in only_key.model_fields_set
    image_id = int(lib.catalog.ids()[0])
    reads = (("POST", f"{API}/search", {"image_id": image_id}), ("GET", f"{API}/images", None),
             ("GET", f"{API}/images/{image_id}", None), ("GET", f"{API}/images/{image_id}/original", None),
             ("GET", f"{API}/images/{image_id}/thumbnail", None), ("GET", f"{API}/stats", None),
             ("GET", f"{API}/duplicates", None), ("GET", "/metrics", None), ("GET", "/openapi.json", None),
             ("GET", "/docs", None))  # fmt: skip
    with Library(only_key, embedder=lib.embedder) as served, TestClient(create_app(only_key, library=served)) as c:
        for method, path, body in reads:
            assert c.request(method, path, json=body).status_code in (401, 403), path
            r = c.request(method, path, json=body, headers={"X-API-Key": KEY})
            assert r.status_code == 200, (path, r.status_code, r.text[:200])
    with client_for(lib, api_key=KEY, api_key_for_reads=False) as c:  # the operator's explicit choice
        for method, path, body in reads:
            assert c.request(method, path, json=body).status_code == 200, path


@pytest.mark.parametrize("bad", [2**63, 2**64, 10**30, 0, -1])
def test_out_of_range_ids_are_4xx(lib, bad) -> None:
    with client_for(lib) as c:
        for method, path in (("GET", f"{API}/images/{bad}"), ("GET", f"{API}/images/{bad}/original"),
                             ("GET", f"{API}/images/{bad}/thumbnail"), ("DELETE", f"{API}/images/{bad}"),
                             ("GET", f"{API}/jobs/{bad}"), ("POST", f"{API}/jobs/{bad}/cancel")):  # fmt: skip
            r = c.request(method, path)
            assert r.status_code in (404, 422), (method, path, r.status_code)
        r = c.post(f"{API}/search", json={"image_id": bad})
        assert r.status_code == 422


def test_a_boolean_is_not_an_id(lib) -> None:
    """Web review, finding 5: {"image_id": true} searched with photo 1 (pydantic's lax int reads true as 1)."""
    image_id = int(lib.catalog.ids()[0])
    with client_for(lib) as c:
        for value in (True, False):
            r = c.post(f"{API}/search", json={"image_id": value})
            assert r.status_code == 422 and "an id is a number, not true or false" in r.json()["detail"], r.text
        assert c.post(f"{API}/search", json={"image_id": image_id}).status_code == 200
        assert c.post(f"{API}/search", json={"image_id": str(image_id)}).status_code == 200  # as before


def test_deep_and_huge_json_is_4xx(lib) -> None:
    with client_for(lib) as c:
        for path in (f"{API}/search", f"{API}/jobs/index"):
            for depth in (100_000, 50_000):
                r = c.post(path, content="[" * depth, headers={"content-type": "application/json"})
                assert 400 <= r.status_code < 500, (path, r.status_code)
            r = c.post(path, content='{"paths": ' + "[" * 5000 + "]" * 5000 + "}",
                       headers={"content-type": "application/json"})  # fmt: skip
            assert 400 <= r.status_code < 500, (path, r.status_code)
        big = b"[" + b"1," * (11 * 2**20) + b"1]"  # over the 20 MB body limit
        assert c.post(f"{API}/search", content=big, headers={"content-type": "application/json"}).status_code == 413


def test_a_connection_survives_an_error(lib) -> None:
    """A real server: after a 4xx (and after any error), the same keep-alive connection answers again."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(lib.settings, library=lib), host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started:
            assert time.time() < deadline
            time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for path, body in ((f"{API}/search", "[" * 100_000), (f"{API}/search", '{"image_id": 18446744073709551616}')):
            conn.request("POST", path, body=body, headers={"content-type": "application/json"})
            r = conn.getresponse()
            assert 400 <= r.status < 500
            r.read()
        conn.request("GET", f"{API}/images/9223372036854775808")
        r = conn.getresponse()
        r.read()
        assert r.status in (404, 422)
        lib.stats = lambda: 1 / 0  # a bug: the answer is still JSON, and the connection stays
        conn.request("GET", f"{API}/stats")
        r = conn.getresponse()
        assert r.status == 500 and json.loads(r.read())["title"] == "Internal error"
        conn.request("GET", "/healthz")  # the same connection
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_docs_are_served_from_the_package(lib) -> None:
    """No CDN: the Swagger UI page loads its script and style from this service."""
    with client_for(lib) as c:
        page = c.get("/docs").text
        assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
        assert c.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
        spec = c.get("/openapi.json").json()
        search = spec["paths"][f"{API}/search"]["post"]
        assert {"multipart/form-data", "application/json"} <= set(search["requestBody"]["content"])


def test_a_flood_of_decodes_waits_then_gets_503(lib) -> None:
    """At most max_concurrent_decodes query photos are decoded at once; the rest wait, then 503."""
    with client_for(lib, max_concurrent_decodes=1, decode_wait=0.3) as c:
        served = c.app.state.lookalike.library  # opened with these settings: one decode at a time
        held = served.reader.decodes.acquire()  # another request is decoding
        assert held
        try:
            r = c.post(f"{API}/search", files={"image": ("q.jpg", photo("goldfish", 0).read_bytes())})
            assert r.status_code == 503 and r.headers["retry-after"] == "2"
            assert "LOOKALIKE_MAX_CONCURRENT_DECODES" in r.json()["detail"]
        finally:
            served.reader.decodes.release()
        assert c.post(f"{API}/search", files={"image": ("q.jpg", photo("goldfish", 0).read_bytes())}).status_code == 200


def test_every_operation_documents_its_request_and_response(lib) -> None:
    """The OpenAPI document is complete enough to try every call from /docs (and for the fuzzer)."""
    with client_for(lib) as c:
        spec = c.get("/openapi.json").json()
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            ok = next(code for code in op["responses"] if code.startswith("2"))
            response = op["responses"][ok]
            assert code_documented(response), (method, path)
            if method == "post" and not path.endswith("/cancel"):
                assert "requestBody" in op, (method, path)


def code_documented(response: dict) -> bool:
    if "content" not in response:
        return response.get("description") is not None  # 204
    return all(media.get("schema") or media == {} for media in response["content"].values()) and any(
        media.get("schema", {}).get("$ref") or media.get("schema", {}).get("type") or media == {}
        for media in response["content"].values()
    )
