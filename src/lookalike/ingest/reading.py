"""Where a library's photo bytes come from: query files and URLs, S3 objects, an indexed photo's original.

The URL fetcher (SSRF-checked, capped) and the S3 client are made on first use and shared by every thread; the
decode gate bounds how many photos a process holds decoded at once, so a flood of huge uploads waits (then gets a
503) instead of filling memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from lookalike.config import Settings
from lookalike.errors import BusyError, NotFoundError
from lookalike.ingest.fetch import FetchError, UrlFetcher, read_file
from lookalike.ingest.sources import is_url
from lookalike.ingest.video import VideoError, VideoLimits, file_sha256, frame_at
from lookalike.moments import frame_key, moment
from lookalike.store.catalog import ImageRecord
from lookalike.store.catalog.records import VideoState
from lookalike.store.images import ImageStore
from lookalike.store.s3 import is_s3, s3_client
from lookalike.store.s3 import read as s3_read

VideoStates = Callable[[Iterable[str]], dict[str, VideoState]]


class Reader:
    """Reads photo bytes for a library: its settings' limits, its image store for kept originals, and what its catalog
    recorded of videos (``video_states``: a video's file is hashed again only when it is not as recorded)."""

    def __init__(self, settings: Settings, images: ImageStore, s3: Any = None,
                 video_states: VideoStates | None = None) -> None:  # fmt: skip
        self.settings, self.images = settings, images
        self.video_states = video_states
        self._lock = threading.Lock()
        self._s3 = s3
        self._fetcher: UrlFetcher | None = None
        self.decodes = threading.BoundedSemaphore(settings.resolved_decodes)

    def s3(self) -> Any:
        """One boto3 client (thread-safe) for S3 sources and the S3 image store."""
        with self._lock:
            if self._s3 is None:
                self._s3 = s3_client(self.settings)
            return self._s3

    def url_fetcher(self) -> UrlFetcher:
        with self._lock:
            if self._fetcher is None:
                s = self.settings
                self._fetcher = UrlFetcher(s.url_timeout, s.url_max_bytes, s.url_max_redirects, s.url_allow_private)
            return self._fetcher

    def read_query(self, query: str | Path) -> bytes:
        """A query photo's bytes from a file path or a URL."""
        text = str(query)
        if is_url(text):
            return self.url_fetcher().fetch(text)
        return read_file(text, self.settings.max_file_bytes)

    def read_source(self, source: str) -> bytes:
        """An indexed source's bytes (a file, a URL or an S3 object)."""
        if is_url(source):
            return self.url_fetcher().fetch(source)
        if is_s3(source):
            return s3_read(self.s3(), source, self.settings.max_file_bytes)
        return read_file(source, self.settings.max_file_bytes)

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        """At most ``max_concurrent_decodes`` query photos are decoded at once: a flood of huge photos waits
        here (then gets 503) instead of holding a decoded photo each in memory."""
        if not self.decodes.acquire(timeout=self.settings.decode_wait):
            raise BusyError(f"too many photos being decoded at once; retry (LOOKALIKE_MAX_CONCURRENT_DECODES="
                            f"{self.settings.resolved_decodes})")  # fmt: skip
        try:
            yield
        finally:
            self.decodes.release()

    def original_bytes(self, rec: ImageRecord) -> bytes:
        """The photo's bytes: the kept original, else the first source file still holding the same bytes."""
        data = self.images.get("original", rec.sha256) if rec.has_original else None
        if data is not None:
            return data
        if any(moment(src) for src in rec.sources):
            return self._frame_bytes(rec)
        for src in rec.sources:
            if is_url(src) or src.startswith("upload:"):
                continue
            try:
                data = self.read_source(src)
            except FetchError:
                continue
            if hashlib.sha256(data).hexdigest() == rec.sha256:
                return data
        raise NotFoundError(f"the original of image {rec.id} is no longer available (its files moved or changed)")

    def _frame_bytes(self, rec: ImageRecord) -> bytes:
        """A video frame's original: decoded again from the first of its videos that still holds the same file (its
        sha256 names the frame's), as a JPEG."""
        for src in rec.sources:
            found = moment(src)
            if found is None:
                continue
            video, t = found
            try:  # under the decode gate: a bucket's video is fetched whole to a temporary file, then decoded
                with self.decoding(), self.video_path(video) as (path, sha):
                    if path is None or frame_key(sha, t) != rec.sha256:
                        continue
                    image = frame_at(path, t, VideoLimits.from_settings(self.settings))
            except (VideoError, ValueError):  # ValueError: not a sha256 in an upload's source
                continue
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=92)
            return buf.getvalue()
        raise NotFoundError(f"the video of frame {rec.id} is no longer available (it moved or changed)")

    @contextlib.contextmanager
    def video_path(self, video: str) -> Iterator[tuple[str | None, str]]:
        """(a file holding the video, its sha256): an uploaded one's as the image store keeps it (None when it does
        not), named by the sha256 in its source (``upload:<sha256>/<name>``); else the file itself."""
        if video.startswith("upload:"):
            digest = video.removeprefix("upload:").split("/", 1)[0]
            with self.images.as_file("original", digest, Path(video).suffix.lower()) as path:
                yield path, digest
            return
        yield video, self.video_sha256(video)

    def video_sha256(self, video: str) -> str:
        """A video file's sha256: the one recorded when the file's size and modification time are as recorded (a
        frame's original or a player's request does not read gigabytes), else read and hashed."""
        state = self.video_states([video]).get(video) if self.video_states is not None else None
        if state is not None and state.size is not None and state.mtime_ns is not None:
            try:
                st = os.stat(video)
            except (OSError, ValueError):
                raise VideoError("cannot read: the file is gone") from None
            if stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (state.size, state.mtime_ns):
                return state.sha256
        return file_sha256(video)

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()
