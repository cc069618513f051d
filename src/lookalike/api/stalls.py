"""A request body that stops arriving: answered 408, its place among the requests in progress given back.

A client that sends a request head with a Content-Length and then a few bytes, or none, holds one of the
``max_requests`` places (lookalike.api.server.RequestGuard) for as long as it keeps the socket open: 64 such sockets
answered every other request, health checks included, with 503 for as long as they liked (a hostile probe held them
for 240 s). As nginx's ``client_body_timeout`` does, each piece of a body must arrive within ``timeout`` seconds of
the previous one; past it the app sees the client as gone (``http.disconnect``), whatever it answers is replaced by a
408 problem, and the connection closes. Once the body is complete nothing is timed: a long response (a video's
Range request) listens for the client's disconnect as before.

A client that trickles a byte within every deadline would still hold its place, so, as Apache's mod_reqtimeout
(``body=20,MinRate=500``) does, the whole body must also arrive within ``timeout`` seconds plus one second for every
``min_rate`` bytes received: a healthy upload, even over a slow link, is far faster; a trickle falls behind within
about ``timeout`` seconds and gets the same 408.
"""

from __future__ import annotations

import asyncio
import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class BodyDeadline:
    """Each piece of a request's body within ``timeout`` seconds of the previous one, and the whole at ``min_rate``
    bytes a second after a grace of ``timeout`` (0: no minimum), else 408 (see the module)."""

    def __init__(self, app: ASGIApp, timeout: float, min_rate: int = 0) -> None:
        self.app, self.timeout, self.min_rate = app, timeout, min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stalled, complete, answered = False, False, False
        clock = asyncio.get_running_loop().time
        started, received = clock(), 0

        def wait() -> float:
            """Seconds the next piece may take: the per-piece deadline, or less when the minimum rate's is nearer."""
            if not self.min_rate:
                return self.timeout
            return min(self.timeout, started + self.timeout + received / self.min_rate - clock())

        async def timed_receive() -> Message:
            nonlocal stalled, complete, received
            if complete:
                return await receive()
            if stalled:
                return {"type": "http.disconnect"}
            try:
                if (seconds := wait()) <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), seconds)
            except TimeoutError:
                stalled = True
                log.info("%s %s: %d bytes of the body in %.1f s, answered 408", scope.get("method"),
                         scope.get("path"), received, clock() - started)  # fmt: skip
                return {"type": "http.disconnect"}
            received += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if not stalled:
                answered = answered or message["type"] == "http.response.start"
                await send(message)
            elif not answered:  # the app's own answer to a client it thinks gone: a 408 instead
                answered = True
                await _timed_out(send, scope, self._why())

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not stalled:
                raise
        if stalled and not answered:
            await _timed_out(send, scope, self._why())

    def _why(self) -> str:
        slower = f", or it arrived slower than {self.min_rate} bytes a second (LOOKALIKE_BODY_MIN_RATE)"
        return (f"no piece of the request body arrived for {self.timeout:g} s (LOOKALIKE_BODY_TIMEOUT)"
                + (slower if self.min_rate else ""))  # fmt: skip


async def _timed_out(send: Send, scope: Scope, why: str) -> None:
    body = json.dumps({"type": "about:blank", "title": "Request timeout", "status": 408, "detail": why,
                       "instance": scope.get("path", "")}).encode()  # fmt: skip
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]  # fmt: skip
    await send({"type": "http.response.start", "status": 408, "headers": headers})
    await send({"type": "http.response.body", "body": body})
