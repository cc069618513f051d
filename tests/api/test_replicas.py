"""Several `lookalike serve` processes (and CLI runs) on one library, as real processes.

The Milvus variants (`..._milvus_server`) run inside the private network namespace that
tests/store/test_milvus_server.py starts, with SeaweedFS as the shared image store.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import httpx
import pytest

from lookalike.store.catalog import Catalog
from tests.conftest import TOWHEE
from tests.services import Service, cli


def photos(n: int, offset: int = 0) -> list[Path]:
    """``n`` distinct shared photos, spread over the classes."""
    every = sorted((TOWHEE / "train").glob("*/*"))
    return every[offset : offset + 10 * n : 10]


def wait_for(condition, timeout: float, step: float = 0.05) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(step)
    return time.perf_counter() - started


def concurrent_uploads(replicas: list[Service], batches: list[list[Path]]) -> list[dict[Path, int]]:
    """Each replica gets its own batch, all at the same time; returns {photo: id} per replica."""
    results: list[dict[Path, int]] = [{} for _ in replicas]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with httpx.Client() as client:
                for path in batches[i]:
                    results[i][path] = replicas[i].upload(path.name, path.read_bytes(), client)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(replicas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    return results


def two_replicas_agree(a: Service, b: Service) -> None:
    first, second = photos(20), photos(20, offset=5)
    ids_a, ids_b = concurrent_uploads([a, b], [first, second])
    uploaded = ids_a | ids_b
    assert len(uploaded) == 40 and len(set(uploaded.values())) == 40
    for replica in (a, b):
        wait_for(lambda r=replica: r.stats()["images"] == 40 and r.stats()["vectors"] == 40, timeout=10)
    for path, image_id in uploaded.items():
        data = path.read_bytes()
        for replica in (a, b):
            found, score = replica.top1(data)
            assert found == image_id and score == pytest.approx(1.0, abs=1e-4), (replica.url, path.name)
    # the same new photo through both replicas at the same moment: stored once, one id everywhere
    same = photos(1, offset=7)[0]
    ids = concurrent_uploads([a, b], [[same], [same]])
    assert ids[0][same] == ids[1][same]
    for replica in (a, b):
        wait_for(lambda r=replica: r.stats()["images"] == 41 and r.stats()["vectors"] == 41, timeout=10)


def killed_replica_loses_nothing_acknowledged(make: callable, catalog_url: str, engine_ids) -> None:
    """Uploads run against a replica that is SIGKILLed mid-way and restarted: every photo it acknowledged
    is present exactly once in the catalog, the vector engine and the image store."""
    replica = make().start()
    acked: dict[Path, int] = {}
    todo = photos(40, offset=3)
    stop = threading.Event()

    def upload() -> None:
        with httpx.Client() as client:
            for path in todo:
                if stop.is_set():
                    return
                try:
                    acked[path] = replica.upload(path.name, path.read_bytes(), client)
                except httpx.HTTPError:
                    return  # the process died under this request: not acknowledged

    thread = threading.Thread(target=upload)
    thread.start()
    wait_for(lambda: len(acked) >= 8, timeout=120)
    replica.kill()
    stop.set()
    thread.join(60)
    assert 8 <= len(acked) < len(todo)
    replica = make().start()  # the same library directory, a new process
    try:
        catalog = Catalog.open(catalog_url)
        records = catalog.get_many(acked.values())
        assert len(records) == len(acked)
        for path, image_id in acked.items():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert records[image_id].sha256 == digest and catalog.id_for_sha(digest) == image_id
            r = httpx.get(f"{replica.url}/api/v1/images/{image_id}/thumbnail", timeout=30)
            assert r.status_code in (200, 307), r.text  # 307: a presigned redirect to the bucket
            assert replica.top1(path.read_bytes())[0] == image_id
        total = catalog.count()
        wait_for(lambda: replica.stats()["vectors"] == total, timeout=10)
        ids = engine_ids(replica)
        assert sorted(ids) == catalog.ids().tolist() and len(ids) == len(set(ids))  # each photo once
        catalog.close()
    finally:
        replica.stop()


# --- PostgreSQL catalog, each replica with its own library directory and embedded index -------------------
def test_two_replicas_on_one_postgresql_catalog(pg_url: str, tmp_path: Path) -> None:
    a = Service(tmp_path / "a", database_url=pg_url)
    b = Service(tmp_path / "b", database_url=pg_url)
    for replica in (a, b):
        replica.start()
    try:
        two_replicas_agree(a, b)
    finally:
        for replica in (a, b):
            replica.stop()


def test_a_replica_killed_during_uploads_loses_nothing(pg_url: str, tmp_path: Path) -> None:
    def engine_ids(replica: Service) -> list[int]:
        from lookalike.config import Settings
        from lookalike.library import Library

        # the replica's own embedded index, as its files and the feed make it: what a fresh process loads
        replica.stop()
        with Library(Settings(home=tmp_path / "a", database_url=pg_url)) as lib:
            return lib.vectors.ids().tolist()

    killed_replica_loses_nothing_acknowledged(lambda: Service(tmp_path / "a", database_url=pg_url), pg_url,
                                              engine_ids)  # fmt: skip


# --- the embedded default: SQLite, one library directory ---------------------------------------------------
def test_cli_indexing_while_the_service_runs_is_found_within_2_s(tmp_path: Path) -> None:
    home = tmp_path / "lib"
    first, later = tmp_path / "first", tmp_path / "later"
    for folder, batch in ((first, photos(6)), (later, photos(6, offset=4))):
        folder.mkdir()
        for path in batch:
            (folder / path.name).write_bytes(path.read_bytes())
    assert cli(home, "index", str(first)).returncode == 0
    service = Service(home).start()
    try:
        assert service.stats()["images"] == 6
        run = cli(home, "index", str(later), "--json")
        assert run.returncode == 0, run.stderr
        finished = time.perf_counter()
        target = sorted(later.iterdir())[-1]

        def found() -> bool:
            r = httpx.post(f"{service.url}/api/v1/search", files={"image": ("q.jpg", target.read_bytes())},
                           data={"k": "1"}, timeout=30).json()  # fmt: skip
            return r["hits"][0]["source"] == str(target)

        found_after = wait_for(found, timeout=2.0)
        assert time.perf_counter() - finished < 2.0, found_after
        assert service.stats()["images"] == 12
        removed = cli(home, "remove", str(service.top1(target.read_bytes())[0]))
        assert removed.returncode == 0, removed.stderr
        wait_for(lambda: service.stats()["vectors"] == 11, timeout=2.0)
    finally:
        service.stop()


# --- Milvus standalone server + SeaweedFS S3, inside the private network namespace ------------------------
@pytest.fixture
def milvus_s3(milvus_server_uri: str, s3_endpoint: str, pg_url: str, request) -> dict:
    prefix = "r" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]
    return {"database_url": pg_url, "vector_backend": milvus_server_uri, "image_store": f"s3://library/{prefix}",
            "s3_endpoint_url": s3_endpoint, "s3_access_key": "test", "s3_secret_key": "test"}  # fmt: skip


def test_two_replicas_on_milvus_and_s3_milvus_server(milvus_s3: dict, tmp_path: Path) -> None:
    a, b = Service(tmp_path / "a", **milvus_s3), Service(tmp_path / "b", **milvus_s3)
    for replica in (a, b):
        replica.start()
    try:
        two_replicas_agree(a, b)
        info = a.stats()
        assert info["backend"] == milvus_s3["vector_backend"] and info["collections"] == b.stats()["collections"]
    finally:
        for replica in (a, b):
            replica.stop()


def test_a_replica_killed_during_uploads_loses_nothing_milvus_server(milvus_s3: dict, tmp_path: Path) -> None:
    def engine_ids(replica: Service) -> list[int]:
        from pymilvus import MilvusClient

        name = replica.stats()["collections"][0]
        client = MilvusClient(uri=milvus_s3["vector_backend"])
        rows = client.query(name, filter="id >= 0", output_fields=["id"], consistency_level="Strong", limit=16384)
        client.close()
        return [int(r["id"]) for r in rows]

    killed_replica_loses_nothing_acknowledged(lambda: Service(tmp_path / "a", **milvus_s3),
                                              milvus_s3["database_url"], engine_ids)  # fmt: skip
