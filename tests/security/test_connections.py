"""Issue #24, points 1, 2, 12 and 13: keys, idle and slow sockets, framing, against a real `lookalike serve`."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.services import Service, cli, free_port


@pytest.mark.parametrize("key", ["", "   ", "short-key", "a key with spaces in it", "tab\there-0123456789"])
def test_an_empty_short_or_spaced_key_is_refused_at_start_up(tmp_path: Path, key: str) -> None:
    for host in ("127.0.0.1", "0.0.0.0"):
        run = cli(tmp_path / "home", "serve", "--host", host, "--port", str(free_port()), timeout=60, api_key=key)
        assert run.returncode == 1, (key, host, run.stdout[-500:])
        assert "LOOKALIKE_API_KEY" in run.stdout + run.stderr and "refusing to start" in run.stdout + run.stderr


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("connections") / "home"
    svc = Service(home, header_timeout="3").start()
    yield svc
    svc.stop()


def open_sockets(port: int, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the server closed ``sock`` within ``within`` seconds (reads until EOF or a reset)."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_and_dripping_sockets_do_not_lock_out_a_real_client(service: Service) -> None:
    """100 idle sockets and 80 half-sent request heads (more than the 64 requests in progress allowed)."""
    idle = open_sockets(service.port, 100)
    dripping = open_sockets(service.port, 80)
    try:
        for sock in dripping:
            sock.sendall(b"GET /api/v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        r = httpx.get(f"{service.url}/api/v1/stats", timeout=30)
        assert r.status_code == 200, r.text
        assert httpx.get(f"{service.url}/healthz", timeout=30).status_code == 200
    finally:
        for sock in idle + dripping:
            sock.close()


def test_a_request_head_has_a_deadline_however_slowly_it_drips(service: Service) -> None:
    """LOOKALIKE_HEADER_TIMEOUT=3: a head dripped a byte a second is cut off (the bound here is generous)."""
    (sock,) = open_sockets(service.port, 1)
    started = time.monotonic()
    with contextlib.closing(sock):
        for byte in b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nX-Drip: " + b"a" * 60:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(1)
            if time.monotonic() - started > 40:
                break
        assert closed_by_peer(sock, 5)
    assert time.monotonic() - started < 40


def test_an_idle_keep_alive_connection_is_closed(service: Service) -> None:
    (sock,) = open_sockets(service.port, 1)
    with contextlib.closing(sock):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert b"200" in sock.recv(4096).split(b"\r\n")[0]
        assert closed_by_peer(sock, 30)


def raw_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def test_content_length_with_transfer_encoding_is_refused_and_nothing_is_smuggled(service: Service) -> None:
    smuggled = b"GET /api/v1/labels HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    body = b"0\r\n\r\n"
    request = (b"POST /api/v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body) + body + smuggled)  # fmt: skip
    answer = raw_exchange(service.port, request)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1  # the pipelined request was not served
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head and "Content-Length" in json.loads(payload)["detail"]


def test_a_malformed_request_gets_a_json_problem(service: Service) -> None:
    answer = raw_exchange(service.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header Line\r\n\r\n")
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"application/problem+json" in head
    assert json.loads(payload)["status"] == 400


def test_beyond_the_requests_in_progress_the_answer_is_a_json_503(tmp_path: Path) -> None:
    """LOOKALIKE_MAX_REQUESTS=1: one upload whose body is still coming holds the only place."""
    svc = Service(tmp_path / "home", max_requests="1").start()
    try:
        with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as slow:
            slow.sendall(b"POST /api/v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                         b"boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n")  # fmt: skip
            deadline = time.monotonic() + 30
            while (r := httpx.get(f"{svc.url}/api/v1/stats", timeout=30)).status_code == 200:
                assert time.monotonic() < deadline  # the slow request may take a moment to be in progress
                time.sleep(0.2)
            assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
            assert r.headers["retry-after"] and "LOOKALIKE_MAX_REQUESTS" in r.json()["detail"]
        deadline = time.monotonic() + 30  # its place is free again once it is gone
        while httpx.get(f"{svc.url}/api/v1/stats", timeout=30).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        svc.stop()


def test_at_the_connection_cap_a_new_connection_replaces_the_longest_idle_one(tmp_path: Path) -> None:
    """LOOKALIKE_MAX_CONNECTIONS=20 and 40 idle sockets: a real client is still served, and the sockets that made
    room are the oldest ones, closed by the server."""
    svc = Service(tmp_path / "home", max_connections="20").start()
    try:
        idle = []
        for _ in range(40):
            idle += open_sockets(svc.port, 1)
            time.sleep(0.01)  # an order of age among them
        try:
            assert httpx.get(f"{svc.url}/api/v1/stats", timeout=30).status_code == 200
            closed = [closed_by_peer(sock, 0.5) for sock in idle]
            assert sum(closed) >= 20 and all(closed[:10]) and not any(closed[-5:]), closed
        finally:
            for sock in idle:
                sock.close()
    finally:
        svc.stop()
