"""When the database blinks (issue 25): a real PostgreSQL server restarted (``pg_ctl restart -m fast``) and then
stopped for 15 s in the middle of an index job run by two real `lookalike worker` processes, with a real
`lookalike serve` in front and the photos' files in a real S3 server.

The job ends ``done`` with nothing rejected and nothing owed; every photo is stored exactly once in the catalog,
the vector engine and the image store; both workers are still running; while the catalog is away the service
answers 503 problem details with Retry-After (never 500) and its readiness check fails while liveness holds; once
it is back, searches answer 200 again.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from lookalike.store.catalog import Catalog
from tests.api.test_workers import start_worker, stop_workers
from tests.conftest import TOWHEE
from tests.s3server import make_client
from tests.services import Service

API = "/api/v1"
PHOTOS = 300  # a few hundred at most: the test runs in CI on two cores (about 20 photos/s there)
OUTAGE = 15.0  # seconds the server is stopped
FINISHED = ("done", "failed", "cancelled")


def status(call: Callable[[], httpx.Response]) -> httpx.Response | None:
    """The service's answer, or None when it did not answer at all (which the test counts as a failure)."""
    try:
        return call()
    except httpx.HTTPError:
        return None


def is_503_problem(r: httpx.Response | None) -> bool:
    return (r is not None and r.status_code == 503 and r.headers.get("retry-after", "").isdigit()
            and r.headers.get("content-type", "").startswith("application/problem+json"))  # fmt: skip


def test_a_job_rides_out_a_database_restart_and_a_15_s_outage(own_pg, s3_endpoint: str, tmp_path: Path) -> None:
    url = own_pg.create_database()
    photos = tmp_path / "photos"
    for path in sorted((TOWHEE / "train").glob("*/*"))[:PHOTOS]:
        (photos / path.parent.name).mkdir(parents=True, exist_ok=True)
        (photos / path.parent.name / path.name).write_bytes(path.read_bytes())
    query = next(photos.glob("*/*")).read_bytes()
    prefix = "outage" + uuid.uuid4().hex[:8]
    # a short lease: the 15 s outage outlasts it, so leases run out and chunks may change hands afterwards
    common = {"database_url": url, "job_lease": "8", "job_chunk": "10", "source_roots": f'["{photos}"]',
              "image_store": f"s3://library/{prefix}", "s3_endpoint_url": s3_endpoint, "s3_access_key": "test",
              "s3_secret_key": "test"}  # fmt: skip
    service = Service(tmp_path / "api", serve_worker="0", **common).start()
    workers = [start_worker(tmp_path / f"w{i}", tmp_path / f"w{i}.log", **common) for i in range(2)]
    search = lambda: httpx.post(f"{service.url}{API}/search", files={"image": ("q.jpg", query, "image/jpeg")},  # noqa: E731
                                data={"k": "1"}, timeout=30)  # fmt: skip
    try:
        r = httpx.post(f"{service.url}{API}/jobs/index", json={"paths": [str(photos)]}, timeout=30)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        answers: list[int | None] = []  # every status the service gave, whatever the moment

        def job() -> dict | None:
            r = status(lambda: httpx.get(f"{service.url}{API}/jobs/{job_id}", timeout=30))
            answers.append(None if r is None else r.status_code)
            return r.json() if r is not None and r.status_code == 200 else None

        def wait_for(done: int, timeout: float) -> dict:
            deadline = time.time() + timeout
            while True:
                progress = job()
                if progress is not None and (progress["done"] >= done or progress["state"] in FINISHED):
                    return progress
                assert time.time() < deadline, f"job not at {done} photos in {timeout:.0f} s: {progress}"
                time.sleep(0.3)

        # fault 1: a restart while chunks are being written
        first = wait_for(20, 180)
        assert first["state"] == "running", first
        own_pg.restart()
        for _ in range(5):  # right after the restart: 200 or 503, nothing else
            r = status(search)
            answers.append(None if r is None else r.status_code)
            time.sleep(0.2)

        # fault 2: the server stopped for 15 s, with most of the job still to do
        second = wait_for(first["done"] + 20, 180)
        assert second["state"] == "running" and second["done"] <= PHOTOS - 100, second
        own_pg.pause()
        stopped = time.monotonic()
        during: dict[str, list[httpx.Response | None]] = {"search": [], "job": [], "stats": [], "ready": []}
        live: list[int | None] = []
        while time.monotonic() - stopped < OUTAGE:
            settled = time.monotonic() - stopped > 3  # the service looks at the catalog every 0.5 s
            for name, call in (("search", search), ("ready", lambda: httpx.get(f"{service.url}/healthz/ready")),
                               ("job", lambda: httpx.get(f"{service.url}{API}/jobs/{job_id}", timeout=30)),
                               ("stats", lambda: httpx.get(f"{service.url}{API}/stats", timeout=30))):  # fmt: skip
                r = status(call)
                answers.append(None if r is None else r.status_code)
                if settled:
                    during[name].append(r)
            r = status(lambda: httpx.get(f"{service.url}/healthz/live", timeout=10))
            live.append(None if r is None else r.status_code)
            assert all(w.poll() is None for w in workers), "a worker exited during the outage"
            time.sleep(0.5)
        own_pg.resume()

        ready = during.pop("ready")
        assert ready and all(r is not None and r.status_code == 503 and r.headers.get("retry-after") for r in ready)
        assert ready[-1].json()["status"] == "unavailable" and ready[-1].json()["checks"]["catalog"] != "ok"
        for name, got in during.items():
            assert got and all(is_503_problem(r) for r in got), (name, [None if r is None else r.status_code
                                                                        for r in got])  # fmt: skip
        assert set(live) == {200}, live
        deadline = time.time() + 60
        while (r := status(search)) is None or r.status_code != 200:
            answers.append(None if r is None else r.status_code)
            assert time.time() < deadline, "searches did not answer 200 within 60 s of the database's return"
            time.sleep(0.5)
        assert httpx.get(f"{service.url}/healthz/ready", timeout=30).status_code == 200

        progress = wait_for(PHOTOS + 1, 300)  # until finished
        assert progress["state"] == "done" and progress["done"] == progress["total"] == PHOTOS, progress
        assert progress["rejected"] == 0 and progress["owed"] == 0 and progress["errors"] == [], progress
        assert set(answers) <= {200, 503}, sorted(set(answers), key=str)  # never a 500, never no answer
        assert all(w.poll() is None for w in workers), "a worker exited"

        # every photo exactly once: in the catalog, in the service's index, in the bucket
        catalog = Catalog.open(url)
        try:
            counts = catalog.counts()
            shas = {r.sha256 for r in catalog.get_many(catalog.ids()).values()}
        finally:
            catalog.close()
        assert counts["images"] == counts["sources"] == len(shas) == PHOTOS, counts
        deadline = time.time() + 30
        while (stats := service.stats())["vectors"] != PHOTOS:
            assert time.time() < deadline, stats
            time.sleep(0.2)
        assert stats["images"] == PHOTOS
        pages = make_client(s3_endpoint).get_paginator("list_objects_v2")
        keys = [o["Key"] for p in pages.paginate(Bucket="library", Prefix=f"{prefix}/thumbnails/")
                for o in p.get("Contents", [])]  # fmt: skip
        assert len(keys) == PHOTOS and {Path(k).stem for k in keys} == shas
    finally:
        stop_workers(workers)
        service.stop()


def test_a_service_and_a_worker_started_while_the_database_is_down_wait_for_it(own_pg, photo_dir: Path,
                                                                               tmp_path: Path) -> None:  # fmt: skip
    """Started before their database (a host reboot, a compose stack coming up in any order), neither exits:
    the service is live but not ready and says what it waits for; both carry on once the database is up."""
    url = own_pg.create_database()
    common = {"database_url": url, "source_roots": f'["{photo_dir}"]'}
    own_pg.pause()
    service = Service(tmp_path / "api", serve_worker="0", **common)
    started: list[BaseException | None] = []
    opener = threading.Thread(target=lambda: started.append(_start(service)), daemon=True)
    opener.start()
    worker = start_worker(tmp_path / "w", tmp_path / "w.log", **common)
    try:
        deadline = time.time() + 60
        while (r := status(lambda: httpx.get(f"{service.url}/healthz/live", timeout=5))) is None:
            assert time.time() < deadline and not started, f"not live: {started}"
            time.sleep(0.3)
        assert r.status_code == 200
        time.sleep(3)  # a few of their tries at the database
        ready = httpx.get(f"{service.url}/healthz/ready", timeout=10)
        assert ready.status_code == 503 and ready.headers["retry-after"].isdigit(), ready.text
        assert ready.json()["status"] == "loading" and "catalog database" in ready.json()["detail"], ready.text
        r = httpx.get(f"{service.url}{API}/stats", timeout=10)
        assert is_503_problem(r), r.text
        assert worker.poll() is None and service.proc.poll() is None
        own_pg.resume()
        opener.join(120)
        assert started == [None], started
        r = httpx.post(f"{service.url}{API}/jobs/index", json={"paths": [str(photo_dir)]}, timeout=30)
        assert r.status_code == 202, r.text
        job_id, deadline = r.json()["id"], time.time() + 120
        while (job := httpx.get(f"{service.url}{API}/jobs/{job_id}", timeout=30).json())["state"] not in FINISHED:
            assert time.time() < deadline, job
            time.sleep(0.3)
        assert job["state"] == "done" and job["added"] == 12, job
        assert f"job {job_id} chunk 1:" in (tmp_path / "w.log").read_text()  # the only worker: the one started early
    finally:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(30)
        service.stop()


def _start(service: Service) -> BaseException | None:
    try:
        service.start(timeout=180)
        return None
    except BaseException as exc:  # reported to the test's thread
        return exc


def test_a_job_rides_out_an_image_store_restart(pg_url: str, tmp_path: Path) -> None:
    """The S3 server holding the photos' files stops for 10 s mid-job, then starts again: the workers keep their
    chunks and finish them once it is back (no photo rejected for it), readiness names the store meanwhile."""
    from tests import s3server

    ports, folder = s3server.free_ports(8), tmp_path / "weed"
    weed, endpoint = s3server.start(folder, ports)
    photos = tmp_path / "photos"
    for path in sorted((TOWHEE / "train").glob("*/*"))[:150]:
        (photos / path.parent.name).mkdir(parents=True, exist_ok=True)
        (photos / path.parent.name / path.name).write_bytes(path.read_bytes())
    common = {"database_url": pg_url, "job_lease": "8", "job_chunk": "10", "source_roots": f'["{photos}"]',
              "image_store": "s3://library/restart", "s3_endpoint_url": endpoint, "s3_access_key": "test",
              "s3_secret_key": "test"}  # fmt: skip
    service = Service(tmp_path / "api", serve_worker="0", **common).start()
    workers = [start_worker(tmp_path / f"w{i}", tmp_path / f"w{i}.log", **common) for i in range(2)]
    try:
        r = httpx.post(f"{service.url}{API}/jobs/index", json={"paths": [str(photos)]}, timeout=30)
        job_id, deadline = r.json()["id"], time.time() + 180
        job = lambda: httpx.get(f"{service.url}{API}/jobs/{job_id}", timeout=30).json()  # noqa: E731
        while (progress := job())["done"] < 20:
            assert time.time() < deadline, progress
            time.sleep(0.2)
        assert progress["state"] == "running" and progress["done"] <= 100, progress
        s3server.stop(weed)
        stopped, ready = time.monotonic(), []
        while time.monotonic() - stopped < 10:
            ready.append(status(lambda: httpx.get(f"{service.url}/healthz/ready", timeout=30)))
            assert all(w.poll() is None for w in workers), "a worker exited while the store was away"
            time.sleep(1)
        weed, _ = s3server.start(folder, ports)
        assert all(r is not None and r.status_code == 503 for r in ready[1:]), [getattr(r, "text", r) for r in ready]
        assert ready[-1].json()["checks"]["store"] != "ok" and ready[-1].json()["checks"]["catalog"] == "ok"
        while (progress := job())["state"] not in FINISHED:
            assert time.time() < deadline + 120, progress
            time.sleep(0.3)
        assert progress["state"] == "done" and progress["done"] == 150 and progress["rejected"] == 0, progress
        assert all(w.poll() is None for w in workers)
        catalog = Catalog.open(pg_url)
        try:
            shas = {r.sha256 for r in catalog.get_many(catalog.ids()).values()}
        finally:
            catalog.close()
        pages = make_client(endpoint).get_paginator("list_objects_v2")
        keys = [o["Key"] for p in pages.paginate(Bucket="library", Prefix="restart/thumbnails/")
                for o in p.get("Contents", [])]  # fmt: skip
        assert len(shas) == len(keys) == 150 and {Path(k).stem for k in keys} == shas
        assert httpx.get(f"{service.url}/healthz/ready", timeout=30).status_code == 200
    finally:
        stop_workers(workers)
        service.stop()
        s3server.stop(weed)


def test_a_job_rides_out_a_frozen_milvus_server_milvus_server(milvus_server_uri: str, s3_endpoint: str, pg_url: str,
                                                                tmp_path: Path) -> None:  # fmt: skip
    """The vector engine away mid-job: the Milvus server frozen (SIGSTOP: connections open, nothing answers, as in a
    network partition) for 20 s, while two workers index into the shared catalog and `lookalike serve` keeps Milvus
    current from the change feed. Searches answer 503 while it is away (never 500, within the 10 s bound on every
    engine call), liveness holds, the job and its progress go on (the catalog is up), and afterwards every photo is
    in Milvus's collections exactly once."""
    from pymilvus import MilvusClient

    from tests import milvusserver

    photos = tmp_path / "photos"
    count = 150
    for path in sorted((TOWHEE / "train").glob("*/*"))[:count]:
        (photos / path.parent.name).mkdir(parents=True, exist_ok=True)
        (photos / path.parent.name / path.name).write_bytes(path.read_bytes())
    query = next(photos.glob("*/*")).read_bytes()
    prefix = "milvusout" + uuid.uuid4().hex[:8]
    common = {"database_url": pg_url, "vector_backend": milvus_server_uri, "job_chunk": "10",
              "source_roots": f'["{photos}"]', "image_store": f"s3://library/{prefix}", "s3_endpoint_url": s3_endpoint,
              "s3_access_key": "test", "s3_secret_key": "test"}  # fmt: skip
    service = Service(tmp_path / "api", serve_worker="0", **common).start()
    workers = [start_worker(tmp_path / f"w{i}", tmp_path / f"w{i}.log", **common) for i in range(2)]
    search = lambda: httpx.post(f"{service.url}{API}/search", files={"image": ("q.jpg", query, "image/jpeg")},  # noqa: E731
                                data={"k": "1"}, timeout=30)  # fmt: skip
    answers: list[int | None] = []
    try:
        r = httpx.post(f"{service.url}{API}/jobs/index", json={"paths": [str(photos)]}, timeout=30)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]

        def job() -> dict:
            r = status(lambda: httpx.get(f"{service.url}{API}/jobs/{job_id}", timeout=30))
            answers.append(None if r is None else r.status_code)
            assert r is not None and r.status_code == 200, "the job's progress must stay readable: the catalog is up"
            return r.json()

        deadline = time.time() + 180
        while (progress := job())["done"] < 20:
            assert time.time() < deadline and progress["state"] not in FINISHED, progress
            time.sleep(0.3)
        milvusserver.signal_session(signal.SIGSTOP)
        stopped = time.monotonic()
        searches, ready, live = [], [], []
        while time.monotonic() - stopped < 20:
            r = status(search)
            answers.append(None if r is None else r.status_code)
            if time.monotonic() - stopped > 2:
                searches.append(r)
            ready.append(status(lambda: httpx.get(f"{service.url}/healthz/ready", timeout=30)))
            live.append(status(lambda: httpx.get(f"{service.url}/healthz/live", timeout=10)))
            job()
            assert all(w.poll() is None for w in workers), "a worker exited while the engine was away"
            time.sleep(0.5)
        milvusserver.signal_session(signal.SIGCONT)
        assert searches and all(is_503_problem(r) for r in searches), [None if r is None else r.status_code
                                                                       for r in searches]  # fmt: skip
        assert any(r is not None and r.status_code == 503 for r in ready)
        assert all(r is not None and r.status_code == 200 for r in live)

        deadline = time.time() + 300
        while (progress := job())["state"] not in FINISHED:
            assert time.time() < deadline, progress
            time.sleep(0.5)
        assert progress["state"] == "done" and progress["done"] == progress["total"] == count, progress
        assert progress["rejected"] == 0 and progress["owed"] == 0, progress
        deadline = time.time() + 120
        while (r := status(search)) is None or r.status_code != 200:
            answers.append(None if r is None else r.status_code)
            assert time.time() < deadline, ("searches did not answer 200 within 120 s of the job's end: "
                                            f"{None if r is None else (r.status_code, r.text[:300])}\n"
                                            f"{service.log()[-4000:]}")  # fmt: skip
            time.sleep(1)
        assert set(answers) <= {200, 503}, sorted(set(answers), key=str)  # never a 500, never no answer
        assert all(w.poll() is None for w in workers), "a worker exited"

        # every photo of the catalog exactly once in each Milvus collection, once the follower has caught up
        catalog = Catalog.open(pg_url)
        try:
            assert len(catalog.source_states(str(p) for p in photos.glob("*/*"))) == count  # the session's database
            truth = sorted(catalog.ids().tolist())
            copy_truth = sorted(catalog.copy_vector_ids().tolist())
        finally:
            catalog.close()
        client = MilvusClient(uri=milvus_server_uri)
        try:
            names = service.stats()["collections"]
            deadline = time.time() + 120
            while True:
                held = {n: sorted(int(r["id"]) for r in client.query(n, filter="id >= 0", output_fields=["id"],
                                                                       consistency_level="Strong", limit=16384))
                        for n in (names[0], names[2])}  # fmt: skip
                if held[names[0]] == truth and held[names[2]] == copy_truth:
                    break
                assert time.time() < deadline, {n: (len(v), len(set(v))) for n, v in held.items()}
                time.sleep(1)
        finally:
            client.close()
    finally:
        stop_workers(workers)
        service.stop()
