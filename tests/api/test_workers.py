"""`lookalike serve` + two `lookalike worker` processes on one PostgreSQL catalog: a job survives a worker
killed with SIGKILL and a restart of the service."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lookalike.store.catalog import Catalog
from tests.conftest import TOWHEE
from tests.services import Service, cli, lookalike_env

API = "/api/v1"


def start_worker(home: Path, log: Path, **settings: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lookalike", "worker", "--threads", "1"]
    return subprocess.Popen(cmd, env=lookalike_env(home, **settings), stdout=log.open("ab"), stderr=subprocess.STDOUT)


def stop_workers(workers: list[subprocess.Popen]) -> None:
    """Terminate the worker processes still running (kill one that does not stop within 30 s)."""
    for w in workers:
        if w.poll() is None:
            w.terminate()
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()


def test_a_job_survives_a_killed_worker_and_a_restarted_service(pg_url: str, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for path in sorted((TOWHEE / "train").glob("*/*"))[:300]:
        (photos / path.parent.name).mkdir(parents=True, exist_ok=True)
        (photos / path.parent.name / path.name).write_bytes(path.read_bytes())
    common = {"database_url": pg_url, "job_lease": "3", "job_chunk": "20", "source_roots": f'["{photos}"]'}
    service = Service(tmp_path / "api", serve_worker="0", **common).start()
    workers = [start_worker(tmp_path / f"w{i}", tmp_path / f"w{i}.log", **common) for i in range(2)]
    try:
        r = httpx.post(f"{service.url}{API}/jobs/index", json={"paths": [str(photos)]}, timeout=30)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]

        def job(url: str) -> dict:
            return httpx.get(f"{url}{API}/jobs/{job_id}", timeout=30).json()

        deadline = time.time() + 120
        while job(service.url)["done"] < 60:
            assert time.time() < deadline, job(service.url)
            time.sleep(0.2)
        victim = random.choice(workers)
        while not any(f":{victim.pid}:" in w for w in job(service.url)["workers"]):
            assert time.time() < deadline, job(service.url)
            time.sleep(0.02)
        victim.kill()  # SIGKILL mid-chunk: its chunk's lease expires, the other worker takes it
        victim.wait()
        service.stop()  # the service goes away mid-job; the job lives in the catalog
        service = Service(tmp_path / "api", serve_worker="0", **common).start()
        progress = job(service.url)
        assert progress["state"] == "running" and 60 <= progress["done"] <= 300 and progress["total"] == 300
        while (progress := job(service.url))["state"] not in ("done", "failed", "cancelled"):
            assert time.time() < deadline + 180, progress
            time.sleep(0.3)
        assert progress["state"] == "done" and progress["done"] == 300, progress
        catalog = Catalog.open(pg_url)
        counts = catalog.counts()
        assert counts["images"] == 300 and counts["sources"] == 300  # every photo exactly once
        assert len({r.sha256 for r in catalog.get_many(catalog.ids()).values()}) == 300
        with catalog.db.read() as conn:  # the killed worker's chunk was run again by the other one
            retried = conn.exec_driver_sql(f"SELECT MAX(attempts) FROM job_tasks WHERE job_id = {job_id}").scalar()
        assert retried >= 2
        catalog.close()
        assert service.stats()["images"] == 300
        deadline = time.time() + 10
        while service.stats()["vectors"] != 300:
            assert time.time() < deadline
            time.sleep(0.1)
        listed = cli(tmp_path / "api", "jobs", "--json", database_url=pg_url)
        assert listed.returncode == 0 and f'"id": {job_id}' in listed.stdout
    finally:
        stop_workers(workers)
        service.stop()
