"""Index jobs over HTTP: start one on server-side sources, follow it, list them, cancel one.

Jobs are durable, in the catalog database, and run by any worker (the service's own, or ``lookalike worker``
processes); these routes only write and read them.
"""

from fastapi import APIRouter, Query

from lookalike.api import API
from lookalike.api.deps import READ, WRITE, Lib, Service
from lookalike.api.problems import Problem
from lookalike.api.schemas import IndexJobRequest, JobId, JobList, JobOut
from lookalike.api.security import check_source
from lookalike.errors import NotFoundError
from lookalike.ingest.sources import SourceError, iter_expand
from lookalike.jobs.worker import host_affinity
from lookalike.library import Library

router = APIRouter(prefix=API)


@router.post("/jobs/index", dependencies=WRITE, status_code=202, summary="Index a server-side source",
             response_model=JobOut)  # fmt: skip
def start_job(body: IndexJobRequest, lib: Lib, state: Service) -> JobOut:
    roots = [r for r in state.settings.source_roots if not r.startswith("s3://")]
    for p in body.paths:
        check_source(p, state.settings)  # before anything touches the path: outside the roots, one answer
    for p in body.paths:  # fail fast on names that do not exist
        try:
            if not p.startswith(("http://", "https://")):
                iter_expand(p, s3=lib.s3, roots=roots)
        except SourceError as exc:
            raise Problem(422, "Invalid parameters", str(exc)) from None
    params = {"paths": body.paths, "label": body.label, "prune": body.prune or body.prune_empty,
              "prune_empty": body.prune_empty, "objects": body.objects,
              "roots": roots}  # fmt: skip  # every photo the job opens must resolve inside them
    local = any(not p.startswith(("http://", "https://", "s3://")) for p in body.paths)
    job_id = lib.jobs.submit("index", params, None, host_affinity() if local else None)
    if state.worker is not None:
        state.worker.wake.set()
    return _job(lib, job_id)


@router.get("/jobs", dependencies=READ, summary="Index jobs, newest first", response_model=JobList)
def list_jobs(lib: Lib, limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=2**31),
              state_: str | None = Query(None, alias="state", pattern="^(queued|running|done|failed|"
                                         "cancelled)$")) -> JobList:  # fmt: skip
    return JobList(jobs=[JobOut.from_job(j) for j in lib.jobs.list(limit, offset, state_)])


@router.get("/jobs/{job_id}", dependencies=READ, summary="Progress of an index job", response_model=JobOut)
def job_status(job_id: JobId, lib: Lib) -> JobOut:
    return _job(lib, job_id)


@router.post("/jobs/{job_id}/cancel", dependencies=WRITE, summary="Cancel an index job",
             response_model=JobOut)  # fmt: skip
def cancel_job(job_id: JobId, lib: Lib) -> JobOut:
    if lib.jobs.get(job_id, False) is None:
        raise NotFoundError(f"no job with id {job_id}")
    lib.jobs.cancel(job_id)
    return _job(lib, job_id)


def _job(lib: Library, job_id: int) -> JobOut:
    job = lib.jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"no job with id {job_id}")
    return JobOut.from_job(job)
