"""Reading sources: files with a size cap; URLs against a real local HTTP server."""

from __future__ import annotations

import shutil
import socket

import pytest

from lookalike.ingest.fetch import FetchError, UrlFetcher, read_file
from tests.conftest import photo


@pytest.fixture
def fetcher():
    f = UrlFetcher(timeout=1.0, max_bytes=5 * 2**20, max_redirects=3, allow_private=True)
    yield f
    f.close()


def test_fetch_photo_and_follow_redirect(fetcher, http_server, http_root) -> None:
    src = photo("goldfish")
    shutil.copy(src, http_root / "g.jpg")
    assert fetcher.fetch(f"{http_server}/g.jpg") == src.read_bytes()
    assert fetcher.fetch(f"{http_server}/redirect/g.jpg") == src.read_bytes()


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/missing.jpg", "HTTP 404"),
        ("/loop", "too many redirects"),
        ("/slow", "timed out"),
        ("/big", "too large"),
        ("/big-undeclared", "too large"),
    ],
)
def test_fetch_failures_have_reasons(fetcher, http_server, path, reason) -> None:
    with pytest.raises(FetchError, match=reason):
        fetcher.fetch(http_server + path)


def test_unreachable_host(fetcher) -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError, match="unreachable"):
        fetcher.fetch(f"http://127.0.0.1:{port}/x.jpg")


def test_read_file_limits(tmp_path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 100)
    assert read_file(str(f), 100) == b"x" * 100
    with pytest.raises(FetchError, match="too large"):
        read_file(str(f), 99)
    with pytest.raises(FetchError, match="folder"):
        read_file(str(tmp_path), 100)
    with pytest.raises(FetchError, match="no such file"):
        read_file(str(tmp_path / "gone"), 100)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x.jpg",
        "http://localhost/x.jpg",
        "http://10.1.2.3/x.jpg",
        "http://192.168.0.1/x.jpg",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x.jpg",
        "http://0.0.0.0/x.jpg",
    ],
)
def test_internal_addresses_are_refused_by_default(url) -> None:
    guarded = UrlFetcher(timeout=1.0, max_bytes=1000, max_redirects=3)
    with pytest.raises(FetchError, match="refusing to fetch .*LOOKALIKE_URL_ALLOW_PRIVATE"):
        guarded.fetch(url)
    guarded.close()
