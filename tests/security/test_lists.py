"""Issue #24, points 6, 9 and 10: CSVs and URL lists are opened like photos (FIFOs refused at once, sizes and
lines bounded) and a malformed one is a clear error, over HTTP (422) and in the CLI (no traceback)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import photo
from tests.services import Service, cli, lookalike_env

API = "/api/v1"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FIFOs under list names, malformed CSVs, and one good photo."""
    folder = tmp_path_factory.mktemp("lists") / "root"
    folder.mkdir()
    shutil.copy(photo("goldfish", 0), folder / "fish.jpg")
    for name in ("pipe.txt", "pipe.csv", "pipe.urls", "pipe.list"):
        os.mkfifo(folder / name)
    (folder / "latin1.csv").write_bytes("path,label\nfish.jpg,caf\xe9\n".encode("latin-1"))
    (folder / "wide.csv").write_text('path,label\nfish.jpg,"' + "x" * (200 * 1024) + '"\n')
    with (folder / "big.txt").open("wb") as fh:  # 1 GB, no newline (sparse: takes no disk)
        fh.truncate(2**30)
    with (folder / "big.csv").open("wb") as fh:
        fh.truncate(2**30)
    return folder


@pytest.fixture(scope="module")
def service(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("svc") / "home", source_roots=f'["{root}"]').start()
    yield svc
    svc.stop()


BAD = ["pipe.txt", "pipe.csv", "pipe.urls", "pipe.list", "latin1.csv", "wide.csv", "big.txt", "big.csv"]


@pytest.mark.parametrize("name", BAD)
def test_a_bad_list_gets_a_clear_422_at_once(service: Service, root: Path, name: str) -> None:
    r = httpx.post(f"{service.url}{API}/jobs/index", json={"paths": [str(root / name)]}, timeout=30)
    assert r.status_code == 422, (name, r.status_code, r.text[:300])
    assert str(root / name) in r.json()["detail"]


def test_fifos_do_not_wedge_the_service_or_its_worker(service: Service, root: Path) -> None:
    for _ in range(3):
        for name in ("pipe.txt", "pipe.csv"):
            r = httpx.post(f"{service.url}{API}/jobs/index", json={"paths": [str(root / name)]}, timeout=30)
            assert r.status_code == 422
    assert httpx.get(f"{service.url}{API}/stats", timeout=30).status_code == 200
    r = httpx.post(f"{service.url}{API}/jobs/index", json={"paths": [str(root / "fish.jpg")]}, timeout=30)
    assert r.status_code == 202
    job, deadline = r.json(), time.monotonic() + 120
    while job["state"] in ("queued", "running"):  # the in-process worker was not wedged by the FIFOs
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job = httpx.get(f"{service.url}{API}/jobs/{job['id']}", timeout=30).json()
    assert job["state"] == "done" and job["added"] == 1, job
    assert service.top1(photo("goldfish", 0).read_bytes())[1] > 0.99


@pytest.mark.parametrize("name", BAD)
def test_the_cli_says_what_is_wrong_with_a_list_without_a_traceback(tmp_path: Path, root: Path, name: str) -> None:
    run = cli(tmp_path / "home", "index", str(root / name), timeout=120)
    assert run.returncode != 0 and "Traceback" not in run.stderr + run.stdout, run.stderr[-2000:]
    assert name in run.stderr + run.stdout


PEAK = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], capture_output=True, timeout=120); " \
       "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"  # fmt: skip


@pytest.mark.parametrize("name", ["big.txt", "big.csv"])
def test_the_cli_does_not_read_a_huge_list_into_memory(tmp_path: Path, root: Path, name: str) -> None:
    command = [sys.executable, "-c", PEAK, sys.executable, "-m", "lookalike", "index", str(root / name)]
    run = subprocess.run(command, env=lookalike_env(tmp_path / "home"), capture_output=True, text=True, timeout=180)
    assert int(run.stdout.split()[-1]) < 600 * 1024, run.stdout  # KB: it was 2 GB
