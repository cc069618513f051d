"""Request bodies that stop arriving, against a real `lookalike serve` (lookalike.api.stalls): 64 such sockets held
every place among the requests in progress, health checks included, for as long as they stayed open."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.services import Service

STALLED_HEAD = (b"POST /api/v1/jobs/index HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n{\"paths\": [")  # fmt: skip


def answer_of(sock: socket.socket, within: float) -> bytes:
    """What the server sent on ``sock`` until it closed it (or ``within`` seconds passed)."""
    sock.settimeout(within)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return got


@pytest.mark.parametrize("key", [None, "a-long-enough-key-0123456789"])
def test_a_stalled_body_is_answered_408_and_gives_its_place_back(tmp_path, key) -> None:
    """LOOKALIKE_MAX_REQUESTS=2 and a body timeout of 2 s: two stalled bodies fill both places (a third request
    gets 503), the health check is answered all along, and after the deadline each stalled request gets a 408
    problem, its connection closes and the service answers again. With a key the JSON body of a write is read
    before the key is checked, so a stall needs no key."""
    settings = {"max_requests": "2", "body_timeout": "2"} | ({"api_key": key} if key else {})
    svc = Service(tmp_path / "home", **settings).start()
    try:
        stalled = [socket.create_connection(("127.0.0.1", svc.port), timeout=10) for _ in range(2)]
        for sock in stalled:
            sock.sendall(STALLED_HEAD)
        time.sleep(0.5)
        assert httpx.get(f"{svc.url}/api/v1/stats", timeout=10).status_code == 503
        for path in ("/healthz/live", "/livez", "/api/v1/healthz/live", "/healthz/ready", "/readyz", "/healthz",
                     "/api/v1/healthz/ready", "/api/v1/healthz"):  # fmt: skip
            assert httpx.get(f"{svc.url}{path}", timeout=10).status_code == 200, path  # never behind the cap
        for sock in stalled:
            answer = answer_of(sock, within=10)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"LOOKALIKE_BODY_TIMEOUT" in answer and b"connection: close" in answer.lower()
            sock.close()
        headers = {"X-API-Key": key} if key else {}
        assert httpx.get(f"{svc.url}/api/v1/stats", headers=headers, timeout=10).status_code == 200
        assert "unhandled error" not in svc.log()
    finally:
        svc.stop()


def test_a_trickled_body_is_answered_408_and_a_slow_upload_is_not(tmp_path) -> None:
    """A byte every half second is within every per-piece deadline (2 s) and once held its place for ever; with a
    minimum rate of 100 bytes a second after the 2 s grace it gets the 408 within a few seconds. A body sent at
    1,000 bytes a second, slow but honest, is answered as usual."""
    svc = Service(tmp_path / "home", max_requests="2", body_timeout="2", body_min_rate="100").start()
    try:
        sock = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        sock.sendall(STALLED_HEAD)
        started, answer = time.monotonic(), b""
        sock.settimeout(0.5)
        while not answer and time.monotonic() - started < 15:
            try:
                sock.sendall(b"1")
                answer = sock.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        answer += answer_of(sock, within=5)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"LOOKALIKE_BODY_MIN_RATE" in answer and time.monotonic() - started < 10

        body = b'{"paths": ["' + b"x" * 2900 + b'"]}'
        slow = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        slow.sendall(STALLED_HEAD.split(b"Content-Length")[0] + b"Content-Length: %d\r\n\r\n" % len(body))
        for at in range(0, len(body), 100):
            slow.sendall(body[at : at + 100])
            time.sleep(0.1)
        answer = answer_of(slow, within=10)
        slow.close()
        assert answer.startswith(b"HTTP/1.1 403"), answer[:300]  # read whole, then refused: not a server path
        assert b"unhandled error" not in svc.log().encode()
    finally:
        svc.stop()
