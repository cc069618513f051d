"""Issue #24, points 5, 7 and 9: what an HTTP caller names must stay inside LOOKALIKE_SOURCE_ROOTS, whatever
links and CSV rows say, and a URL must never become a server path."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lookalike.config import Settings
from lookalike.library import Library
from tests.conftest import photo
from tests.security.serving import client_for

API = "/api/v1"


@pytest.fixture
def lib(settings: Settings, embedder):
    with Library(settings, embedder=embedder) as library:
        yield library



def finished(c: TestClient, job: dict, within: float = 120) -> dict:
    deadline = time.monotonic() + within
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job = c.get(f"{API}/jobs/{job['id']}").json()
    return job


@pytest.fixture
def rooted(tmp_path: Path) -> tuple[Path, Path]:
    """A root with one photo, a link out of it, and a CSV whose row climbs out of it; the secret outside."""
    root, secret = tmp_path / "r", tmp_path / "secret"
    root.mkdir()
    secret.mkdir()
    shutil.copy(photo("goldfish", 0), root / "fish.jpg")
    shutil.copy(photo("tiger_cat", 0), secret / "secret.jpg")
    (root / "link.jpg").symlink_to(secret / "secret.jpg")
    (root / "linked-folder").symlink_to(secret)
    (root / "list.csv").write_text("path,label\n../secret/secret.jpg,x\nfish.jpg,fish\n")
    return root, secret


def test_a_job_on_a_root_never_opens_what_a_link_or_a_csv_row_points_outside(lib, rooted) -> None:
    root, secret = rooted
    with client_for(lib, source_roots=[str(root)]) as c:
        for named in (root, root / "list.csv", root / "link.jpg"):
            r = c.post(f"{API}/jobs/index", json={"paths": [str(named)]})
            if r.status_code == 403:  # the link named directly is outside: refused before any job
                assert named.name == "link.jpg"
                continue
            assert r.status_code == 202, r.text
            job = finished(c, r.json())
            assert job["state"] == "done", job
            reasons = {Path(e["source"]).name: e["reason"] for e in job["errors"]}
            if named == root:  # a link to a folder is never followed, and said so
                assert reasons.pop("linked-folder") == "a symbolic link to a folder: not followed"
            assert set(reasons) == {"link.jpg" if named == root else "secret.jpg"}, reasons
            assert all("LOOKALIKE_SOURCE_ROOTS" in why for why in reasons.values())
        secret_bytes = (secret / "secret.jpg").read_bytes()
        images = c.get(f"{API}/images").json()["images"]
        assert [Path(i["source"]).name for i in images] == ["fish.jpg"]
        for image in images:
            assert c.get(image["original_url"]).content != secret_bytes


def test_nul_bytes_in_paths_get_422_not_500(lib, tmp_path) -> None:
    with client_for(lib, source_roots=[str(tmp_path)]) as c:
        for path in (f"{tmp_path}/\u0000x", "/tmp/\u0000x", "\u0000"):
            r = c.post(f"{API}/jobs/index", json={"paths": [path]})
            assert r.status_code == 422 and "NUL" in r.json()["detail"], (path, r.status_code)


@pytest.mark.parametrize("scheme", ["HTTP", "Http", "hTTp", "HTTPS"])
def test_an_upper_case_scheme_is_a_url_never_a_server_path(lib, tmp_path, monkeypatch, scheme) -> None:
    """Relative to the service's working folder, HTTP://127.0.0.1/photo.jpg is also a file name: it was read."""
    planted = tmp_path / f"{scheme}:" / "127.0.0.1"
    planted.mkdir(parents=True)
    shutil.copy(photo("goldfish", 0), planted / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    with client_for(lib, url_allow_private=False) as c:
        r = c.post(f"{API}/search", json={"url": f"{scheme}://127.0.0.1/photo.jpg"})
        assert r.status_code == 422 and "loopback" in r.json()["detail"], r.text  # refused as a URL, not read
        r = c.post(f"{API}/search", json={"url": f"{scheme}://127.0.0.1\u0000y/photo.jpg"})
        assert r.status_code == 422, r.text


def test_a_path_too_long_gets_a_client_error_not_500(lib, tmp_path) -> None:
    """A component of 300 characters, or a path of 6,000: the file system refuses the name (it was a 500)."""
    with client_for(lib, source_roots=[str(tmp_path)]) as c:
        for path in (f"{tmp_path}/{'a' * 300}", f"{tmp_path}/" + "a/" * 3000):
            r = c.post(f"{API}/jobs/index", json={"paths": [path]})
            assert r.status_code in (400, 422), (r.status_code, r.text[:200])
            assert "too long" in r.json()["detail"], r.json()
