"""Which web pages may drive the service (issue #24, point 8).

An anonymous service on loopback trusts whoever can connect, and a browser can connect for any web page its
user visits: a cross-site form or ``fetch(..., {mode: "no-cors"})`` posts to it (a "simple" request needs no
CORS preflight), and DNS rebinding makes a foreign name resolve to 127.0.0.1 so that its page is even
same-origin with the service. So, when the service has no API key (a key is a header no foreign page can
send), or one that leaves reads open (``LOOKALIKE_API_KEY_FOR_READS=0``), or when ``LOOKALIKE_ALLOWED_HOSTS`` is set:

- the Host header must name the service: an IP address, ``localhost`` (and ``*.localhost``), or a name in
  ``LOOKALIKE_ALLOWED_HOSTS`` (``"*"`` for any; ``.example.org`` for it and its subdomains), as Django's
  ALLOWED_HOSTS and webpack's allowedHosts do. A rebinding name is none of these;
- a write (any method but GET, HEAD, OPTIONS) that carries an Origin must come from the service's own origin
  or from ``LOOKALIKE_CORS_ORIGINS``. Clients that are not browsers send no Origin and are not affected.
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def host_name(host: str) -> str:
    """The name in a Host header or an origin's netloc, without port, brackets, trailing dot or case."""
    if host.startswith("["):
        return host[1 : host.find("]")].lower() if "]" in host else host.lower()
    return host.rsplit(":", 1)[0].rstrip(".").lower() if host.count(":") == 1 else host.rstrip(".").lower()


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class OriginGuard:
    """403 (JSON) for an unknown Host name, and for a write from a foreign origin."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str], cors_origins: list[str]) -> None:
        self.app, self.allowed = app, [h.lower().rstrip(".") for h in allowed_hosts]
        self.origins = {o.rstrip("/").lower() for o in cors_origins}

    def host_allowed(self, host: str) -> bool:
        name = host_name(host)
        if not host or "*" in self.allowed or is_ip(name) or name == "localhost" or name.endswith(".localhost"):
            return True
        return any(name == a or (a.startswith(".") and (name.endswith(a) or name == a[1:])) for a in self.allowed)

    def origin_allowed(self, origin: str, host: str) -> bool:
        if origin.rstrip("/").lower() in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host.lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
            host, origin = headers.get(b"host", ""), headers.get(b"origin")
            detail = None
            if not self.host_allowed(host):
                detail = "unknown Host name (DNS rebinding?): list the names this service is reached by in "
                detail += "LOOKALIKE_ALLOWED_HOSTS"
            elif origin is not None and scope["method"] not in SAFE_METHODS and not self.origin_allowed(origin, host):
                detail = "a write from another web site's page is refused: allow its origin in LOOKALIKE_CORS_ORIGINS"
            if detail is not None:
                await refuse(send, detail, scope.get("path", ""))
                return
        await self.app(scope, receive, send)


async def refuse(send: Send, detail: str, path: str) -> None:
    body = json.dumps({"type": "about:blank", "title": "Forbidden", "status": 403, "detail": detail,
                       "instance": path}).encode()  # fmt: skip
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})
