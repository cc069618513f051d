"""SSRF: a fetch connects to exactly the address it checked, on every redirect hop, whatever the resolver
says the next time and however the address is spelled. All traffic stays on loopback: 127.0.0.2 plays the
part of a public host (the tests tell the guard to treat it as one)."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from lookalike.ingest import fetch as fetch_mod
from lookalike.ingest.fetch import FetchError, UrlFetcher
from lookalike.library import Library
from tests.security.serving import client_for


class Site:
    def __init__(self, address: str, port: int, body: bytes, redirect_to: str | None = None) -> None:
        self.hits: list[str] = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                site.hits.append(self.path)
                if self.path == "/hop" and redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer((address, port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sites(monkeypatch) -> Iterator[tuple[Site, Site]]:
    """A loopback-only 'secret' on 127.0.0.1:P and a 'public' site on 127.0.0.2:P (same port)."""
    secret = Site("127.0.0.1", 0, b"secret")
    public = Site("127.0.0.2", secret.port, b"public", redirect_to=f"http://127.0.0.1:{secret.port}/x")
    real = fetch_mod.is_internal
    monkeypatch.setattr(fetch_mod, "is_internal", lambda addr: str(addr) != "127.0.0.2" and real(addr))
    yield secret, public
    secret.close()
    public.close()


def fetcher() -> UrlFetcher:
    return UrlFetcher(timeout=3.0, max_bytes=10_000, max_redirects=3, allow_private=False)


def test_a_rebinding_resolver_cannot_reach_loopback(sites, monkeypatch) -> None:
    """The name resolves to the 'public' address when checked and to 127.0.0.1 on every later lookup."""
    secret, public = sites
    real = socket.getaddrinfo
    answers = {"count": 0}

    def rebinding(host, port, *args, **kwargs):
        if host == "rebind.test":
            answers["count"] += 1
            address = "127.0.0.2" if answers["count"] == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    f = fetcher()
    assert f.fetch(f"http://rebind.test:{secret.port}/x") == b"public"
    assert secret.hits == [] and public.hits == ["/x"] and answers["count"] == 1
    f.close()


@pytest.mark.parametrize(
    "spelling",
    [
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "2130706433",
        "0x7f000001",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "127.1",
        "rebind.test@127.0.0.1",
        "user:pw@127.0.0.1",
        "[::1]",
        "0.0.0.0",
    ],  # fmt: skip
)
def test_every_spelling_of_loopback_is_refused(sites, spelling) -> None:
    secret, _ = sites
    f = fetcher()
    with pytest.raises(FetchError, match="refusing|not a valid URL|unreachable"):
        f.fetch(f"http://{spelling}:{secret.port}/x")
    assert secret.hits == []
    f.close()


def test_every_redirect_hop_is_checked(sites) -> None:
    secret, public = sites
    f = fetcher()
    with pytest.raises(FetchError, match="loopback"):
        f.fetch(f"http://127.0.0.2:{public.port}/hop")
    assert public.hits == ["/hop"] and secret.hits == []
    f.close()


def test_only_http_and_https(sites) -> None:
    f = fetcher()
    for url in ("file:///etc/passwd", "ftp://127.0.0.2/x", "gopher://127.0.0.2/x"):
        with pytest.raises(FetchError, match="only http and https|not a valid URL"):
            f.fetch(url)
    f.close()


def test_the_host_header_and_virtual_hosts_still_work(sites, monkeypatch) -> None:
    """Connecting to the pinned address keeps the name in the Host header (virtual hosting)."""
    secret, public = sites
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: real("127.0.0.2" if host == "photos.test"
                                                                               else host, port, *a, **k))  # fmt: skip
    seen = {}
    original = public.server.RequestHandlerClass.do_GET

    def remember(handler) -> None:
        seen["host"] = handler.headers.get("Host")
        original(handler)

    public.server.RequestHandlerClass.do_GET = remember
    f = fetcher()
    assert f.fetch(f"http://photos.test:{public.port}/x") == b"public"
    assert seen["host"] == f"photos.test:{public.port}"
    f.close()


def test_a_refusal_does_not_say_what_a_name_resolves_to(settings, embedder) -> None:
    """Web review, finding 4: the 422 named the internal address a host name resolved to, so any caller allowed
    to search could map internal DNS names to their addresses. It says which kind of address, not which one."""
    assert {info[4][0] for info in socket.getaddrinfo("localhost", 80)} & {"127.0.0.1", "::1"}
    with Library(settings, embedder=embedder) as lib, client_for(lib, url_allow_private=False) as c:
        r = c.post("/api/v1/search", json={"url": "http://localhost:9/x.jpg"})
    detail = r.json()["detail"]
    assert r.status_code == 422 and "localhost resolves to a loopback address" in detail, r.text
    assert "127.0.0.1" not in detail and "::1" not in detail and "LOOKALIKE_URL_ALLOW_PRIVATE" in detail
