"""Background index jobs: one thread per job, progress readable at any time."""

from __future__ import annotations

import itertools
import threading
import time
import traceback
from dataclasses import dataclass, field

from lookalike.ingest.pipeline import IndexReport
from lookalike.library import Library


@dataclass
class Job:
    id: int
    paths: list[str]
    label: str | None
    prune: bool
    objects: bool = False
    state: str = "queued"  # queued, running, done, failed
    done: int = 0
    total: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    report: IndexReport | None = None
    _live: IndexReport | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        now = self.finished_at or time.time()
        elapsed = (now - self.started_at) if self.started_at else 0.0
        live = self.report or self._live
        processed = self.done - (live.unchanged if live else 0)
        return {
            "id": self.id,
            "state": self.state,
            "paths": self.paths,
            "done": self.done,
            "total": self.total,
            "rate": round(processed / elapsed, 1) if elapsed > 0 else 0.0,
            "elapsed": round(elapsed, 2),
            "errors": len(live.rejected) if live else 0,
            "error": self.error,
            "report": self.report.as_dict() if self.report else None,
        }


class JobManager:
    def __init__(self, library: Library) -> None:
        self.library = library
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def submit(self, paths: list[str], label: str | None, prune: bool, objects: bool = False) -> Job:
        job = Job(next(self._ids), paths, label, prune, objects)
        with self._lock:
            self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job,), name=f"lookalike-job-{job.id}", daemon=True).start()
        return job

    def _run(self, job: Job) -> None:
        job.state, job.started_at = "running", time.time()

        def progress(done: int, total: int, report: IndexReport) -> None:
            job.done, job.total, job._live = done, total, report

        try:
            job.report = self.library.index(
                job.paths, label=job.label, prune=job.prune, on_progress=progress, objects=job.objects
            )
            job.state = "done"
        except Exception as exc:  # reported through GET /jobs/{id}
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        finally:
            job.finished_at = time.time()

    def get(self, job_id: int) -> Job | None:
        return self.jobs.get(job_id)
