"""One conformance suite for the job queue, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import threading
import time

import pytest

from lookalike.jobs.queue import FINISH_SEQ, MAX_ATTEMPTS, JobQueue
from lookalike.store.catalog import Catalog
from tests.jobs.clock import Clock


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'c.sqlite'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def catalog(url):
    cat = Catalog.open(url)
    yield cat
    cat.close()


def queue(catalog: Catalog, lease: float = 30.0, chunk: int = 2) -> JobQueue:
    return JobQueue(catalog.db, lease=lease, chunk=chunk)


def items(n: int) -> list[dict]:
    return [{"s": f"/p/{i}.jpg"} for i in range(n)]


def test_a_job_lists_then_indexes_then_finishes(catalog) -> None:
    q = queue(catalog)
    job_id = q.submit("index", {"paths": ["/p"], "prune": True})
    assert q.get(job_id).state == "queued" and q.get(job_id).total is None
    listing = q.claim("w1")
    assert listing.kind == "list" and listing.params["paths"] == ["/p"] and q.claim("w2") is None  # leased
    q.add_chunks(job_id, 1, [items(2), items(2)])
    q.add_chunks(job_id, 1, [items(2), items(2)])  # a re-listing writes nothing twice
    q.finish_listing(listing, 4, ["/p/gone.jpg"])
    assert q.complete(listing, {})
    job = q.get(job_id)
    assert job.state == "running" and job.total == 4 and job.listed and job.done == 0
    first, second = q.claim("w1"), q.claim("w2")
    assert (first.seq, second.seq) == (1, 2) and first.kind == second.kind == "index" and q.claim("w3") is None
    assert q.complete(first, {"added": 2})
    assert q.claim("w3") is None  # the finish step waits for the last chunk
    assert q.complete(second, {"added": 1, "duplicates": 1, "rejected": 0}, {"rejected": []})
    finish = q.claim("w3")
    assert finish.kind == "finish" and finish.seq == FINISH_SEQ and q.vanished(job_id) == ["/p/gone.jpg"]
    q.close(finish)
    job = q.get(job_id)
    assert job.state == "done" and job.done == 4 and (job.added, job.duplicates) == (3, 1) and job.finished_at
    info = job.as_dict()
    assert info["done"] == info["total"] == 4 and info["state"] == "done" and info["prune"] is True


def test_a_lost_lease_hands_the_task_to_another_worker(catalog) -> None:
    clock = Clock()
    q = JobQueue(catalog.db, lease=30.0, chunk=2, clock=clock)
    job_id = q.submit("upload", {}, items(1))
    task = q.claim("dead")
    assert q.heartbeat(task)
    clock.advance(29)
    assert q.claim("alive") is None  # within the lease: nobody else takes it
    clock.advance(2)  # the worker died: nobody renewed
    again = q.claim("alive")
    assert again.id == task.id and again.attempts == 2
    assert not q.heartbeat(task) and not q.complete(task, {"added": 1})  # the dead one's result is refused
    assert q.complete(again, {"added": 1}, {"items": {"/p/0.jpg": {"id": 7, "new": True}}})
    q.close(q.claim("alive"))
    job = q.get(job_id)
    assert job.state == "done" and job.added == 1 and job.items == {"/p/0.jpg": {"id": 7, "new": True}}


def test_a_running_jobs_elapsed_time_and_rate_follow_the_queues_clock(catalog) -> None:
    """Progress is read on the clock the queue runs on (the catalog's processes share it), not the reader's."""
    clock = Clock()
    q = JobQueue(catalog.db, lease=30.0, chunk=2, clock=clock)
    job_id = q.submit("upload", {}, items(4))
    first = q.claim("w")
    clock.advance(10)
    assert q.complete(first, {"added": 2})
    running = q.get(job_id).as_dict()
    assert running["state"] == "running" and running["elapsed"] == 10.0 and running["rate"] == 0.2
    clock.advance(10)
    assert q.get(job_id).as_dict()["elapsed"] == 20.0  # still running: the time runs on
    q.complete(q.claim("w"), {"added": 2})
    q.close(q.claim("w"))
    clock.advance(100)
    done = q.get(job_id).as_dict()
    assert done["state"] == "done" and done["elapsed"] == 20.0  # finished: its time stops


def test_concurrent_workers_never_claim_one_task_twice(url) -> None:
    catalogs = [Catalog.open(url) for _ in range(4)]
    q0 = queue(catalogs[0], chunk=1)
    q0.submit("upload", {}, items(40))
    claimed: list[int] = []
    lock = threading.Lock()

    def work(cat: Catalog, name: str) -> None:
        q = queue(cat, chunk=1)
        while (task := q.claim(name)) is not None:
            with lock:
                claimed.append(task.id)
            q.complete(task, {"added": 1})

    threads = [threading.Thread(target=work, args=(cat, f"w{i}")) for i, cat in enumerate(catalogs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(claimed) == 41 and len(set(claimed)) == 41  # 40 chunks and the finish step, each once
    for cat in catalogs:
        cat.close()


def test_cancel_stops_claims_and_running_tasks(catalog) -> None:
    q = queue(catalog)
    job_id = q.submit("upload", {}, items(4))
    running = q.claim("w")
    assert q.cancel(job_id) and not q.cancel(job_id)
    assert q.claim("w") is None and not q.heartbeat(running)
    assert q.get(job_id).state == "cancelled"


def test_a_failing_chunk_is_retried_then_fails_the_job_not_the_others(catalog) -> None:
    q = queue(catalog, chunk=1)
    job_id = q.submit("upload", {}, items(2))
    for attempt in range(1, MAX_ATTEMPTS + 1):
        task = q.claim("w")
        assert task.seq == 1 and task.attempts == attempt
        q.fail(task, "RuntimeError: disk on fire")
    other = q.claim("w")
    assert other.seq == 2
    q.complete(other, {"added": 1})
    q.close(q.claim("w"))
    job = q.get(job_id)
    assert job.state == "failed" and "1 chunk(s) failed" in job.error and "disk on fire" in job.error
    assert job.added == 1


def test_an_unlistable_job_fails_at_once(catalog) -> None:
    q = queue(catalog)
    job_id = q.submit("index", {"paths": ["/nowhere"]})
    q.fail(q.claim("w"), "SourceError: /nowhere: no such file or folder")
    job = q.get(job_id)
    assert job.state == "failed" and "no such file" in job.error and q.claim("w") is None


def test_affinity_keeps_a_job_on_the_workers_that_can_run_it(catalog) -> None:
    q = queue(catalog)
    q.submit("upload", {}, items(1), affinity="store:host-a:/lib/images")
    assert q.claim("b", ("host:host-b",)) is None
    assert q.claim("a", ("host:host-a", "store:host-a:/lib/images")) is not None


def test_listing_and_unknown_jobs(catalog) -> None:
    q = queue(catalog)
    ids = [q.submit("upload", {}, items(1)) for _ in range(3)]
    assert [j.id for j in q.list()] == ids[::-1] and [j.id for j in q.list(limit=1, offset=1)] == [ids[1]]
    assert q.list(state="done") == [] and len(q.list(state="queued")) == 3
    assert q.get(424242) is None and q.get(2**63) is None and q.get(0) is None
    empty = q.submit("upload", {}, [])  # nothing to index: only the finish step
    assert q.get(empty).total == 0 and q.get(empty).listed


def test_waiting_for_a_job(catalog) -> None:
    q = queue(catalog)
    job_id = q.submit("upload", {}, items(1))
    started = time.monotonic()
    assert q.wait(job_id, timeout=0.3).state == "queued" and time.monotonic() - started >= 0.3

    def run() -> None:
        time.sleep(0.2)
        q.complete(q.claim("w"), {"added": 1})
        q.close(q.claim("w"))

    threading.Thread(target=run).start()
    assert q.wait(job_id, timeout=10).state == "done"


def test_a_videos_time_ranges_are_read_back_with_their_outcome(catalog) -> None:
    """A long video's ranges, a task each: the finish step reads their items, states and results (its own
    rejections counted with the job's)."""
    q = queue(catalog)
    job_id = q.submit("index", {"paths": ["/v"]})
    listing = q.claim("w1")
    ranges = [[{"s": "/v/long.mp4", "r": [0.0, 300.0]}], [{"s": "/v/long.mp4", "r": [300.0, None]}]]
    q.add_chunks(job_id, 1, [items(2), *ranges])
    q.finish_listing(listing, 4, [])
    q.complete(listing, {})
    photos, first, second = q.claim("w1"), q.claim("w2"), q.claim("w3")
    q.complete(photos, {"added": 2})
    part = {"source": "/v/long.mp4", "frames": ["/v/long.mp4#t=0.000"]}
    q.complete(first, {}, {"rejected": [], "parts": [part]})
    assert [(item["r"], state, result.get("parts")) for item, state, result in q.ranges(job_id)] == [
        ([0.0, 300.0], "done", [part]), ([300.0, None], "running", None)]  # fmt: skip
    q.complete(second, {"rejected": 1}, {"rejected": [{"source": "/v/long.mp4", "reason": "truncated"}]})
    finish = q.claim("w1")
    q.close(finish, {"rejected": 0}, {"rejected": []})
    job = q.get(job_id)
    assert (job.state, job.done, job.total, job.rejected, job.errors[0]["reason"]) == ("done", 4, 4, 1, "truncated")
