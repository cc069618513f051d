"""Read the bytes of a source: local files with a size cap, URLs with timeouts,
a size cap and a bounded number of redirects. Failures become ``FetchError``
with a reason a person can act on."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
import threading
import time
import typing
import zlib

import httpcore
import httpx

from lookalike import __version__


class FetchError(OSError):
    """The bytes of a source could not be read; ``str(exc)`` says why."""


SPECIAL = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
           stat.S_IFBLK: "a block device"}  # fmt: skip


def read_file(path: str, max_bytes: int) -> bytes:
    """A regular file's bytes, at most ``max_bytes``: anything else is refused with a reason, never waited on.

    The file is opened non-blocking (a FIFO would otherwise wait for a writer forever), checked with fstat
    on the open descriptor (no window between the check and the read), and read with a bound.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except ValueError:  # os.open refuses a NUL byte
        raise FetchError("not a valid path: it contains a NUL character") from None
    except IsADirectoryError:
        raise FetchError("is a folder, not a file") from None
    except PermissionError:
        raise FetchError("permission denied") from None
    except FileNotFoundError:
        raise FetchError("dangling symbolic link" if os.path.islink(path) else "no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FetchError("symbolic link loop") from None
        raise FetchError(f"cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FetchError("is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise FetchError(f"not a regular file: {SPECIAL.get(stat.S_IFMT(st.st_mode), 'a special file')}")
        if st.st_size > max_bytes:
            raise FetchError(f"file too large: {st.st_size} bytes exceeds max_file_bytes={max_bytes}")
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise FetchError(f"file too large: it grew past max_file_bytes={max_bytes} while read")
        return b"".join(chunks)
    except OSError as exc:
        if isinstance(exc, FetchError):
            raise
        raise FetchError(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible addresses: ::127.0.0.1


def embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64, IPv4-compatible, Teredo), if any: a
    gateway or the kernel may deliver to it, so it is checked as well (issue #24)."""
    if addr.ipv4_mapped or addr.sixtofour:
        return addr.ipv4_mapped or addr.sixtofour
    if any(addr in net for net in NAT64) or (addr in COMPATIBLE and int(addr) > 1):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr.teredo[1] if addr.teredo else None


def is_internal(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Private, loopback, link-local, reserved or multicast, also inside an IPv6 address: never fetched
    unless allowed."""
    inner = embedded_ipv4(addr) if isinstance(addr, ipaddress.IPv6Address) else None
    if inner is not None and is_internal(inner):
        return True
    return not addr.is_global or addr.is_multicast


def resolve(url: httpx.URL, allow_private: bool) -> str:
    """The one address a fetch connects to: every address the name resolves to is checked (a name that
    mixes public and internal answers is refused), and the connection then goes to the address checked, so
    a resolver that answers differently the next time (DNS rebinding) is never asked again."""
    try:
        host = url.host  # httpx decodes a punycode host only here
    except UnicodeError as exc:  # idna's IDNAError: "xn--" with nothing valid after it, a redirect's too
        raise FetchError(f"not a valid URL: {url}: its host name cannot be decoded ({exc})") from None
    if not host:
        raise FetchError(f"refusing {url}: no host")
    try:
        infos = socket.getaddrinfo(host, url.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"unreachable: cannot resolve {host} ({getattr(exc, 'strerror', None) or exc})") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]  # IPv4/IPv6: a str
    if not addresses:
        raise FetchError(f"unreachable: cannot resolve {host}")
    if not allow_private:
        for addr in addresses:
            if is_internal(addr):
                plain = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped else addr
                kind = "private or reserved"
                if plain.is_loopback or plain.is_link_local:
                    kind = "loopback" if plain.is_loopback else "link-local"
                # the address is not named: a caller could learn what internal names resolve to (web review, 4)
                raise FetchError(
                    f"refusing to fetch {url}: {host} resolves to a {kind} address; "
                    f"set LOOKALIKE_URL_ALLOW_PRIVATE=1 to allow internal addresses"
                )
    return str(addresses[0])


class _Deadline(threading.local):
    """When the fetch running in this thread must end (time.monotonic()), or None."""

    at: float | None = None

    def left(self, timeout: float | None) -> float | None:
        """``timeout`` shortened to the time left; past the deadline, a timeout at once."""
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the fetch's deadline passed")
        return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read, write and TLS handshake waits at most until the fetch's deadline.

    httpx's timeouts are per operation: a server that drips a byte every few seconds (in its head or its body)
    never trips them. Bounding each socket operation by the time left bounds the whole fetch, redirects
    included, without a watchdog thread (issue #24)."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self.stream, self.deadline = stream, deadline

    def _left(self, timeout: float | None) -> float | None:
        return self.deadline.left(timeout)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, self._left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.stream.write(buffer, self._left(timeout))

    def close(self) -> None:
        self.stream.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None, timeout: float | None = None):
        return DeadlineStream(self.stream.start_tls(ssl_context, server_hostname, self._left(timeout)), self.deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self.stream.get_extra_info(info)


class DeadlineBackend(httpcore.SyncBackend):
    """httpcore's socket backend, with each connection's operations bounded by the fetch's deadline."""

    def __init__(self, deadline: _Deadline) -> None:
        self.deadline = deadline

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: typing.Iterable | None = None) -> httpcore.NetworkStream:  # fmt: skip
        stream = super().connect_tcp(host, port, self.deadline.left(timeout), local_address, socket_options)
        return DeadlineStream(stream, self.deadline)


def deadline_transport(deadline: _Deadline) -> httpx.HTTPTransport:
    """httpx's transport on httpcore's pool with the deadline backend (httpx takes no backend argument, so the
    pool it made is replaced by the same pool with ours)."""
    transport = httpx.HTTPTransport(trust_env=False)
    transport._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(trust_env=False),
                                              network_backend=DeadlineBackend(deadline))  # fmt: skip
    return transport


class UrlFetcher:
    """One pooled HTTP client for many URL fetches. Redirects are followed here, hop by hop, so that every
    hop's host is resolved once, checked, and connected to at exactly that address (the Host header and
    TLS server name stay the host's, so virtual hosts and certificates work as usual)."""

    def __init__(self, timeout: float, max_bytes: int, max_redirects: int, allow_private: bool = False) -> None:
        self.max_bytes, self.timeout = max_bytes, timeout
        self.max_redirects, self.allow_private = max_redirects, allow_private
        self.deadline = _Deadline()
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            transport=deadline_transport(self.deadline),
            follow_redirects=False,
            # only the codings decode_body handles: it decodes them itself, within url_max_bytes (issue D3)
            headers={"User-Agent": f"lookalike/{__version__}", "Accept-Encoding": "gzip, deflate"},
            trust_env=False,  # no proxy from the environment: it would connect by name, not to the checked address
        )

    def close(self) -> None:
        self.client.close()

    def fetch(self, url: str) -> bytes:
        """The body at ``url``; the whole fetch (resolving, connecting, redirects, body) within url_timeout."""
        self.deadline.at = time.monotonic() + self.timeout
        try:
            return self._fetch(url)
        finally:
            self.deadline.at = None

    def _fetch(self, url: str) -> bytes:
        try:
            current = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise FetchError(f"not a valid URL: {exc}") from None
        try:
            for _ in range(self.max_redirects + 1):
                if current.scheme not in ("http", "https"):
                    raise FetchError(f"refusing {current.scheme}:// URLs: only http and https")
                address = resolve(current, self.allow_private)
                pinned = current.copy_with(host=address)
                host = current.raw_host.decode("ascii")
                port = current.port
                headers = {"Host": f"[{host}]:{port}" if ":" in host and port else
                           f"[{host}]" if ":" in host else f"{host}:{port}" if port else host}  # fmt: skip
                extensions = {"sni_hostname": host} if current.scheme == "https" else {}
                with self.client.stream("GET", pinned, headers=headers, extensions=extensions) as response:
                    if response.is_redirect:
                        location = response.headers.get("location", "").strip()
                        if not location:  # joined, "" is the same URL: it read as "too many redirects"
                            raise FetchError(f"HTTP {response.status_code} without a Location: a redirect to nowhere")
                        current = current.join(location)
                        continue
                    return self._body(response, current)
            raise FetchError("too many redirects")
        except FetchError:
            raise
        except httpx.TimeoutException:
            raise FetchError(f"timed out: the download took longer than url_timeout={self.timeout:g} s") from None
        except httpx.ConnectError as exc:
            raise FetchError(f"unreachable: {exc}") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise FetchError(f"download failed: {type(exc).__name__}: {exc}") from None
        except UnicodeError as exc:  # httpx reads a redirect's Location host before handing the response back
            raise FetchError(f"not a valid URL: a host name cannot be decoded ({exc})") from None

    def _body(self, response: httpx.Response, url: httpx.URL) -> bytes:
        if response.status_code >= 400:
            raise FetchError(f"HTTP {response.status_code} {response.reason_phrase}")
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchError(f"download too large: {declared} bytes exceeds url_max_bytes={self.max_bytes}")
        decoder = BoundedDecoder(content_codings(response, url), self.max_bytes)
        raw = 0
        # The raw bytes as they come (each read bounded by the fetch's deadline), decoded here rather than by
        # httpx: its decoder expands a whole chunk at once, so a tiny compressed bomb made gigabytes before a
        # size check could run (issue D3). BoundedDecoder never produces more than url_max_bytes + 1 bytes.
        for chunk in response.iter_raw():
            raw += len(chunk)
            if raw > self.max_bytes:
                raise FetchError(f"download too large: more than url_max_bytes={self.max_bytes} bytes")
            decoder.feed(chunk)
        return decoder.finish()


def content_codings(response: httpx.Response, url: httpx.URL) -> str | None:
    """The one content-coding of a response ("gzip", "deflate" or an unknown name, lowercased), None for none.

    More than one coding (``gzip, gzip``) is refused: each layer multiplies the expansion, nothing legitimate
    needs it, and it is the shape of a decompression bomb (issue D3). ``identity`` is no coding."""
    codings = [c.strip().lower() for c in response.headers.get_list("content-encoding", split_commas=True)]
    codings = [c for c in codings if c and c != "identity"]
    if len(codings) > 1:
        raise FetchError(
            f"refusing {url}: the response has stacked content encodings ({', '.join(codings)}); "
            f"only a single gzip or deflate encoding is accepted"
        )
    return codings[0] if codings else None


class BoundedDecoder:
    """Decodes a gzip or deflate body chunk by chunk, never holding more than ``max_bytes + 1`` decoded bytes:
    each ``decompress`` call is given the room left as its ``max_length``, so a chunk of a bomb stops
    expanding at the cap instead of after it. An unknown coding passes the bytes through unchanged (as httpx
    does), so the image decoder is the one that judges them."""

    def __init__(self, coding: str | None, max_bytes: int) -> None:
        self.coding, self.max_bytes = coding, max_bytes
        self.chunks: list[bytes] = []
        self.total = 0
        self.head = b""  # deflate: the first bytes, until the zlib header can be told from a raw stream
        self.inflater: typing.Any = None
        if coding in ("gzip", "x-gzip"):
            self.inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)

    def _keep(self, data: bytes) -> None:
        self.total += len(data)
        if self.total > self.max_bytes:
            raise FetchError(f"download too large: more than url_max_bytes={self.max_bytes} bytes once decoded")
        if data:
            self.chunks.append(data)

    def _start_deflate(self, data: bytes, final: bool) -> bytes:
        """``deflate`` is meant to be zlib-wrapped, but some servers send a raw stream: its first two bytes
        tell (as httpx's decoder guesses, without decoding anything twice)."""
        self.head += data
        if len(self.head) < 2 and not final:
            return b""
        cmf, flg = (self.head + b"\0\0")[:2]
        zlib_header = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
        self.inflater = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        data, self.head = self.head, b""
        return data

    def feed(self, data: bytes, final: bool = False) -> None:
        if self.coding == "deflate" and self.inflater is None:
            data = self._start_deflate(data, final)
        if self.inflater is None:
            if self.coding != "deflate":
                self._keep(data)
            return
        if self.inflater.eof:
            return  # bytes after the end of the compressed stream are ignored (as httpx does)
        try:
            while True:
                piece = self.inflater.decompress(data, self.max_bytes + 1 - self.total)
                data = self.inflater.unconsumed_tail
                self._keep(piece)
                if (not piece and not data) or self.inflater.eof:
                    break  # input used up and nothing pending (or the stream ended): wait for the next chunk
        except zlib.error as exc:
            raise FetchError(f"download failed: the {self.coding}-encoded body is corrupt ({exc})") from None

    def finish(self) -> bytes:
        self.feed(b"", final=True)
        return b"".join(self.chunks)
