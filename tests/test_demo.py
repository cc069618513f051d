"""The demo's photos for a clone without ../shared: pinned, checked, resumable, one line when offline.

The photos are served by a real HTTP server on loopback from the shared Towhee folder, which has the layout of
the pinned repository's ``images/`` folder."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lookalike import demo
from tests.conftest import MODELS, TOWHEE


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    handler = functools.partial(Quiet, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_the_manifest_pins_every_shared_demo_photo_byte_for_byte() -> None:
    photos = demo.manifest()
    assert len(photos) == 1100 and sum(p.path.startswith("train/") for p in photos) == 1000
    assert demo.missing(TOWHEE, photos) == []  # the shared copy is the pinned commit's files, every byte


def test_fetch_puts_checked_photos_in_place_and_resumes(tmp_path: Path) -> None:
    photos = demo.manifest()[:40]
    assert len(demo.missing(tmp_path, photos)) == 40
    done = []
    with serving(TOWHEE) as url:
        demo.fetch(tmp_path, photos, url, lambda: done.append(1))
    assert len(done) == 40 and demo.missing(tmp_path, photos) == []
    first = tmp_path / photos[0].path
    assert first.read_bytes() == (TOWHEE / photos[0].path).read_bytes()
    first.write_bytes(first.read_bytes()[:-10])  # damaged: fetched again, the others kept
    assert demo.missing(tmp_path, photos) == [photos[0]]
    with serving(TOWHEE) as url:
        demo.fetch(tmp_path, demo.missing(tmp_path, photos), url)
    assert demo.missing(tmp_path, photos) == [] and first.read_bytes() == (TOWHEE / photos[0].path).read_bytes()


def test_a_photo_that_does_not_match_its_checksum_is_refused(tmp_path: Path) -> None:
    photo = demo.manifest()[0]
    served = tmp_path / "served"
    (served / photo.path).parent.mkdir(parents=True)
    data = bytearray((TOWHEE / photo.path).read_bytes())
    data[1000] ^= 0xFF  # one byte changed on the way
    (served / photo.path).write_bytes(bytes(data))
    with serving(served) as url, pytest.raises(demo.DemoFetchError, match="sha256"):
        demo.fetch(tmp_path / "demo", [photo], url)
    assert not (tmp_path / "demo" / photo.path).exists() and hashlib.sha256(data).hexdigest() != photo.sha256


def test_offline_the_demo_says_so_in_one_line(tmp_path: Path, capsys) -> None:
    assert demo.main([str(tmp_path / "demo"), "--url", closed_url()]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "could not be fetched" in err and "lookalike index DIR" in err
    assert "Traceback" not in err


def test_a_folder_that_has_them_all_fetches_nothing(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "demo"
    shutil.copytree(TOWHEE / "train", folder / "train")
    shutil.copytree(TOWHEE / "test", folder / "test")
    assert demo.main([str(folder), "--url", closed_url()]) == 0  # nothing is fetched, so offline does not matter
    assert "all 1100 demo photos (0 fetched now)" in capsys.readouterr().out


ROOT = Path(__file__).resolve().parents[1]


def make_demo(tmp_path: Path, *settings: str, models: Path | None = None) -> subprocess.CompletedProcess:
    venv = Path(sys.prefix)
    if not (venv / ".installed").exists() or shutil.which("make") is None:
        pytest.skip("needs the Makefile's installed virtual environment and make")
    home = tmp_path / "user"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")} | {"HOME": str(home)}
    if models is not None:  # the model files (fetched on first use otherwise: not from a test)
        env["LOOKALIKE_MODELS_DIR"] = str(models)
    return subprocess.run(["make", "-C", str(ROOT), "demo", f"VENV={venv}", f"DEMO_HOME={tmp_path / 'demo'}",
                           *settings], env=env, capture_output=True, text=True, timeout=900)  # fmt: skip


def test_make_demo_uses_its_own_library(tmp_path: Path) -> None:
    """`make demo` in a clone with no ../shared beside it: the photos are fetched (from a loopback mirror here),
    the library is the demo's own and the user's stays untouched."""
    with serving(TOWHEE) as url:
        run = make_demo(tmp_path, f"SHARED={tmp_path / 'no-shared'}", f"DEMO_PHOTOS={tmp_path / 'photos'}",
                        f"DEMO_URL={url}", models=MODELS)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "all 1100 demo photos (1100 fetched now)" in run.stdout
    assert "precision@10" in run.stdout and "goldfish" in run.stdout
    assert not (tmp_path / "user" / ".local" / "share" / "lookalike").exists()  # the user's library: untouched
    assert (tmp_path / "demo" / "catalog.sqlite").exists()


def test_make_demo_offline_says_so_in_one_line(tmp_path: Path) -> None:
    run = make_demo(tmp_path, f"SHARED={tmp_path / 'no-shared'}", f"DEMO_PHOTOS={tmp_path / 'photos'}",
                    f"DEMO_URL={closed_url()}")  # fmt: skip
    assert run.returncode != 0
    assert "could not be fetched" in run.stderr and "Traceback" not in run.stderr + run.stdout


class Misbehaving(SimpleHTTPRequestHandler):
    """Claims a gigabyte, then sends it fast (``flood``) or a byte at a time (``drip``)."""

    mode = "flood"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 30))
        self.end_headers()
        try:
            for _ in range(1 << 14):
                self.wfile.write(b"x" * (1 << 16) if self.mode == "flood" else b"x")
                self.wfile.flush()
                if self.mode == "drip":
                    time.sleep(0.2)
        except OSError:
            pass  # the client gave up, as it should

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass


@pytest.mark.parametrize("mode", ["flood", "drip"])
def test_a_server_that_sends_too_much_or_too_slowly_is_left(tmp_path: Path, mode: str, monkeypatch) -> None:
    """Never more bytes than the manifest pins (a flood would fill the memory), never longer than the deadline (a
    drip passes every per-read timeout); nothing is left in place."""
    monkeypatch.setattr(demo, "FILE_DEADLINE", 2.0)
    handler = type("Handler", (Misbehaving,), {"mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    photo = demo.manifest()[0]
    started = time.monotonic()
    try:
        with pytest.raises(demo.DemoFetchError, match="longer than"):
            demo.fetch(tmp_path, [photo], f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert time.monotonic() - started < 20 and not (tmp_path / photo.path).exists()
