"""Workers run queued jobs through a real library: listing in chunks, indexing, pruning, re-runs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from lookalike.ingest.pipeline import Pipeline
from lookalike.ingest.sources import SourceSet
from lookalike.jobs import JobQueue, Worker
from lookalike.jobs.worker import item_from_json
from lookalike.library import Library
from tests.conftest import photo


@pytest.fixture
def lib(settings, embedder):
    s = settings.model_copy(update={"job_chunk": 5})
    with Library(s, embedder=embedder) as library:
        yield library


def run_all(lib: Library) -> Worker:
    worker = Worker(lib, lib.jobs, name="test")
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


def test_a_chunk_run_twice_doubles_nothing(lib: Library, photo_dir: Path) -> None:
    """A worker that dies after committing part of a chunk: the next one runs the whole chunk again."""
    q = JobQueue(lib.catalog.db, lease=0.2, chunk=12)
    job_id = q.submit("index", {"paths": [str(photo_dir)]})
    worker = Worker(lib, q, name="first")
    worker.run_task(q.claim("first"))  # the listing
    chunk = q.claim("dying")
    items = [item_from_json(d) for d in chunk.items]
    Pipeline(lib).run([SourceSet(items)])  # it committed its photos, then died before reporting the chunk
    assert lib.catalog.count() == 12
    time.sleep(0.3)  # its lease runs out
    Worker(lib, q, name="second").run(once=True)
    job = q.get(job_id)
    assert job.state == "done" and lib.catalog.count() == 12 and job.unchanged == 12 and job.added == 0


def test_a_job_over_an_unreadable_source_fails_with_the_reason(lib: Library, tmp_path: Path) -> None:
    folder = tmp_path / "soon-gone"
    folder.mkdir()
    job_id = lib.jobs.submit("index", {"paths": [str(folder)]})
    shutil.rmtree(folder)
    run_all(lib)
    job = lib.jobs.get(job_id)
    assert job.state == "failed" and "no such file or folder" in job.error
