"""Request body limit enforced while the body streams in, before any parsing or spooling."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_MAX_BYTES = 2**20  # a body that is not a multipart form (JSON: a search, a job, a record's fields)


class BodyTooLarge(Exception):
    pass


class TrackedSend:
    """A ``send`` that remembers whether the response has started: once it has, an error can no longer be
    answered with a response of its own."""

    def __init__(self, send: Send) -> None:
        self.send, self.started = send, False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``: by Content-Length up front, or by counting chunks. ``larger`` gives some
    paths a POST body limit of their own and the setting that names it (uploads, which may hold videos)."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, tuple[int, str]] | None = None) -> None:
        self.app, self.max_bytes, self.larger = app, max_bytes, larger or {}

    def limit(self, scope: Scope) -> tuple[int, str]:
        """The body limit of this request, and the setting that says it. Only a multipart form carries photos; any
        other body (JSON) is parsed whole, on the event loop where FastAPI parses it: 18 MB of nested arrays held
        every other request for 4 s (hostile probe), so it gets JSON_MAX_BYTES (80 ms of parsing at most)."""
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"").lower()
        if not content_type.startswith(b"multipart/form-data"):
            return min(self.max_bytes, JSON_MAX_BYTES), ""
        own = self.larger.get(scope.get("path", "")) if scope.get("method") == "POST" else None
        return own if own is not None and own[0] > self.max_bytes else (self.max_bytes, "LOOKALIKE_MAX_UPLOAD_BYTES")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, setting = self.limit(scope)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await self._reject(scope, send, max_bytes, setting)
            return
        seen = 0
        tracked = TrackedSend(send)

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, tracked)
        except BodyTooLarge:
            if not tracked.started:
                await self._reject(scope, send, max_bytes, setting)

    async def _reject(self, scope: Scope, send: Send, max_bytes: int, setting: str) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Request too large",
                "status": 413,
                "detail": f"request body exceeds {setting.removeprefix('LOOKALIKE_').lower()}={max_bytes} ({setting})"
                if setting else f"a request body other than a multipart form is limited to {max_bytes} bytes",
                "instance": scope.get("path", ""),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
