"""Security headers on every response of the service (web review, findings 2 and 3).

No page of the service may be framed by another (clickjacking: a framed page's clicks are same-origin, so
neither the Origin guard nor the key in its local storage stops them), no answer is sniffed as another type,
and no URL leaks to other sites in a Referer. A header a route set itself is kept (the page sets a stricter
Content-Security-Policy).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FRAME_ANCESTORS = "frame-ancestors 'none'"
SECURITY_HEADERS = (
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Content-Security-Policy", FRAME_ANCESTORS),
)


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response that does not carry them already."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
