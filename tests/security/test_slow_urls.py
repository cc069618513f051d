"""Issue #24, point 4: a URL whose server drips its answer must not hold a fetch past url_timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lookalike.ingest.fetch import FetchError, UrlFetcher
from tests.services import Service

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"


class DripServer:
    """A real TCP server on 127.0.0.1 that answers every request a byte every 0.3 s: its head (/head) or its
    body (anything else), until stopped."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            request = conn.recv(65536)
            head_too = request.startswith(b"GET /head")
            if not head_too:
                conn.sendall(HEAD)
            payload = (HEAD if head_too else b"") + b"\xff" * 100000
            for byte in payload:
                if self.stopped.wait(0.3):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()


@pytest.fixture
def drip() -> Iterator[DripServer]:
    server = DripServer()
    yield server
    server.stop()


def timed_fetch(fetcher: UrlFetcher, url: str, bound: float) -> tuple[BaseException | None, float]:
    """Fetch in a thread so that a fetch that never ends fails the test instead of hanging it."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fetcher.fetch(url)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), f"the fetch of {url} was still running after {bound:g} s"
    return outcome[0], time.monotonic() - started


@pytest.mark.parametrize("path", ["/body", "/head"])
def test_a_dripping_server_is_cut_off_at_the_fetch_deadline(drip: DripServer, path: str) -> None:
    fetcher = UrlFetcher(timeout=2, max_bytes=10**6, max_redirects=2, allow_private=True)
    try:
        error, took = timed_fetch(fetcher, f"http://127.0.0.1:{drip.port}{path}", bound=30)
    finally:
        fetcher.close()
    assert isinstance(error, FetchError) and "timed out" in str(error)
    assert took >= 1.5  # it was the deadline that ended it


def test_url_searches_on_a_dripping_server_end_with_a_clear_4xx(tmp_path: Path, drip: DripServer) -> None:
    service = Service(tmp_path / "home", url_timeout="2", url_allow_private="1").start()
    answers: list[httpx.Response] = []
    try:

        def search() -> None:
            url = f"http://127.0.0.1:{drip.port}/photo.jpg"
            answers.append(httpx.post(f"{service.url}/api/v1/search", json={"url": url}, timeout=60))

        threads = [threading.Thread(target=search) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert len(answers) == 8
        assert all(400 <= r.status_code < 500 and "timed out" in r.json()["detail"] for r in answers), answers[0].text
    finally:
        service.stop()
