"""Who may do what over HTTP: API keys, and which server paths an HTTP caller may name.

The defaults refuse what a network client should not get by accident: ``lookalike serve`` on a
non-loopback address needs ``LOOKALIKE_API_KEY`` (or an explicit ``--allow-anonymous``); with a key, every read
needs it too, the API documents and the metrics included, unless ``LOOKALIKE_API_KEY_FOR_READS=0``
(``LOOKALIKE_METRICS_PUBLIC`` for scrapers); server paths can be indexed over HTTP only below
``LOOKALIKE_SOURCE_ROOTS``, and the answer for a path outside them says nothing about that path.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from urllib.parse import urlparse

from fastapi import Request

from lookalike.api.problems import Problem
from lookalike.config import Settings
from lookalike.ingest.sources import inside_roots, is_url

# The page's <img> and <video> requests cannot carry the X-API-Key header, so POST /api/v1/session (with the key in
# the header) sets this HttpOnly cookie. It holds a token derived from the key, never the key: it counts for reads
# only, so another app on the same host name (cookies ignore ports) that gets it cannot write with it. Any replica
# with the same key derives the same token, without shared state; a new key makes every old token worthless.
READ_COOKIE = "lookalike_read"
READ_TOKEN_LABEL = b"lookalike read cookie v1"


def read_token(key: bytes) -> str:
    """The read cookie's value for the API key ``key``: HMAC-SHA256 of a fixed label, keyed with it (hex)."""
    return hmac.new(key, READ_TOKEN_LABEL, hashlib.sha256).hexdigest()


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def anonymous_refusal(host: str, settings: Settings, allow_anonymous: bool) -> str | None:
    """Why ``serve`` must not start on ``host`` as configured, or None."""
    if is_loopback(host) or settings.api_key is not None or allow_anonymous:
        return None
    return (f"refusing to serve on {host} without an API key: anyone who can reach it could add, delete and "
            "read photos. Set LOOKALIKE_API_KEY (clients send it in the X-API-Key header), or pass "
            "--allow-anonymous (LOOKALIKE_ALLOW_ANONYMOUS=1) if that is what you want")  # fmt: skip


MIN_KEY_LENGTH = 16


def weak_key(settings: Settings) -> str | None:
    """Why the configured API key must not be used, or None. An empty key once meant no key at all (issue
    #24); a short one is guessed, and spaces are a copy-paste slip that clients would not send."""
    if settings.api_key is None:
        return None
    key = settings.api_key.get_secret_value()
    if not key.strip():
        problem = "is empty"
    elif any(c.isspace() or not c.isprintable() for c in key):
        problem = "contains spaces or control characters"
    elif len(key) < MIN_KEY_LENGTH:
        problem = f"is shorter than {MIN_KEY_LENGTH} characters"
    else:
        return None
    return (f"LOOKALIKE_API_KEY {problem}: refusing to start. Set a random key of at least {MIN_KEY_LENGTH} "
            "printable characters without spaces (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`), "
            "or unset it to serve on loopback without one")  # fmt: skip


class Keys:
    def __init__(self, settings: Settings) -> None:
        if (weak := weak_key(settings)) is not None:  # never "no key" because the key was empty
            raise ValueError(weak)
        self.settings = settings
        self.expected = settings.api_key.get_secret_value().encode() if settings.api_key is not None else None
        self.token = read_token(self.expected).encode() if self.expected is not None else None

    def _valid(self, given: str) -> bool:
        return self.expected is not None and hmac.compare_digest(given.encode(), self.expected)

    def write(self, request: Request) -> None:
        """Writes need the key in the header (never a cookie: a page elsewhere could send that one)."""
        if self.expected is not None and not self._valid(request.headers.get("x-api-key", "")):
            raise Problem(401, "Unauthorized", "a valid API key is required in the X-API-Key header")

    def read(self, request: Request) -> None:
        """Reads take the key in the header or, without a header, the read cookie's token (see READ_COOKIE)."""
        if not self.settings.reads_need_key:
            return
        header = request.headers.get("x-api-key")  # a wrong header is refused even with a right cookie
        if not (self._valid(header) if header else self.read_cookie_valid(request.cookies.get(READ_COOKIE, ""))):
            raise Problem(401, "Unauthorized", "this service needs its API key for reads too (X-API-Key header)")

    def read_cookie_valid(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(errors="replace"), self.token)

    def metrics(self, request: Request) -> None:
        if not self.settings.metrics_public:
            self.read(request)


def check_source(path: str, settings: Settings) -> None:
    """An HTTP caller may name http(s) URLs, and server paths (folders, files, s3:// prefixes) only below a
    configured root. Checked before anything touches the path, so that a missing and an existing path
    outside the roots get the same answer; the answer does not list the roots either."""
    if "\x00" in path:
        raise Problem(422, "Invalid parameters", "a path or URL cannot contain a NUL character")
    if is_url(path):
        return
    roots = settings.source_roots
    if path.startswith("s3://"):
        inside = any(path.rstrip("/") + "/" == r.rstrip("/") + "/" or path.startswith(r.rstrip("/") + "/")
                     for r in roots if r.startswith("s3://"))  # fmt: skip
    else:
        inside = os.path.isabs(path) and inside_roots(path, roots)
    if not inside:
        raise Problem(403, "Forbidden", "over HTTP, only http(s) URLs and paths below LOOKALIKE_SOURCE_ROOTS can be "
                      "indexed; the CLI on the server is not limited")  # fmt: skip


def safe_url(url: str) -> bool:
    """An http(s) URL with a host, and one the library reads as a URL too (never as a server path)."""
    if not is_url(url) or any(ord(c) < 32 or ord(c) == 127 for c in url):
        return False
    parsed = urlparse(url)
    return parsed.scheme.lower() in ("http", "https") and bool(parsed.netloc)


PRIVATE_STATS = ("home",)  # where the library lives on the server: not for anonymous callers


def public_stats(stats: dict) -> dict:
    """The library's stats without server paths or database addresses (issue #24, point 12)."""
    shown = {k: v for k, v in stats.items() if k not in PRIVATE_STATS}
    if isinstance(shown.get("catalog"), str):
        shown["catalog"] = shown["catalog"].split(":", 1)[0]  # the kind of database, not its address
    return shown


def public_error(exc: BaseException) -> str:
    """What callers are told when the library cannot be opened: the kind of failure, not the server's paths
    or the database's message; the whole error goes to the service's log."""
    return f"the library could not be opened ({type(exc).__name__}); the service's log has the details"


def digits_only(value: object) -> object:
    """An id in a path is ASCII digits: Python's int() also reads "1_0" as 10 and "\u0661" as 1."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("an id is a number written with the digits 0-9")
    return value
