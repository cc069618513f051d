"""Workers run queued jobs through a real library: listing in chunks, indexing, pruning, re-runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lookalike.ingest.pipeline import Pipeline
from lookalike.ingest.sources import SourceSet
from lookalike.jobs import JobQueue, Worker
from lookalike.jobs.queue import MAX_ATTEMPTS, TaskLost
from lookalike.jobs.worker import item_from_json
from lookalike.library import Library
from tests.conftest import photo
from tests.jobs.clock import Clock


@pytest.fixture
def lib(settings, embedder):
    s = settings.model_copy(update={"job_chunk": 5})
    with Library(s, embedder=embedder) as library:
        yield library


def run_all(lib: Library) -> Worker:
    worker = lib.worker("test")
    worker.run(once=True)
    return worker


def test_a_folder_job_is_listed_in_chunks_indexed_and_searchable(lib: Library, photo_dir: Path) -> None:
    job_id = lib.jobs.submit("index", {"paths": [str(photo_dir)], "label": None})
    worker = run_all(lib)
    job = lib.jobs.get(job_id)
    assert job.state == "done" and job.total == job.done == job.added == 12, job.as_dict()
    assert worker.tasks_done == 1 + 3 + 1  # the listing, three chunks of at most 5, the finish step
    hit = lib.search(str(photo("tiger_cat", 1)), k=1).hits[0]
    assert hit.label == "tiger_cat" and hit.similarity == pytest.approx(1.0, abs=1e-4)


def test_a_prune_job_removes_what_vanished_and_reports_bad_files(lib: Library, photo_dir: Path) -> None:
    run_job = lambda **p: (lib.jobs.submit("index", {"paths": [str(photo_dir)], **p}), run_all(lib))[0]  # noqa: E731
    run_job()
    gone = sorted((photo_dir / "goldfish").iterdir())[0]
    gone.unlink()
    (photo_dir / "goldfish" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    job = lib.jobs.get(run_job(prune=True))
    assert job.state == "done" and job.unchanged == 11 and job.rejected == 1
    assert job.errors[0]["source"].endswith("broken.jpg") and lib.catalog.count() == 11
    assert lib.catalog.source_state(str(gone)) is None


def test_a_prune_job_leaves_a_folder_that_lists_nothing_alone(lib: Library, photo_dir: Path) -> None:
    """A job's folder emptied (an unmounted disk): nothing pruned (pipeline.EMPTY_ROOT)."""
    lib.jobs.submit("index", {"paths": [str(photo_dir)]})
    run_all(lib)
    photo_dir.rename(photo_dir.with_name("away"))
    photo_dir.mkdir()
    job = lib.jobs.get(lib.jobs.submit("index", {"paths": [str(photo_dir)], "prune": True}))
    run_all(lib)
    job = lib.jobs.get(job.id)
    assert job.state == "done" and lib.catalog.count() == 12
    emptied = lib.jobs.submit("index", {"paths": [str(photo_dir)], "prune": True, "prune_empty": True})  # on purpose
    run_all(lib)
    assert lib.jobs.get(emptied).state == "done" and lib.catalog.count() == 0


def test_a_chunk_run_twice_doubles_nothing(lib: Library, photo_dir: Path) -> None:
    """A worker that dies after committing part of a chunk: the next one runs the whole chunk again, and the photos
    the first wrote count as the job's added (they were "unchanged": a job re-run after an outage said "added 680,
    unchanged 320" for 1,000 new photos)."""
    clock = Clock()
    q = JobQueue(lib.catalog.db, lease=30.0, chunk=12, clock=clock)
    job_id = q.submit("index", {"paths": [str(photo_dir)]})
    worker = lib.worker("first", q)
    worker.run_task(q.claim("first"))  # the listing
    chunk = q.claim("dying")
    items = [item_from_json(d) for d in chunk.items]
    # it committed its photos, then died before reporting the chunk
    Pipeline(lib.indexing_parts()).run([SourceSet(items)])
    assert lib.catalog.count() == 12
    clock.advance(31)  # its lease runs out
    lib.worker("second", q).run(once=True)
    job = q.get(job_id)
    assert job.state == "done" and lib.catalog.count() == 12 and job.unchanged == 0 and job.added == 12
    again = q.submit("index", {"paths": [str(photo_dir)]})  # a later job over the same photos: all unchanged
    lib.worker("third", q).run(once=True)
    assert q.get(again).unchanged == 12 and q.get(again).added == 0


def test_two_jobs_over_one_folder_add_its_photos_once(lib: Library, photo_dir: Path) -> None:
    """Both submitted before either ran: the second, run after the first wrote the photos, counted them as its own
    added too, since they were added after it was submitted (review). Only a chunk run again counts earlier writes."""
    first = lib.jobs.submit("index", {"paths": [str(photo_dir)]})
    second = lib.jobs.submit("index", {"paths": [str(photo_dir)]})
    lib.worker("w").run(once=True)
    a, b = lib.jobs.get(first), lib.jobs.get(second)
    assert a is not None and b is not None and lib.catalog.count() == 12
    assert (a.added, a.unchanged, b.added, b.unchanged) == (12, 0, 0, 12)


def test_a_chunk_run_again_counts_only_its_own_earlier_writes(lib: Library, photo_dir: Path, monkeypatch) -> None:
    """The second of two jobs over one folder meets a catalog outage before writing anything and runs its chunk
    again: photos the first job wrote before the chunk was first claimed are not its own (it said "added 12" too,
    review); they are unchanged."""
    from lookalike.store.catalog.database import CatalogUnavailable

    first = lib.jobs.submit("index", {"paths": [str(photo_dir)]})
    second = lib.jobs.submit("index", {"paths": [str(photo_dir)]})
    real, outages = Pipeline.run, []

    def outage_once(self, sets, *args, **kwargs):
        done = lib.jobs.get(first)
        if not outages and done is not None and done.state == "done":  # the second job's first chunk, first run:
            outages.append(1)  # the catalog is away before it writes anything
            raise CatalogUnavailable("the catalog database is unreachable: a restart")
        return real(self, sets, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "run", outage_once)
    lib.worker("w").run(once=True)
    a, b = lib.jobs.get(first), lib.jobs.get(second)
    assert a is not None and b is not None and outages and lib.catalog.count() == 12
    assert (a.added, a.unchanged, b.added, b.unchanged) == (12, 0, 0, 12)


def test_a_job_over_an_unreadable_source_fails_with_the_reason(lib: Library, tmp_path: Path) -> None:
    folder = tmp_path / "soon-gone"
    folder.mkdir()
    job_id = lib.jobs.submit("index", {"paths": [str(folder)]})
    shutil.rmtree(folder)
    run_all(lib)
    job = lib.jobs.get(job_id)
    assert job.state == "failed" and "no such file or folder" in job.error


def test_a_worker_that_lost_its_lease_writes_nothing_more(lib: Library, photo_dir: Path) -> None:
    """The lease is checked in the transaction that writes each batch: once another worker took the chunk (the
    first one paused past its lease, or was cut off by a database outage), the first one's batch is not written."""
    clock = Clock()
    q = JobQueue(lib.catalog.db, lease=30.0, chunk=12, clock=clock)
    q.submit("index", {"paths": [str(photo_dir)]})
    lib.worker("first", q).run_task(q.claim("first"))  # the listing
    slow = q.claim("slow")
    clock.advance(31)  # its lease runs out
    other = q.claim("other")
    assert other.id == slow.id
    items = [item_from_json(d) for d in slow.items]
    with pytest.raises(TaskLost):
        Pipeline(lib.indexing_parts(), guard=q.guard(slow)).run([SourceSet(items)])
    assert lib.catalog.count() == 0
    report = Pipeline(lib.indexing_parts(), guard=q.guard(other)).run([SourceSet(items)])
    assert len(report.added) == 12 and lib.catalog.count() == 12


def test_a_chunk_failing_for_good_fails_its_job_with_the_photos_owed_and_a_rerun_indexes_them(
    lib: Library, photo_dir: Path
) -> None:
    """A job is done only when every photo is stored or rejected for a reason of its own: a chunk that failed
    every attempt (its image store away, say) leaves the job failed, saying how many photos are owed."""
    q = JobQueue(lib.catalog.db, chunk=5)
    job_id = q.submit("index", {"paths": [str(photo_dir)]})
    worker = lib.worker("w", q)
    worker.run_task(q.claim("w"))  # the listing: chunks of 5, 5 and 2
    for _ in range(MAX_ATTEMPTS):
        task = q.claim("w")
        assert task.seq == 1
        q.fail(task, "StoreUnavailable: the image store is unreachable", outage=True)
    worker.run(once=True)
    job = q.get(job_id)
    assert job.state == "failed" and job.owed == 5 and job.rejected == 0 and job.done == 7, job.as_dict()
    assert "StoreUnavailable" in job.error and "5 photo(s) neither stored nor rejected" in job.error
    assert lib.catalog.count() == 7
    rerun = q.submit("index", {"paths": [str(photo_dir)]})
    worker.run(once=True)
    job = q.get(rerun)
    assert job.state == "done" and job.owed == 0 and job.added == 5 and job.unchanged == 7
    assert lib.catalog.count() == 12


def test_a_job_indexes_a_video_and_a_prune_job_removes_it_with_its_frames(lib: Library, tmp_path: Path) -> None:
    from tests.videos import Shot, make_video

    folder = tmp_path / "media"
    folder.mkdir()
    make_video(folder / "clip.mp4", [Shot(photo(label, 1), 3) for label in ("goldfish", "tiger_cat")])
    shutil.copy(photo("bullet_train", 0), folder / "train.jpg")
    job_id = lib.jobs.submit("index", {"paths": [str(folder)], "prune": True})
    run_all(lib)
    assert lib.jobs.get(job_id).state == "done" and lib.catalog.count() == 3  # two frames and the photo
    again = lib.jobs.submit("index", {"paths": [str(folder)], "prune": True})
    run_all(lib)
    job = lib.jobs.get(again)
    assert job.state == "done" and job.unchanged == 2 and lib.catalog.count() == 3  # the video's frames not vanished
    (folder / "clip.mp4").unlink()
    gone = lib.jobs.submit("index", {"paths": [str(folder)], "prune": True})
    run_all(lib)
    assert lib.jobs.vanished(gone) == [str(folder / "clip.mp4")] and lib.catalog.count() == 1
    assert lib.catalog.video_states([str(folder / "clip.mp4")]) == {}
