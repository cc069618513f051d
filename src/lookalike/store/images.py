"""Image files of a library (thumbnails, kept originals), addressed by content hash.

The interface is small so that an object store can stand in for the local
directory; keys are sha256 hex digests, so a write is idempotent and a crashed
write is simply redone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from lookalike.store.errors import StoreUnavailable

Kind = Literal["thumbnail", "original", "features"]  # features: a photo's local features (search.feature_files)


LIBRARIES = "libraries"  # a store's folder of the ids of the libraries that use it (``claim``)


def library_key(library_id: str) -> str:
    """Where a library's claim on a store lives: ``libraries/<id>``; ValueError for an id that is not a plain name."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", library_id):
        raise ValueError(f"not a library id: {library_id!r}")
    return f"{LIBRARIES}/{library_id}"


def is_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def kind_folder(kind: Kind) -> str:
    """The folder of a kind's files in any store: ``thumbnails``, ``originals``, ``features``."""
    return "features" if kind == "features" else f"{kind}s"


def relative_key(kind: Kind, sha256: str) -> str:
    """Where a file lives in any store: ``thumbnails/ab/<sha256>.jpg``, ``originals/ab/<sha256>``,
    ``features/ab/<sha256>``; ValueError for a key that is not a sha256 hex digest (no path can escape)."""
    if not is_digest(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"{kind_folder(kind)}/{sha256[:2]}/{sha256}{'.jpg' if kind == 'thumbnail' else ''}"


class ImageStore(Protocol):
    def put(self, kind: Kind, sha256: str, data: bytes) -> None: ...
    def put_file(self, kind: Kind, sha256: str, fh: BinaryIO) -> None: ...
    def as_file(self, kind: Kind, sha256: str, suffix: str = "") -> contextlib.AbstractContextManager[str | None]: ...
    def get(self, kind: Kind, sha256: str) -> bytes | None: ...
    def delete(self, kind: Kind, sha256: str) -> None: ...
    def exists(self, kind: Kind, sha256: str) -> bool: ...
    def stored(self, kind: Kind) -> Iterator[tuple[str, float]]: ...
    def written(self, kind: Kind, sha256: str) -> float | None: ...
    def disk_bytes(self) -> int: ...
    def ping(self) -> None: ...
    def claim(self, library_id: str) -> None: ...
    def libraries(self) -> set[str]: ...


class LocalImageStore:
    """Files under ``root/<kind>s/ab/abcdef....`` (``root/features/...`` for features); writes are atomic (temp file
    + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, kind: Kind, sha256: str) -> Path:
        return self.root / relative_key(kind, sha256)

    def put(self, kind: Kind, sha256: str, data: bytes) -> None:
        self._write(kind, sha256, lambda out: out.write(data))

    def put_file(self, kind: Kind, sha256: str, fh: BinaryIO) -> None:
        """A file's bytes (an uploaded video), copied a piece at a time from where ``fh`` stands."""
        self._write(kind, sha256, lambda out: shutil.copyfileobj(fh, out, 2**20))

    @contextlib.contextmanager
    def as_file(self, kind: Kind, sha256: str, suffix: str = "") -> Iterator[str | None]:
        """The stored file's path, for a decoder that reads files (a video); None when there is none."""
        path = self.path(kind, sha256)
        yield str(path) if path.is_file() else None

    def _write(self, kind: Kind, sha256: str, write: Callable[[BinaryIO], object]) -> None:
        path = self.path(kind, sha256)
        if path.exists():  # the same bytes: kept, its time refreshed (doctor leaves a file written lately alone)
            try:
                os.utime(path)
                return
            except FileNotFoundError:
                pass  # deleted meanwhile: written again below
            except OSError as exc:
                if exc.errno == errno.EROFS:  # a read-only store: the file is there, as it was
                    return
                # another user's file: written again below, which refreshes its time too (doctor relies on it)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def get(self, kind: Kind, sha256: str) -> bytes | None:
        try:
            return self.path(kind, sha256).read_bytes()
        except FileNotFoundError:  # never written, or deleted by another process meanwhile
            return None

    def delete(self, kind: Kind, sha256: str) -> None:
        self.path(kind, sha256).unlink(missing_ok=True)

    def exists(self, kind: Kind, sha256: str) -> bool:
        return self.path(kind, sha256).exists()

    def written(self, kind: Kind, sha256: str) -> float | None:
        """When a file was last written (seconds since the epoch), None when there is none."""
        try:
            return self.path(kind, sha256).stat().st_mtime
        except FileNotFoundError:
            return None

    def stored(self, kind: Kind) -> Iterator[tuple[str, float]]:
        """The sha256 of every file of a kind, with when it was written (seconds since the epoch): what doctor
        compares with the catalog. A write in progress (its temporary file) is not listed."""
        for path in (self.root / kind_folder(kind)).glob("*/*"):
            digest = path.name.removesuffix(".jpg")
            if is_digest(digest):
                with contextlib.suppress(FileNotFoundError):  # deleted while listed
                    yield digest, path.stat().st_mtime

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the folder can be written (readiness checks: a lost mount)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"the image store {self.root} cannot be created: {exc}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreUnavailable(f"the image store {self.root} cannot be written")

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file()) if self.root.exists() else 0

    def claim(self, library_id: str) -> None:
        """Note that library ``library_id`` keeps its files here (doctor judges no file of a store two use)."""
        path = self.root / library_key(library_id)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def libraries(self) -> set[str]:
        """The ids of the libraries that claimed this store."""
        folder = self.root / LIBRARIES
        return {p.name for p in folder.iterdir()} if folder.is_dir() else set()
