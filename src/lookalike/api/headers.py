"""Security headers on every response of the service (web review, findings 2 and 3).

No page of the service may be framed by another (clickjacking: a framed page's clicks are same-origin, so
neither the Origin guard nor the key in its local storage stops them), no answer is sniffed as another type,
and no URL leaks to other sites in a Referer. When reads need the key, answers that say nothing of caching get
``Cache-Control: no-store``: records, server paths and search results are no more for shared caches than the
photos are (those say ``private`` themselves). A header a route set itself is kept (the page sets a stricter
Content-Security-Policy and ``no-cache``).
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


PUBLIC_FILES = ("/static/", "/docs-assets/")  # the page's script and the docs' assets: open, the same for all


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response that does not carry them already, and, with ``no_store``
    (reads need the key), ``Cache-Control: no-store`` to those that set no Cache-Control, but public files."""

    def __init__(self, app: ASGIApp, no_store: bool = False) -> None:
        self.app, self.no_store = app, no_store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        no_store = self.no_store and not str(scope.get("path", "")).startswith(PUBLIC_FILES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, value)
                if no_store:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
