"""Durable index jobs in the catalog database, claimed by workers with a lease.

A job (index these folders, this bucket prefix, these CSV or URL lists, these uploads) is split into
tasks: one *list* task that streams the sources into *index* tasks of ``chunk`` sources each, then one
*finish* task (prune what vanished, close the job). A worker claims the oldest runnable task, holds it
with a lease it renews while working, and records the task's counts when done. A worker that dies
(SIGKILL, a lost machine) stops renewing; when the lease has expired another worker claims the task and
runs it again. Running a task twice doubles nothing: photos are stored once by sha256 and sources once by
path, and a task's counts are replaced, not added, when it completes. Any process reads any job's
progress from the database.

Why a table of our own with ``FOR UPDATE SKIP LOCKED`` rather than procrastinate or pgqueuer: both are
PostgreSQL-only, and the embedded default (SQLite, one process) must run the same jobs with no server; a
job here is also not one function call but a listing that fans out into chunk tasks whose counts add up to
the job's progress, which is one ``SUM`` over this table. Claiming costs one statement (measured in
bench/workers.py). On SQLite a claim runs in a ``BEGIN IMMEDIATE`` transaction, which serialises claimers
as ``SKIP LOCKED`` does on PostgreSQL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lookalike.fields import replace_surrogates
from lookalike.store.catalog.database import Database

ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")
FINISH_SEQ = 2**31 - 1
MAX_ATTEMPTS = 3
ERRORS_SHOWN = 100


class TaskLost(Exception):
    """The task's lease was lost or its job cancelled: stop, someone else (or nobody) carries on."""


@dataclass(frozen=True)
class Task:
    id: int
    job_id: int
    seq: int
    kind: str  # list, index, finish
    items: list
    attempts: int
    worker: str
    params: dict
    first_claimed: float = 0.0  # when a worker first claimed it (every attempt's writes come after)


@dataclass
class Job:
    id: int
    kind: str
    state: str
    params: dict
    created_at: float
    started_at: float | None
    finished_at: float | None
    listed: bool
    total: int | None
    error: str | None
    done: int = 0
    added: int = 0
    duplicates: int = 0
    unchanged: int = 0
    rejected: int = 0
    owed: int = 0  # photos of chunks that failed for good: neither stored nor rejected (re-run the job)
    errors: list[dict] = field(default_factory=list)
    workers: list[str] = field(default_factory=list)
    items: dict = field(default_factory=dict)  # per source outcome (uploads)
    as_of: float = 0.0  # when it was read, on the queue's clock: a running job's elapsed time runs to here

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def as_dict(self) -> dict:
        """The job as JSON; a lone surrogate in its paths, label or errors (a job stored before the API refused them)
        is shown as its escape ('\\ud800'), so that the job can still be listed."""
        end = self.finished_at or self.as_of
        elapsed = end - self.started_at if self.started_at else 0.0
        processed = self.done - self.unchanged
        return replace_surrogates({
            "id": self.id, "kind": self.kind, "state": self.state,
            "paths": self.params.get("paths", []), "label": self.params.get("label"),
            "prune": bool(self.params.get("prune")), "objects": bool(self.params.get("objects")),
            "done": self.done, "total": self.total, "listed": self.listed,
            "added": self.added, "duplicates": self.duplicates, "unchanged": self.unchanged,
            "rejected": self.rejected, "owed": self.owed, "errors": self.errors,
            "rate": round(processed / elapsed, 1) if elapsed > 0 else 0.0, "elapsed": round(elapsed, 2),
            "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
            "error": self.error, "workers": self.workers,
        })  # fmt: skip


class JobQueue:
    """The job table's API; the same code on SQLite and PostgreSQL (one conformance suite)."""

    def __init__(self, db: Database, lease: float = 60.0, chunk: int = 256,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        """``clock``: seconds since the epoch, the same for every process sharing the catalog (the wall clock;
        tests pass one they move, to expire a lease without waiting for it)."""
        self.db, self.lease, self.chunk, self.clock = db, lease, chunk, clock

    # submitting --------------------------------------------------------------------------------
    def submit(self, kind: str, params: dict, items: list[dict] | None = None, affinity: str | None = None) -> int:
        """A new job. Without ``items`` its sources are listed by a worker (a list task); with them (an
        upload) its index tasks are written now. With ``affinity``, only workers that have it claim it."""

        def write(conn: Connection) -> int:
            job_id = int(conn.execute(sa.text(
                "INSERT INTO jobs(kind, state, params, created_at, listed, total, affinity) "
                "VALUES (:k, 'queued', :p, :t, :l, :n, :a) RETURNING id"),
                {"k": kind, "p": json.dumps(params), "t": self.clock(), "l": int(items is not None),
                 "n": None if items is None else len(items), "a": affinity}).scalar_one())  # fmt: skip
            if items is None:
                self._add_tasks(conn, job_id, [(0, "list", [])])
            else:
                chunks = [items[i : i + self.chunk] for i in range(0, len(items), self.chunk)]
                self._add_tasks(conn, job_id, [(n, "index", c) for n, c in enumerate(chunks, 1)])
                if not chunks:
                    self._add_tasks(conn, job_id, [(FINISH_SEQ, "finish", [])])
            return job_id

        return self.db.retrying(write)

    def add_chunks(self, job_id: int, first_seq: int, chunks: list[list[dict]]) -> None:
        """Index tasks found by a listing; writing the same (job, seq) again adds nothing."""
        rows = [(first_seq + n, "index", c) for n, c in enumerate(chunks)]
        self.db.retrying(lambda conn: self._add_tasks(conn, job_id, rows))

    @staticmethod
    def _add_tasks(conn: Connection, job_id: int, rows: list[tuple[int, str, list]]) -> None:
        if rows:
            conn.execute(sa.text(
                "INSERT INTO job_tasks(job_id, seq, kind, items, n, state) VALUES (:j, :s, :k, :i, :n, 'queued') "
                "ON CONFLICT(job_id, seq) DO NOTHING"),
                [{"j": job_id, "s": seq, "k": kind, "i": json.dumps(items), "n": len(items)}
                 for seq, kind, items in rows])  # fmt: skip

    def finish_listing(self, task: Task, total: int, vanished: list[str]) -> None:
        def write(conn: Connection) -> None:
            conn.execute(sa.text("UPDATE jobs SET listed = 1, total = :n, vanished = :v WHERE id = :j"),
                         {"n": total, "v": json.dumps(vanished), "j": task.job_id})  # fmt: skip

        self.db.retrying(write)

    # working ---------------------------------------------------------------------------------------
    def claim(self, worker: str, affinities: tuple[str, ...] = ()) -> Task | None:
        """The oldest runnable task of an active job this worker can run: queued, or running with an expired
        lease, of a job without affinity or with one of ``affinities``."""
        skip_locked = " FOR UPDATE OF t SKIP LOCKED" if self.db.dialect == "postgresql" else ""

        def write(conn: Connection) -> Task | None:
            now = self.clock()
            q = sa.text(
                "SELECT t.id FROM job_tasks t JOIN jobs j ON j.id = t.job_id "
                "WHERE j.state IN ('queued', 'running') AND (t.state = 'queued' OR "
                "(t.state = 'running' AND t.lease_until < :now)) AND (j.affinity IS NULL OR j.affinity IN :mine) "
                "ORDER BY t.job_id, t.seq LIMIT 1" + skip_locked
            ).bindparams(sa.bindparam("mine", expanding=True))
            row = conn.execute(q, {"now": now, "mine": list(affinities) or [""]}).fetchone()
            if row is None:
                return None
            got = conn.execute(sa.text(
                "UPDATE job_tasks SET state = 'running', lease_until = :until, worker = :w, attempts = attempts + 1,"
                " started_at = COALESCE(started_at, :now) WHERE id = :id "
                "RETURNING id, job_id, seq, kind, items, attempts, started_at"),
                {"until": now + self.lease, "w": worker, "now": now, "id": row[0]}).one()  # fmt: skip
            conn.execute(sa.text("UPDATE jobs SET state = 'running', started_at = COALESCE(started_at, :now) "
                                 "WHERE id = :j AND state = 'queued'"), {"now": now, "j": got[1]})  # fmt: skip
            params = json.loads(
                conn.execute(sa.text("SELECT params FROM jobs WHERE id = :j"), {"j": got[1]}).scalar_one()
            )
            return Task(int(got[0]), int(got[1]), int(got[2]), got[3], json.loads(got[4]), int(got[5]), worker, params,
                        float(got[6]))  # fmt: skip

        return self.db.retrying(write)

    def heartbeat(self, task: Task) -> bool:
        """Renew the lease; False when the task is no longer this worker's or its job was cancelled."""
        return self.db.retrying(lambda conn: self._renew(conn, task))

    def _renew(self, conn: Connection, task: Task) -> bool:
        renewed = conn.execute(sa.text(
            "UPDATE job_tasks SET lease_until = :until WHERE id = :id AND worker = :w AND state = 'running' "
            "AND job_id IN (SELECT id FROM jobs WHERE state IN ('queued', 'running'))"),
            {"until": self.clock() + self.lease, "id": task.id, "w": task.worker})  # fmt: skip
        return renewed.rowcount == 1

    def guard(self, task: Task):
        """A check for the transaction that writes a batch of ``task``: it renews the lease there, or raises
        ``TaskLost`` when the task is no longer this worker's (another worker claimed it after the lease ran
        out, say during a database outage) or its job was cancelled. Checked and written in one transaction,
        so a worker that lost its lease writes nothing more; the row lock it takes keeps claimers off until
        the batch is committed."""

        def check(conn: Connection) -> None:
            if not self._renew(conn, task):
                raise TaskLost(f"job {task.job_id} task {task.seq}: lease lost or job cancelled")

        return check

    def complete(self, task: Task, counts: dict, details: dict | None = None) -> bool:
        """Record a finished task (its counts replace any earlier attempt's); False when the lease was lost.
        The completion that leaves nothing but the finish step queues it."""

        def write(conn: Connection) -> bool:
            done = conn.execute(sa.text(
                "UPDATE job_tasks SET state = 'done', finished_at = :now, result = :r, added = :a, "
                "duplicates = :d, unchanged = :u, rejected = :x WHERE id = :id AND worker = :w AND state = 'running'"),
                {"now": self.clock(), "r": json.dumps(details or {}), "a": counts.get("added", 0),
                 "d": counts.get("duplicates", 0), "u": counts.get("unchanged", 0), "x": counts.get("rejected", 0),
                 "id": task.id, "w": task.worker})  # fmt: skip
            if done.rowcount != 1:
                return False
            if task.kind != "finish":
                self._maybe_finish(conn, task.job_id)
            return True

        return self.db.retrying(write)

    def _maybe_finish(self, conn: Connection, job_id: int) -> None:
        lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""  # completions of one job take turns
        listed = conn.execute(sa.text(f"SELECT listed FROM jobs WHERE id = :j{lock}"), {"j": job_id}).scalar()
        left = conn.execute(sa.text("SELECT COUNT(*) FROM job_tasks WHERE job_id = :j AND state NOT IN "
                                    "('done', 'failed')"), {"j": job_id}).scalar()  # fmt: skip
        if listed and not left:
            self._add_tasks(conn, job_id, [(FINISH_SEQ, "finish", [])])

    def fail(self, task: Task, error: str, outage: bool = False) -> None:
        """A task that raised: queued again, or failed after ``MAX_ATTEMPTS`` (the job goes on without it). A
        listing fails its job at once (its sources cannot be listed) unless the error was an ``outage`` of a part
        the library depends on: then it is queued again like a chunk."""

        def write(conn: Connection) -> None:
            final = task.attempts >= MAX_ATTEMPTS or (task.kind == "list" and not outage)
            conn.execute(sa.text(
                "UPDATE job_tasks SET state = :s, lease_until = NULL, result = :r, finished_at = :now "
                "WHERE id = :id AND worker = :w AND state = 'running'"),
                {"s": "failed" if final else "queued", "r": json.dumps({"error": error}), "now": self.clock(),
                 "id": task.id, "w": task.worker})  # fmt: skip
            if task.kind == "list" and final:  # nothing to index when the sources cannot be listed
                self._close(conn, task.job_id, "failed", error)
            elif final:
                self._maybe_finish(conn, task.job_id)

        self.db.retrying(write)

    def close(self, task: Task, counts: dict | None = None, details: dict | None = None) -> None:
        """The finish task: the job is done, or failed when some of its tasks failed; ``counts`` and ``details`` are
        the finish step's own (a split video rejected as a whole)."""

        def write(conn: Connection) -> None:
            q = "SELECT COUNT(*), MIN(result), COALESCE(SUM(n), 0) FROM job_tasks WHERE job_id = :j AND state='failed'"
            chunks, result, owed = conn.execute(sa.text(q), {"j": task.job_id}).one()
            error = None
            if chunks:
                error = (f"{chunks} chunk(s) failed after {MAX_ATTEMPTS} attempts: {json.loads(result)['error']}; "
                         f"{owed} photo(s) neither stored nor rejected: run the job again to index them")  # fmt: skip
            self._close(conn, task.job_id, "failed" if chunks else "done", error)

        self.db.retrying(write)
        self.complete(task, counts or {}, details)

    def _close(self, conn: Connection, job_id: int, state: str, error: str | None) -> None:
        q = "UPDATE jobs SET state = :s, error = :e, finished_at = :now WHERE id = :j AND state IN ('queued','running')"
        conn.execute(sa.text(q), {"s": state, "e": error, "now": self.clock(), "j": job_id})

    def cancel(self, job_id: int) -> bool:
        """Stop a job: no task of it is claimed any more, and running ones stop at their next heartbeat."""
        return self.db.retrying(lambda conn: conn.execute(sa.text(
            "UPDATE jobs SET state = 'cancelled', finished_at = :now WHERE id = :j AND state IN ('queued', 'running')"),
            {"now": self.clock(), "j": job_id}).rowcount == 1)  # fmt: skip

    def ranges(self, job_id: int) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
        """The tasks of a job that are one time range of a video each (``"r"`` in their only item): the item, the
        task's state and its result."""
        q = sa.text("SELECT items, state, result FROM job_tasks WHERE job_id = :j AND kind = 'index' AND n = 1 "
                    "AND items LIKE :r ORDER BY seq")  # fmt: skip
        with self.db.read() as conn:
            found = conn.execute(q, {"j": job_id, "r": '%"r":%'}).fetchall()
        rows = [(json.loads(i)[0], s, json.loads(r) if r else {}) for i, s, r in found]
        return [row for row in rows if "r" in row[0]]

    def vanished(self, job_id: int) -> list[str]:
        with self.db.read() as conn:
            text = conn.execute(sa.text("SELECT vanished FROM jobs WHERE id = :j"), {"j": job_id}).scalar()
        return json.loads(text) if text else []

    # reading ---------------------------------------------------------------------------------------------
    _JOB_COLS = "id, kind, state, params, created_at, started_at, finished_at, listed, total, error"

    def get(self, job_id: int, details: bool = True) -> Job | None:
        if not 0 < int(job_id) < 2**63:
            return None
        with self.db.read() as conn:
            row = conn.execute(sa.text(f"SELECT {self._JOB_COLS} FROM jobs WHERE id = :j"), {"j": job_id}).fetchone()
            if row is None:
                return None
            job = self._job(row, self.clock())
            sums = conn.execute(sa.text(
                "SELECT COALESCE(SUM(CASE WHEN state = 'done' AND kind = 'index' THEN n ELSE 0 END), 0), "
                "COALESCE(SUM(added), 0), COALESCE(SUM(duplicates), 0), COALESCE(SUM(unchanged), 0), "
                "COALESCE(SUM(rejected), 0), COALESCE(SUM(CASE WHEN state = 'failed' AND kind = 'index' THEN n "
                "ELSE 0 END), 0) FROM job_tasks WHERE job_id = :j"), {"j": job_id}).one()  # fmt: skip
            job.done, job.added, job.duplicates, job.unchanged, job.rejected, job.owed = (int(v) for v in sums)
            job.workers = sorted({w for (w,) in conn.execute(sa.text(
                "SELECT worker FROM job_tasks WHERE job_id = :j AND state = 'running'"), {"j": job_id})})  # fmt: skip
            if details:  # the rejected sources, and each upload's outcome
                q = ("SELECT result FROM job_tasks WHERE job_id = :j AND result IS NOT NULL AND (rejected > 0 OR "
                     "state = 'failed' OR :upload) ORDER BY seq")  # fmt: skip
                for (text,) in conn.execute(sa.text(q), {"j": job_id, "upload": job.kind == "upload"}):
                    result = json.loads(text)
                    if len(job.errors) < ERRORS_SHOWN:
                        job.errors += result.get("rejected", [])[: ERRORS_SHOWN - len(job.errors)]
                    job.items.update(result.get("items", {}))
        return job

    def list(self, limit: int = 50, offset: int = 0, state: str | None = None) -> list[Job]:
        where, args = ("WHERE state = :s", {"s": state}) if state else ("", {})
        with self.db.read() as conn:
            q = sa.text(f"SELECT id FROM jobs {where} ORDER BY id DESC LIMIT :l OFFSET :o")
            ids = [int(r[0]) for r in conn.execute(q, args | {"l": limit, "o": offset})]
        return [job for i in ids if (job := self.get(i, details=False)) is not None]

    @staticmethod
    def _job(row: sa.Row, now: float) -> Job:
        return Job(int(row.id), row.kind, row.state, json.loads(row.params), float(row.created_at), row.started_at,
                   row.finished_at, bool(row.listed), None if row.total is None else int(row.total),
                   row.error, as_of=now)  # fmt: skip

    def wait(self, job_id: int, timeout: float, poll: float = 0.05) -> Job | None:
        """The job once finished, or as it is when ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job is None or job.finished or time.monotonic() >= deadline:
                return job
            time.sleep(poll)
