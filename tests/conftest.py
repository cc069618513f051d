"""Shared fixtures: real photos and real models from ../shared, real local servers."""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from lookalike.config import Settings
from lookalike.models.embedder import Embedder
from lookalike.models.registry import load_embedder

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
MODELS = SHARED / "models"
TOWHEE = SHARED / "datasets" / "towhee_reverse_image_search"

if not (MODELS / "mobilenet_v2_1.0_224_quant.tflite").exists():  # pragma: no cover
    raise RuntimeError(f"the tests need the shared models and photos at {SHARED} (or set LOOKALIKE_SHARED)")

CLASSES = ("goldfish", "tiger_cat", "bullet_train")


def photo(label: str, index: int = 0, split: str = "train") -> Path:
    return sorted((TOWHEE / split / label).iterdir())[index]


def copy_photos(root: Path, labels: tuple[str, ...], per_label: int) -> Path:
    """A labelled folder root/<label>/<file> of the first ``per_label`` shared train photos of each label."""
    for label in labels:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            shutil.copy(photo(label, i), root / label)
    return root


def side_by_side(left: str, right: str, side: int) -> bytes:
    """A JPEG of two test photos side by side (each side x side): a photo with two subjects."""
    both = Image.new("RGB", (2 * side, side))
    for i, label in enumerate((left, right)):
        both.paste(Image.open(photo(label, 0, "test")).convert("RGB").resize((side, side)), (i * side, 0))
    buf = io.BytesIO()
    both.save(buf, "JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the user's library or settings by accident."""
    for key in list(os.environ):
        if key.startswith("LOOKALIKE_") and key != "LOOKALIKE_SHARED":
            monkeypatch.delenv(key)
    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path / "default-home"))
    monkeypatch.setenv("LOOKALIKE_MODELS_DIR", str(MODELS))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # the tests' URL sources are on 127.0.0.1, which the SSRF guard refuses by default
    return Settings(home=tmp_path / "lib", models_dir=MODELS, allow_download=False, url_allow_private=True)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return load_embedder(Settings(models_dir=MODELS, allow_download=False))


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    """A small labelled folder of real photos: 3 classes x 4 photos, as <label>/<file>."""
    return copy_photos(tmp_path / "photos", CLASSES, 4)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files plus a few misbehaving endpoints for URL-fetch tests."""

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
        elif self.path == "/nowhere":  # a redirect that names no place
            self.send_response(302)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/bad-host":  # a redirect to a host name IDNA cannot decode
            self.send_response(302)
            self.send_header("Location", "http://xn--/x.jpg")
            self.end_headers()
        elif self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "/" + self.path.split("/", 2)[2])
            self.end_headers()
        elif self.path == "/slow":
            time.sleep(3)
            self.send_response(200)
            self.end_headers()
        elif self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(50 * 2**20))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(b"\0" * 2**20)
        elif self.path == "/big-undeclared":
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(50):
                    self.wfile.write(b"\0" * 2**20)
            except OSError:
                pass
        else:
            super().do_GET()


@pytest.fixture
def http_root(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    return root


@pytest.fixture
def http_server(http_root: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving ``http_root``; yields its base URL."""

    def handler(*args, **kwargs):
        return _Handler(*args, directory=str(http_root), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 server (SeaweedFS) on 127.0.0.1 for the whole test session."""
    from tests import s3server

    proc, endpoint = s3server.start(tmp_path_factory.mktemp("seaweedfs"))
    yield endpoint
    s3server.stop(proc)


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Milvus standalone server on 127.0.0.1, only inside the private network namespace that
    tests/store/test_milvus_server.py runs these tests in (the server binds every interface)."""
    from tests import milvusserver

    if not os.environ.get(milvusserver.INSIDE):
        pytest.skip("runs inside a private network namespace, started by tests/store/test_milvus_server.py")
    uri = milvusserver.start_session(tmp_path_factory.mktemp("milvus"))
    yield uri
    milvusserver.stop_session()


@contextlib.contextmanager
def postgres(prefix: str) -> Iterator:
    """A real PostgreSQL server (Debian's package) on a unix socket, in a folder of its own, not under pytest's
    basetemp: the server runs as the postgres user, and a nested pytest session (tests/store/test_milvus_server.py)
    makes /tmp/pytest-of-root private again when it starts; the server then lost its data folder mid-run (PANIC at a
    checkpoint: "Permission denied")."""
    from tests import pgserver

    if pgserver.binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: apt-get install postgresql")
        pytest.skip("needs Debian's postgresql package (make system-deps)")
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = pgserver.PostgresServer(root).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the whole test session."""
    with postgres("lookalike-pg-") as server:
        yield server


@pytest.fixture
def own_pg() -> Iterator:
    """A PostgreSQL server of the test's own, for tests that restart or stop it (doing that to the session's
    server would cut the other tests off)."""
    with postgres("lookalike-pg-own-") as server:
        yield server


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh empty database on the test server."""
    return pg_server.create_database()


@pytest.fixture
def s3_settings(settings: Settings, s3_endpoint: str, request: pytest.FixtureRequest) -> Settings:
    """Settings whose S3 client talks to the test server; the library's files under a prefix of its own."""
    prefix = "t" + str(abs(hash(request.node.nodeid)))[:12]
    return Settings(**{**settings.model_dump(), "s3_endpoint_url": s3_endpoint, "s3_access_key": "test",
                       "s3_secret_key": "test", "image_store": f"s3://library/{prefix}"})  # fmt: skip
