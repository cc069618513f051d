"""Special files: only regular files are opened; FIFOs, sockets and devices are refused without blocking,
broken and looping links are reported, sizes are checked before reading and every read is bounded."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from lookalike.ingest.fetch import FetchError, read_file
from lookalike.library import Library, LibraryError
from tests.conftest import photo
from tests.services import cli


@pytest.fixture
def salted(tmp_path: Path) -> Path:
    """A folder of two real photos and every kind of file that is not one."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        shutil.copy(photo("goldfish", i), folder / f"fish{i}.jpg")
    os.mkfifo(folder / "pipe.jpg")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(folder / "socket.jpg"))
    (folder / "loop-a.jpg").symlink_to(folder / "loop-b.jpg")
    (folder / "loop-b.jpg").symlink_to(folder / "loop-a.jpg")
    (folder / "dangling.jpg").symlink_to(folder / "nowhere.jpg")
    (folder / "device.jpg").symlink_to("/dev/urandom")
    yield folder
    sock.close()


def test_indexing_a_folder_with_special_files_reports_each_and_finishes(settings, embedder, salted) -> None:
    started = time.monotonic()
    with Library(settings, embedder=embedder) as lib:
        report = lib.index([str(salted)])
    assert time.monotonic() - started < 60
    reasons = {Path(r.source).name: r.reason for r in report.rejected}
    assert len(report.added) == 2 and set(reasons) == {"pipe.jpg", "socket.jpg", "loop-a.jpg", "loop-b.jpg",
                                                       "dangling.jpg", "device.jpg"}  # fmt: skip
    assert "FIFO" in reasons["pipe.jpg"] and "socket" in reasons["socket.jpg"]
    assert reasons["loop-a.jpg"] == "symbolic link loop" and reasons["dangling.jpg"] == "dangling symbolic link"
    assert "character device" in reasons["device.jpg"]


def test_searching_with_a_fifo_returns_at_once(tmp_path, salted) -> None:
    started = time.monotonic()
    run = cli(tmp_path / "home", "search", str(salted / "pipe.jpg"), timeout=60)
    assert run.returncode == 1 and "not a regular file: a FIFO" in run.stderr
    assert time.monotonic() - started < 30


def test_devices_are_refused_without_reading_and_sizes_are_checked_first(tmp_path, settings, embedder) -> None:
    with pytest.raises(FetchError, match="character device"):
        read_file("/dev/urandom", 10**9)
    with pytest.raises(FetchError, match="character device"):
        read_file("/dev/zero", 10**9)
    sparse = tmp_path / "huge.jpg"
    with open(sparse, "wb") as fh:
        fh.truncate(200 * 2**20)  # 200 MB on paper, nothing on disk: refused by its size, not by reading it
    with pytest.raises(FetchError, match="file too large: 209715200 bytes"):
        read_file(str(sparse), 100 * 2**20)
    with Library(settings, embedder=embedder) as lib, pytest.raises(LibraryError, match="character device"):
        lib.search("/dev/urandom")
