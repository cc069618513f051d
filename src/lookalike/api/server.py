"""How `lookalike serve` holds its connections against hostile clients (issue #24).

uvicorn's ``limit_concurrency`` counts open connections, idle ones included, and a connection that has not
sent a full request head has no deadline at all: 64 idle or dripping sockets answered every real request
with a plain-text 503. Here, as nginx does it:

- a request head must arrive in full within ``header_timeout`` (nginx's ``client_header_timeout``), counted
  from the connection's start or from the end of the previous response, however slowly it drips;
- idle keep-alive connections close after ``KEEP_ALIVE`` seconds (uvicorn's ``timeout_keep_alive``);
- at ``max_connections`` open connections, a new one takes the place of the longest-idle connection that
  has no request in progress (nginx reuses keep-alive connections the same way), so sockets that only wait
  can never lock a working client out; the limit that answers 503 counts requests in progress only
  (``max_requests``), with a JSON problem body and Retry-After;
- each piece of a request body must arrive within ``body_timeout`` of the previous one (nginx's
  ``client_body_timeout``) and the whole at ``body_min_rate`` bytes a second after that grace (Apache's MinRate),
  else 408 and the connection closes (lookalike.api.stalls); health checks are answered beyond ``max_requests``;
- a request with both Content-Length and Transfer-Encoding gets 400 and the connection closes (RFC 9112
  6.1: such framing is how requests are smuggled past a proxy); h11 itself reads it as chunked;
- h11's own 400 for a malformed request is a JSON problem too.

A per-client limit was left out on purpose: behind the recommended reverse proxy, and on loopback, every
client has the same address, so it would lock out everyone at once.
"""

from __future__ import annotations

import asyncio
import json
import resource

import h11
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from lookalike.api import LIVE_PATHS, READY_PATHS
from lookalike.api.headers import SecurityHeaders
from lookalike.api.origins import OriginGuard
from lookalike.api.stalls import BodyDeadline
from lookalike.config import Settings

KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open (uvicorn's default)
# health checks are answered beyond max_requests: a full service is busy, not dead (lookalike.api.health)
HEALTH = frozenset(LIVE_PATHS + READY_PATHS)
RESERVED_FILES = 256  # descriptors kept for the library's own files when capping connections


def problem_bytes(status: int, title: str, detail: str) -> bytes:
    return json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and room made by closing idle connections."""

    header_timeout: float = 10.0
    max_connections: int = 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._waiting_since = self.loop.time()
        self._arm_head_deadline()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._waiting_since = self.loop.time()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        """No full request head in time: close, as nginx does after client_header_timeout."""
        self._head_timer = None
        if self._waiting_for_head() and not self.transport.is_closing():
            self.transport.close()

    def _make_room(self) -> None:
        """Over the connection cap: close the longest-idle connection (no request in progress), or this one."""
        idle = [c for c in self.connections if c is not self and isinstance(c, GuardedH11Protocol)
                and c._waiting_for_head() and not c.transport.is_closing()]  # fmt: skip
        victim = min(idle, key=lambda c: c._waiting_since, default=self)
        victim.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if not self._waiting_for_head():  # a full request head arrived: its deadline is met
            self._disarm_head_deadline()

    def on_response_complete(self) -> None:
        self._arm_head_deadline()  # the next request's head is due from now (a pipelined one disarms it again)
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """h11's refusal of a malformed request, as a JSON problem like every other error."""
        body = problem_bytes(400, "Bad request", f"malformed HTTP request: {msg}")
        headers = [(b"content-type", b"application/problem+json"), (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):  # fmt: skip
            self.transport.write(self.conn.send(event))
        self.transport.close()


def protocol_class(header_timeout: float, max_connections: int) -> type[GuardedH11Protocol]:
    """The protocol uvicorn instantiates per connection, with these limits."""
    cap = min(max_connections, max(16, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - RESERVED_FILES))
    return type("Protocol", (GuardedH11Protocol,), {"header_timeout": header_timeout, "max_connections": cap})


class RequestGuard:
    """The outermost ASGI layer: ambiguous framing gets 400 (and the connection closes); beyond
    ``max_requests`` requests in progress, 503 with a JSON body and Retry-After."""

    def __init__(self, app: ASGIApp, max_requests: int) -> None:
        self.app, self.max_requests, self.running = app, max_requests, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        names = {name.lower() for name, _ in scope.get("headers") or []}
        if b"transfer-encoding" in names and b"content-length" in names:
            detail = "a request may not have both Content-Length and Transfer-Encoding (RFC 9112, 6.1)"
            await self._answer(send, 400, "Bad request", detail, close=True)
            return
        if self.running >= self.max_requests and scope.get("path", "") not in HEALTH:
            detail = f"{self.max_requests} requests in progress (LOOKALIKE_MAX_REQUESTS); retry in a moment"
            await self._answer(send, 503, "Busy", detail, close=False)
            return
        self.running += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.running -= 1

    @staticmethod
    async def _answer(send: Send, status: int, title: str, detail: str, close: bool) -> None:
        body = problem_bytes(status, title, detail)
        headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
        headers += [(b"connection", b"close")] if close else [(b"retry-after", b"2")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def run(app: ASGIApp, host: str, port: int, settings: Settings) -> None:
    """Serve ``app`` with the limits above (uvicorn's own connection limit is off: it counts idle sockets)."""
    import uvicorn

    # see origins.py: what a key already prevents; a key that leaves reads open (API_KEY_FOR_READS=0) does not
    # keep a DNS-rebinding page from reading, so the guard stays then
    if not settings.reads_need_key or settings.allowed_hosts:
        app = OriginGuard(app, settings.allowed_hosts, settings.cors_origins)
    deadline = BodyDeadline(app, settings.body_timeout, settings.body_min_rate)
    guarded: ASGIApp = RequestGuard(deadline, settings.max_requests)
    # the guards' own answers (403, 503, 408) carry the security headers too: the app's inner layer adds them only
    # to what reaches it (a header already there is kept, so none is doubled)
    guarded = SecurityHeaders(guarded, no_store=settings.reads_need_key)
    protocol = protocol_class(settings.header_timeout, settings.max_connections)
    uvicorn.run(guarded, host=host, port=port, log_level="info", http=protocol, limit_concurrency=None,
                timeout_keep_alive=KEEP_ALIVE)  # fmt: skip
