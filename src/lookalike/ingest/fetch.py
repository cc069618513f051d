"""Read the bytes of a source: local files with a size cap, URLs with timeouts,
a size cap and a bounded number of redirects. Failures become ``FetchError``
with a reason a person can act on."""

from __future__ import annotations

import ipaddress
import socket
import time
from pathlib import Path

import httpx

from lookalike import __version__


class FetchError(OSError):
    """The bytes of a source could not be read; ``str(exc)`` says why."""


def read_file(path: str, max_bytes: int) -> bytes:
    try:
        p = Path(path)
        if p.is_dir():
            raise FetchError("is a folder, not a file")
        size = p.stat().st_size
        if size > max_bytes:
            raise FetchError(f"file too large: {size} bytes exceeds max_file_bytes={max_bytes}")
        with p.open("rb") as fh:
            return fh.read(max_bytes + 1)
    except FetchError:
        raise
    except IsADirectoryError:
        raise FetchError("is a folder, not a file") from None
    except PermissionError:
        raise FetchError("permission denied") from None
    except FileNotFoundError:
        raise FetchError("file vanished before it could be read") from None
    except OSError as exc:
        raise FetchError(f"cannot read: {exc.strerror or exc}") from None


def check_public(url: httpx.URL) -> None:
    """Refuse hosts that resolve to private, loopback, link-local or otherwise internal addresses (SSRF)."""
    host = url.host
    if not host:
        raise FetchError(f"refusing {url}: no host")
    try:
        infos = socket.getaddrinfo(host, url.port or 443, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise FetchError(f"unreachable: cannot resolve {host} ({exc.strerror})") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if not addr.is_global or addr.is_multicast:
            kind = "loopback" if addr.is_loopback else "link-local" if addr.is_link_local else "private or reserved"
            raise FetchError(
                f"refusing to fetch {url}: {host} is a {kind} address ({addr}); "
                f"set LOOKALIKE_URL_ALLOW_PRIVATE=1 to allow internal addresses"
            )


class UrlFetcher:
    """One pooled HTTP client for many URL fetches; every hop of a redirect is checked."""

    def __init__(self, timeout: float, max_bytes: int, max_redirects: int, allow_private: bool = False) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        hooks = {} if allow_private else {"request": [lambda request: check_public(request.url)]}
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
            max_redirects=max_redirects,
            headers={"User-Agent": f"lookalike/{__version__}"},
            event_hooks=hooks,
        )

    def close(self) -> None:
        self.client.close()

    def fetch(self, url: str) -> bytes:
        try:
            with self.client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise FetchError(f"HTTP {response.status_code} {response.reason_phrase}")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise FetchError(f"download too large: {declared} bytes exceeds url_max_bytes={self.max_bytes}")
                chunks, total = [], 0
                deadline = time.monotonic() + 4 * self.timeout  # a slow drip must end too
                for chunk in response.iter_bytes(1 << 16):
                    total += len(chunk)
                    if time.monotonic() > deadline:
                        raise FetchError(f"timed out: download took longer than {4 * self.timeout:g} s")
                    if total > self.max_bytes:
                        raise FetchError(f"download too large: more than url_max_bytes={self.max_bytes} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except FetchError:
            raise
        except httpx.TooManyRedirects:
            raise FetchError("too many redirects") from None
        except httpx.TimeoutException:
            raise FetchError(f"timed out after {self.timeout:g} s") from None
        except httpx.ConnectError as exc:
            raise FetchError(f"unreachable: {exc}") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"download failed: {type(exc).__name__}: {exc}") from None
