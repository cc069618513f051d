"""Reading sources: files with a size cap; URLs against a real local HTTP server."""

from __future__ import annotations

import gzip
import http.server
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator

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
        ("/nowhere", "HTTP 302 without a Location"),
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


@pytest.mark.parametrize("url", ["http://xn--/x.jpg", "http://xn--a/x.jpg"])
def test_a_host_idna_cannot_decode_is_not_a_valid_url(fetcher, url) -> None:
    """httpx decodes a punycode host only when asked for it (``URL.host``): an invalid one raised IDNAError,
    a 500 over HTTP, instead of a reason (and never a name to look up)."""
    with pytest.raises(FetchError, match="not a valid URL"):
        fetcher.fetch(url)


def test_a_redirect_to_a_host_idna_cannot_decode_has_a_reason(fetcher, http_server) -> None:
    with pytest.raises(FetchError, match="not a valid URL"):
        fetcher.fetch(f"{http_server}/bad-host")


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


def double_gzip_of_zeros(mib: int) -> bytes:
    """``mib`` MiB of zeros gzipped twice (a few hundred bytes), made without holding the zeros in memory."""
    packer, zeros = zlib.compressobj(9, zlib.DEFLATED, 31), bytes(1 << 20)
    once = b"".join([packer.compress(zeros) for _ in range(mib)] + [packer.flush()])
    return gzip.compress(once, 9)


@pytest.fixture(scope="module")
def encoded_server() -> Iterator[str]:
    """A loopback server answering with content codings: stacked (a bomb), single gzip, deflate (zlib-wrapped
    and raw), and a single-gzip bomb."""
    jpeg = photo("goldfish").read_bytes()
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    answers = {
        "/gz2bomb": ("gzip, gzip", double_gzip_of_zeros(200)),
        "/gzbomb": ("gzip", b"".join([packer.compress(bytes(1 << 20)) for _ in range(50)] + [packer.flush()])),
        "/gzip.jpg": ("gzip", gzip.compress(jpeg)),
        "/deflate.jpg": ("deflate", zlib.compress(jpeg)),
        "/rawdeflate.jpg": ("deflate", raw_deflate.compress(jpeg) + raw_deflate.flush()),
        "/identity.jpg": ("identity", jpeg),
        "/badgzip.jpg": ("gzip", jpeg),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            coding, body = answers[self.path]
            self.send_response(200)
            self.send_header("Content-Encoding", coding)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/gzip.jpg", "/deflate.jpg", "/rawdeflate.jpg", "/identity.jpg"])
def test_single_content_coding_is_decoded(fetcher, encoded_server, path) -> None:
    assert fetcher.fetch(encoded_server + path) == photo("goldfish").read_bytes()


def test_corrupt_gzip_has_a_reason(fetcher, encoded_server) -> None:
    with pytest.raises(FetchError, match="gzip-encoded body is corrupt"):
        fetcher.fetch(encoded_server + "/badgzip.jpg")


def test_single_gzip_bomb_stops_at_the_cap(fetcher, encoded_server) -> None:
    with pytest.raises(FetchError, match="too large: more than url_max_bytes=5242880 bytes once decoded"):
        fetcher.fetch(encoded_server + "/gzbomb")


CHILD = """
import json, resource, sys, time
from lookalike.ingest.fetch import FetchError, UrlFetcher
fetcher = UrlFetcher(timeout=10.0, max_bytes=30 * 2**20, max_redirects=3, allow_private=True)
before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
try:
    fetcher.fetch(sys.argv[1])
    error = None
except FetchError as exc:
    error = str(exc)
seconds, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"error": error, "seconds": seconds, "grew_kib": after - before}))
"""


def test_stacked_gzip_bomb_is_refused_without_decoding_it(encoded_server) -> None:
    """A 200 MiB double-gzip bomb (about 500 bytes sent, issue D3): a clear error naming the URL, quickly,
    while the peak memory stays far below the decoded size. A fresh process, so that ru_maxrss (a peak over
    the process's life) is not masked by what earlier tests used."""
    url = encoded_server + "/gz2bomb"
    done = subprocess.run([sys.executable, "-c", CHILD, url], capture_output=True, text=True, timeout=60, check=True)
    report = json.loads(done.stdout)
    assert report["error"] and "stacked content encodings" in report["error"] and url in report["error"]
    assert report["seconds"] < 2
    assert report["grew_kib"] < 20 * 1024  # 200 MiB decoded; the cap alone is 30 MiB


def test_stacked_encodings_are_refused_in_process(fetcher, encoded_server) -> None:
    start = time.monotonic()
    stacked = r"refusing http://127\.0\.0\.1:\d+/gz2bomb: .*stacked content encodings \(gzip, gzip\)"
    with pytest.raises(FetchError, match=stacked):
        fetcher.fetch(encoded_server + "/gz2bomb")
    assert time.monotonic() - start < 2
