"""A worker: claims job tasks from the catalog's queue and runs them through a library, until stopped.

``lookalike worker`` runs one in its own process (any number of them, on any machines that share the
catalog, the image store and the vector engine); ``lookalike serve`` runs one in a thread unless
``LOOKALIKE_SERVE_WORKER=0``. While a task runs, a heartbeat thread renews its lease; when the lease is lost
(the worker was too slow, or the job was cancelled) the task stops at its next batch and another worker
(or nobody, when cancelled) takes over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from lookalike.ingest.pipeline import IndexReport, Pipeline
from lookalike.ingest.sources import SourceItem, SourceSet, iter_expand
from lookalike.jobs.queue import JobQueue, Task
from lookalike.store.s3 import is_s3

log = logging.getLogger("lookalike")
LISTING_FLUSH = 16  # chunks written per statement while listing


class TaskLost(Exception):
    """The task's lease was lost or its job cancelled: stop, someone else (or nobody) carries on."""


def item_json(item: SourceItem) -> dict:
    return {k: v for k, v in {"s": item.source, "l": item.label, "z": item.size, "m": item.mtime_ns, "e": item.error,
                              "h": item.stored}.items() if v is not None}  # fmt: skip


def item_from_json(data: dict) -> SourceItem:
    return SourceItem(data["s"], data.get("l"), data.get("z"), data.get("m"), data.get("e"), stored=data.get("h"))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def host_affinity() -> str:
    """Jobs naming local paths run on the machine whose paths they are."""
    return f"host:{socket.gethostname()}"


def store_affinity(lib) -> str | None:
    """Uploads kept in a local image store run where that store is; in a bucket, anywhere."""
    root = getattr(lib.images, "root", None)
    return f"store:{socket.gethostname()}:{root}" if root is not None else None


def affinities(lib) -> tuple[str, ...]:
    return tuple(a for a in (host_affinity(), store_affinity(lib)) if a)


class Worker:
    def __init__(self, lib, queue: JobQueue, name: str | None = None, poll: float = 0.5) -> None:
        self.lib, self.queue, self.poll = lib, queue, poll
        self.name = name or worker_name()
        self.wake = threading.Event()  # set when work was queued in this process: no need to wait a poll
        self.stopping = threading.Event()
        self.tasks_done = 0

    def run(self, once: bool = False) -> None:
        """Claim and run tasks until ``stop()`` (with ``once``: until no task is left)."""
        last_maintain = time.monotonic()
        while not self.stopping.is_set():
            try:
                task = self.queue.claim(self.name, affinities(self.lib))
            except Exception:  # the database briefly away: try again
                log.exception("claiming a task failed")
                task = None
            if task is None:
                if once:
                    return
                self.wake.wait(self.poll)
                self.wake.clear()
                continue
            self.run_task(task)
            if not self.lib.background and time.monotonic() - last_maintain > 60:
                last_maintain = time.monotonic()
                self.lib.maintain()  # re-learn when due, tidy: once a minute, not once per chunk

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"lookalike-worker-{self.name}", daemon=True)
        thread.start()
        return thread

    # --- one task --------------------------------------------------------------------------------------
    def run_task(self, task: Task) -> None:
        lost, finished = threading.Event(), threading.Event()

        def beat() -> None:
            while not finished.wait(self.queue.lease / 3):
                try:
                    if not self.queue.heartbeat(task):
                        lost.set()
                        return
                except Exception:  # keep trying: the lease has room for a missed beat or two
                    log.exception("renewing a lease failed")

        heart = threading.Thread(target=beat, name=f"lookalike-lease-{task.id}", daemon=True)
        heart.start()
        started = time.perf_counter()
        try:
            if task.kind == "list":
                self._list(task, lost)
            elif task.kind == "index":
                counts, details = self._index(task, lost)
                if self.queue.complete(task, counts, details):
                    log.info("job %d chunk %d: %d photos (%d added) in %.1f s", task.job_id, task.seq,
                             len(task.items), counts["added"], time.perf_counter() - started)  # fmt: skip
            else:
                self._finish(task)
            self.tasks_done += 1
        except TaskLost:
            log.info("job %d task %d: lease lost or job cancelled; stopped", task.job_id, task.seq)
        except Exception as exc:  # reported in the job; retried up to the queue's limit
            log.exception("job %d task %d failed", task.job_id, task.seq)
            self.queue.fail(task, f"{type(exc).__name__}: {exc}")
        finally:
            finished.set()
            heart.join(5)

    def _list(self, task: Task, lost: threading.Event) -> None:
        """Stream the job's sources into index tasks (same order every time, so a re-listing after a
        crash writes the same chunks, which the queue adds only once)."""
        p = task.params
        seq, total, chunk, chunks, vanished = 1, 0, [], [], []
        for path in p.get("paths", []):
            root, items = iter_expand(path, p.get("label"), s3=self.lib.s3 if is_s3(path) else None,
                                      roots=p.get("roots"))  # fmt: skip  # an HTTP caller's job: its roots
            seen: set[str] | None = set() if p.get("prune") and root else None
            for item in items:
                chunk.append(item_json(item))
                total += 1
                if seen is not None:
                    seen.add(item.source)
                if len(chunk) == self.queue.chunk:
                    chunks.append(chunk)
                    chunk = []
                if len(chunks) == LISTING_FLUSH:
                    if lost.is_set():
                        raise TaskLost
                    self.queue.add_chunks(task.job_id, seq, chunks)
                    seq, chunks = seq + len(chunks), []
            if seen is not None:
                vanished += [s for s in self.lib.catalog.sources_under(root) if s not in seen]
        if chunk:
            chunks.append(chunk)
        self.queue.add_chunks(task.job_id, seq, chunks)
        self.queue.finish_listing(task, total, vanished)
        self.queue.complete(task, {})

    def _index(self, task: Task, lost: threading.Event) -> tuple[dict, dict]:
        items = [item_from_json(d) for d in task.items]

        def check(done: int, total: int, report: IndexReport) -> None:
            if lost.is_set():
                raise TaskLost

        report = Pipeline(self.lib, check, objects=bool(task.params.get("objects"))).run([SourceSet(items)])
        counts = {"added": len(report.added) + report.updated, "duplicates": len(report.duplicates),
                  "unchanged": report.unchanged, "rejected": len(report.rejected)}  # fmt: skip
        details: dict = {"rejected": [{"source": r.source, "reason": r.reason} for r in report.rejected]}
        uploads = [i for i in items if i.stored]
        if uploads:  # each upload's outcome, for the request waiting on it; a rejected one's bytes go
            rejected = {r.source: r.reason for r in report.rejected}
            states = self.lib.catalog.source_states([i.source for i in uploads])
            new = set(report.added)
            near = {d.source: d.of for d in report.near_duplicates}
            outcome = {}
            for item in uploads:
                if item.source in rejected:
                    outcome[item.source] = {"rejected": rejected[item.source]}
                    if self.lib.catalog.id_for_sha(item.stored) is None:
                        self.lib.images.delete("original", item.stored)
                elif item.source in states:
                    image_id = states[item.source][0]
                    outcome[item.source] = {"id": image_id, "new": image_id in new,
                                            "near_duplicate_of": near.get(item.source)}  # fmt: skip
                else:  # its twin was deleted while it was indexed
                    outcome[item.source] = {"rejected": "removed while it was being indexed; upload it again"}
            details["items"] = outcome
        return counts, details

    def _finish(self, task: Task) -> None:
        if task.params.get("prune"):
            vanished = self.queue.vanished(task.job_id)
            if vanished:
                touched = self.lib.catalog.remove_sources(vanished)
                self.lib.delete_images(self.lib.catalog.orphans(touched))
        self.queue.close(task)
