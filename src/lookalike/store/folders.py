"""Turns on a folder's files between processes: an embedded index's saved files are read and written by every
process of a library that shares its folder (a CLI run beside the service)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def turn(directory: Path, exclusive: bool) -> Iterator[None]:
    """Hold the folder's ``.lock``: shared to read its files, exclusive to write them (created when missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)
