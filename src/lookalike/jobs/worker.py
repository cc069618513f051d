"""A worker: claims job tasks from the catalog's queue and runs them through a library, until stopped.

``lookalike worker`` runs one in its own process (any number of them, on any machines that share the
catalog, the image store and the vector engine); ``lookalike serve`` runs one in a thread unless
``LOOKALIKE_SERVE_WORKER=0``. While a task runs, a heartbeat thread renews its lease; when the lease is lost
(the worker was too slow, or the job was cancelled) the task stops at its next batch and another worker
(or nobody, when cancelled) takes over. Each batch is written in one transaction with a check that the lease
is still held (``JobQueue.guard``): a worker that lost its lease writes nothing more.

Outages: an error of the catalog, the vector engine or the image store is never a photo's fault and never
ends the process. When a part is unreachable (``Unavailable``) the worker keeps its chunk, waits with capped
backoff (lookalike.store.retry) until the part answers again, and runs the chunk again under the same lease;
only after ``OUTAGE_WAIT`` seconds without it does that count as one of the chunk's ``MAX_ATTEMPTS``. While
the catalog is away, claiming waits the same way.

Long videos: the listing splits a local video longer than LOOKALIKE_VIDEO_CHUNK_SECONDS into time ranges, a task
each (and a unit of the job's progress), so that several workers decode and embed it at once
(``lookalike.ingest.video.frames`` says how the ranges' frames relate to a whole pass). A range's frames are written
like a chunk's photos, so a range run again (its worker killed) finds them and writes nothing twice; the video is
recorded (``videos``: skipped by later runs unchanged) by the job's finish step once all its ranges are done.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from lookalike.ingest.pipeline import (
    EMPTY_ROOT,
    IndexingParts,
    IndexReport,
    Pipeline,
    emptied_folders,
    forget_sources,
    upload_in_use,
    vanished_under,
)
from lookalike.ingest.sources import SourceItem, SourceSet, iter_expand
from lookalike.ingest.video import VideoError, VideoLimits, file_sha256, probe
from lookalike.jobs.queue import JobQueue, Task, TaskLost
from lookalike.moments import is_video
from lookalike.store import retry
from lookalike.store.catalog import NewVideo
from lookalike.store.errors import StoreUnavailable, Unavailable
from lookalike.store.images import ImageStore, LocalImageStore
from lookalike.store.s3 import is_s3

log = logging.getLogger("lookalike")
LISTING_FLUSH = 16  # chunks written per statement while listing
OUTAGE_WAIT = 300.0  # seconds a worker holds a chunk while a part it needs is away before it counts an attempt
OUTAGE_ROUNDS = 20  # runs of one chunk cut short by outages, before that counts as an attempt (a flapping part)
Range = tuple[dict[str, Any], str, dict[str, Any]]  # a video's time range: its item, its task's state and result


def item_json(item: SourceItem) -> dict[str, Any]:
    return {k: v for k, v in {"s": item.source, "l": item.label, "z": item.size, "m": item.mtime_ns, "e": item.error,
                              "h": item.stored, "f": item.fields,
                              "r": list(item.span) if item.span else None}.items() if v is not None}  # fmt: skip


def item_from_json(data: dict[str, Any]) -> SourceItem:
    span = (float(data["r"][0]), None if data["r"][1] is None else float(data["r"][1])) if "r" in data else None
    return SourceItem(data["s"], data.get("l"), data.get("z"), data.get("m"), data.get("e"), stored=data.get("h"),
                      fields=data.get("f"), span=span)  # fmt: skip


def video_ranges(item: SourceItem, parts: IndexingParts) -> list[SourceItem]:
    """A local video longer than LOOKALIKE_VIDEO_CHUNK_SECONDS as time ranges that long (the last one to its end), a
    task each, for several workers to share it; any other item as it is: a photo, an unchanged video (its task skips
    it), a URL's or a bucket's video (fetched whole by one worker), one that cannot be probed (its task says why)."""
    s = parts.settings
    if not is_video(item.source) or item.error or item.is_url or item.is_upload or is_s3(item.source):
        return [item]
    state = parts.catalog.video_states([item.source]).get(item.source)
    if state is not None and (state.size, state.mtime_ns, state.interval) == (item.size, item.mtime_ns,
                                                                              s.video_interval):  # fmt: skip
        return [item]
    try:
        duration = probe(item.source, VideoLimits.from_settings(s)).duration
    except (VideoError, OSError):
        return [item]
    step = s.video_chunk_seconds
    n = math.ceil(duration / step - 1e-6)  # 600 s in ranges of 300 s: two (not a third from a rounding error)
    if n <= 1:
        return [item]
    return [replace(item, span=(round(i * step, 3), round((i + 1) * step, 3) if i < n - 1 else None))
            for i in range(n)]  # fmt: skip


def _covers(spans: set[tuple[float, float | None]]) -> bool:
    """Whether time ranges meet end to start from 0 to the end of the video."""
    at: float | None = 0.0
    for start, end in sorted(spans, key=lambda s: s[0]):
        if at is None or start != at:
            return False
        at = end
    return at is None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def host_affinity() -> str:
    """Jobs naming local paths run on the machine whose paths they are."""
    return f"host:{socket.gethostname()}"


def store_affinity(images: ImageStore) -> str | None:
    """Uploads kept in a local image store run where that store is; in a bucket, anywhere."""
    root = images.root if isinstance(images, LocalImageStore) else None
    return f"store:{socket.gethostname()}:{root}" if root is not None else None


def affinities(images: ImageStore) -> tuple[str, ...]:
    return tuple(a for a in (host_affinity(), store_affinity(images)) if a)


class Worker:
    """Runs index jobs' chunks from ``queue`` into the library whose ``parts`` it is given. ``maintain`` (re-learn when
    due, tidy) runs once a minute; None where another thread of the process maintains (the service)."""

    def __init__(self, parts: IndexingParts, queue: JobQueue, maintain: Callable[[], None] | None = None,
                 name: str | None = None, poll: float = 0.5) -> None:  # fmt: skip
        self.parts, self.queue, self.maintain, self.poll = parts, queue, maintain, poll
        self.name = name or worker_name()
        self.wake = threading.Event()  # set when work was queued in this process: no need to wait a poll
        self.stopping = threading.Event()
        self.tasks_done = 0

    def run(self, once: bool = False) -> None:
        """Claim and run tasks until ``stop()`` (with ``once``: until no task is left). No error of a task, of
        the catalog or of maintenance ends the loop: only ``stop()`` does."""
        last_maintain = time.monotonic()
        while not self.stopping.is_set():
            try:
                task = self.queue.claim(self.name, affinities(self.parts.images))
            except Unavailable as exc:
                log.warning("cannot claim a task: %s; waiting for it to come back", exc)
                self.queue.db.wait_reachable(self.stopping.is_set, OUTAGE_WAIT)
                continue
            except Exception:  # a bug, or a database error nobody foresaw: logged, tried again after a pause
                log.exception("claiming a task failed")
                self.stopping.wait(max(self.poll, retry.BACKOFF_MAX))
                continue
            if task is None:
                if once:
                    return
                self.wake.wait(self.poll)
                self.wake.clear()
                continue
            self.run_task(task)
            if self.maintain is not None and time.monotonic() - last_maintain > 60:
                last_maintain = time.monotonic()
                try:
                    self.maintain()  # re-learn when due, tidy: once a minute, not once per chunk
                except Exception:  # maintenance waits for the next minute; the work goes on
                    log.exception("maintenance failed")

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"lookalike-worker-{self.name}", daemon=True)
        thread.start()
        return thread

    # --- one task --------------------------------------------------------------------------------------
    def run_task(self, task: Task) -> None:
        """Run one claimed task while a heartbeat thread renews its lease; never raises."""
        lost, finished = threading.Event(), threading.Event()

        def beat() -> None:
            while not finished.wait(self.queue.lease / 3):
                try:
                    if not self.queue.heartbeat(task):
                        lost.set()
                        return
                except Unavailable as exc:  # keep trying: the lease has room for a missed beat or two
                    log.warning("renewing the lease of job %d task %d: %s", task.job_id, task.seq, exc)
                except Exception:
                    log.exception("renewing a lease failed")

        heart = threading.Thread(target=beat, name=f"lookalike-lease-{task.id}", daemon=True)
        heart.start()
        try:
            self._attempt(task, lost)
        except Exception:  # never expected (each path of _attempt handles its errors): the lease runs out
            log.exception("job %d task %d: unexpected error; left to the lease", task.job_id, task.seq)
        finally:
            finished.set()
            heart.join(5)

    def _attempt(self, task: Task, lost: threading.Event) -> None:
        """One attempt at a task: through outages of the parts it needs, run again under the same lease once
        they are back (photos already written are found unchanged, none is written twice); an error of its own
        is recorded as a failed attempt (queued again up to ``MAX_ATTEMPTS``)."""
        for round_ in range(OUTAGE_ROUNDS + 1):
            try:
                self._run(task, lost, rerun=round_ > 0)
                self.tasks_done += 1
                return
            except TaskLost:
                log.info("job %d task %d: lease lost or job cancelled; stopped", task.job_id, task.seq)
                return
            except Unavailable as exc:
                log.warning("job %d task %d: %s; keeping the chunk until it is back", task.job_id, task.seq, exc)
                try:
                    if round_ < OUTAGE_ROUNDS and self._back(task, exc, lost, round_):
                        continue
                except TaskLost:
                    log.info("job %d task %d: lease lost or worker stopping; left to another worker",
                             task.job_id, task.seq)  # fmt: skip
                    return
                self._give_up(task, exc, outage=True)
                return
            except Exception as exc:  # reported in the job; retried up to the queue's limit
                log.exception("job %d task %d failed", task.job_id, task.seq)
                self._give_up(task, exc)
                return

    def _run(self, task: Task, lost: threading.Event, rerun: bool = False) -> None:
        """``rerun``: this attempt already ran the task once, cut short by an outage."""
        started = time.perf_counter()
        if task.kind == "list":
            self._list(task, lost)
        elif task.kind == "index":
            counts, details = self._index(task, lost, rerun or task.attempts > 1)
            if self.queue.complete(task, counts, details):
                log.info("job %d chunk %d: %d photos (%d added) in %.1f s", task.job_id, task.seq,
                         len(task.items), counts["added"], time.perf_counter() - started)  # fmt: skip
        else:
            self._finish(task)

    def _back(self, task: Task, exc: Unavailable, lost: threading.Event, round_: int) -> bool:
        """Wait until the part that failed answers again (True), or ``OUTAGE_WAIT`` passed (False). Raises
        ``TaskLost`` when the worker is stopping or the task is no longer its own (its lease ran out meanwhile
        and another worker claimed it)."""

        def stop() -> bool:
            return self.stopping.is_set() or lost.is_set()

        self.stopping.wait(retry.pause(round_))  # a part that fails again at once is not hammered
        if not retry.wait_until(self._probe(exc), stop, OUTAGE_WAIT):
            if stop():
                raise TaskLost
            return False
        try:
            held = self.queue.heartbeat(task)  # renewed before running again: the lease may have run out meanwhile
        except Unavailable:  # gone again already: the next run finds out, and the next round waits again
            return True
        if not held:
            raise TaskLost
        return True

    def _probe(self, exc: Unavailable) -> Callable[[], None]:
        """A cheap call that raises ``Unavailable`` while the part behind ``exc`` is still away."""
        db = self.queue.db
        if not isinstance(exc, StoreUnavailable):  # the catalog; for the engine, the chunk's next run tells
            return db.ping

        def store_and_catalog() -> None:
            self.parts.images.ping()
            db.ping()

        return store_and_catalog

    def _give_up(self, task: Task, exc: BaseException, outage: bool = False) -> None:
        """Record a failed attempt; when even that cannot be written, the lease runs out and another worker
        (or this one) claims the task again."""
        try:
            # the first line only: a database error's text goes on with the statement and its parameters, which
            # the job's readers (anyone who may read the library) must not see
            reason = (str(exc).strip().splitlines() or [""])[0]
            self.queue.fail(task, f"{type(exc).__name__}: {reason}", outage=outage)
        except Exception as err:
            log.warning("job %d task %d: cannot record the failure (%s); its lease will run out", task.job_id,
                        task.seq, err)  # fmt: skip

    def _list(self, task: Task, lost: threading.Event) -> None:
        """Stream the job's sources into index tasks (same order every time, so a re-listing after a
        crash writes the same chunks, which the queue adds only once)."""
        p = task.params
        seq, total, chunk, chunks, vanished = 1, 0, [], [], []
        for path in p.get("paths", []):
            root, items = iter_expand(path, p.get("label"), s3=self.parts.reader.s3 if is_s3(path) else None,
                                      roots=p.get("roots"), kinds=p.get("kinds"),
                                      own=self.parts.settings.home)  # fmt: skip  # roots: an HTTP job's
            seen: set[str] | None = set() if p.get("prune") and root else None
            for item in items:
                ranges = video_ranges(item, self.parts)
                if len(ranges) > 1:  # a long video: a task per range (and a unit of the job's progress)
                    chunks += [[item_json(r)] for r in ranges]
                else:
                    chunk.append(item_json(item))
                total += len(ranges)
                if seen is not None:
                    seen.add(item.source)
                if len(chunk) == self.queue.chunk:
                    chunks.append(chunk)
                    chunk = []
                if len(chunks) >= LISTING_FLUSH:
                    if lost.is_set():
                        raise TaskLost
                    self.queue.add_chunks(task.job_id, seq, chunks)
                    seq, chunks = seq + len(chunks), []
            if seen is not None and root:
                gone = vanished_under(self.parts.catalog, root, seen)
                held = emptied_folders(root, gone, seen, bool(p.get("prune_empty")))
                for folder, kept in held.items():
                    log.warning("job %d: %s: %s", task.job_id, folder, EMPTY_ROOT.format(n=len(kept)))
                kept_all = {k for kept in held.values() for k in kept}
                vanished += [g for g in gone if g not in kept_all]
        if chunk:
            chunks.append(chunk)
        self.queue.add_chunks(task.job_id, seq, chunks)
        self.queue.finish_listing(task, total, vanished)
        self.queue.complete(task, {})

    def _index(self, task: Task, lost: threading.Event, rerun: bool) -> tuple[dict[str, int], dict[str, Any]]:
        """Index a chunk; ``rerun``: an earlier run of it (another attempt, or this one's before an outage) may have
        written some of its photos before it was cut off."""
        items = [item_from_json(d) for d in task.items]

        def check(done: int, total: int, report: IndexReport) -> None:
            if lost.is_set():
                raise TaskLost

        pipeline = Pipeline(self.parts, check, objects=bool(task.params.get("objects")),
                            guard=self.queue.guard(task))  # fmt: skip
        # only a chunk run again asks: on a first run, photos added since the job began are another job's or
        # another process's (two jobs over one folder both said "added 12", review)
        before = self._written_before(task, items) if rerun else {}
        report = pipeline.run([SourceSet(items)])
        # what an earlier attempt wrote, found unchanged now: this job's photos all the same (a job re-run after an
        # outage said "added 680, unchanged 320" for 1,000 new photos)
        uploads = [i for i in items if i.stored]
        states = self.parts.catalog.source_states({*before, *(i.source for i in uploads)})  # one query for both uses
        rejected = {r.source: r.reason for r in report.rejected}
        earlier = {s: i for s, i in before.items() if s not in rejected and s in states and states[s].image_id == i}
        firsts = {i: s for s, i in reversed(list(earlier.items()))}  # each photo's first source: added; others: twins
        counts = {"added": len(report.added) + report.updated + len(firsts),
                  "duplicates": len(report.duplicates) + len(earlier) - len(firsts),
                  "unchanged": report.unchanged - len(earlier), "rejected": len(report.rejected)}  # fmt: skip
        details: dict[str, Any] = {"rejected": [{"source": r.source, "reason": r.reason} for r in report.rejected]}
        if report.parts:  # a video's time range: the video is recorded by the job's finish step (_finish_videos)
            details["parts"] = [asdict(part) for part in report.parts]
        if uploads:  # each upload's outcome, for the request waiting on it; a rejected one's bytes go
            new = set(report.added) | set(firsts)
            twins = {d.source for d in report.duplicates} | (set(earlier) - set(firsts.values()))  # its image, not new
            near = {d.source: d.of for d in report.near_duplicates}
            outcome: dict[str, dict[str, Any]] = {}
            for item in uploads:
                stored = item.stored or ""  # every upload's bytes are in the image store (``uploads`` above)
                if item.source in rejected:
                    outcome[item.source] = {"rejected": rejected[item.source]}
                    if not upload_in_use(self.parts.catalog, stored):
                        self.parts.images.delete("original", stored)
                elif item.source in states:
                    image_id = states[item.source].image_id
                    outcome[item.source] = {"id": image_id, "new": image_id in new and item.source not in twins,
                                            "near_duplicate_of": near.get(item.source)}  # fmt: skip
                else:  # its twin was deleted while it was indexed
                    outcome[item.source] = {"rejected": "removed while it was being indexed; upload it again"}
            details["items"] = outcome
        return counts, details

    def _written_before(self, task: Task, items: list[SourceItem]) -> dict[str, int]:
        """The sources of a chunk whose photos were added since it was first claimed (source -> image id): the work of
        an earlier run of the chunk (another attempt, or this one's before an outage), cut off before it was reported;
        not what another job wrote before (since the job's submission, that counted as this job's too: review).
        One query per folder of the chunk, next to embedding its photos."""
        since = task.first_claimed
        if not since:
            job = self.queue.get(task.job_id, details=False)
            since = job.created_at if job is not None else time.time()
        return self.parts.catalog.written_since([i.source for i in items], since)

    def _finish(self, task: Task) -> None:
        rejected = self._finish_videos(task)
        if task.params.get("prune"):
            vanished = self.queue.vanished(task.job_id)
            if vanished:
                touched = forget_sources(self.parts.catalog, vanished)
                self.parts.delete_orphans(self.parts.catalog.orphans(touched))
        self.queue.close(task, {"rejected": len(rejected)}, {"rejected": rejected})

    def _finish_videos(self, task: Task) -> list[dict[str, str]]:
        """Record each video the job split into time ranges whose ranges are all done: one record with the frames
        of all of them, as a whole pass records it (incremental runs skip it from then on). A video is left
        unrecorded, for a re-run to finish (finding the frames written), when a range failed for good or the file
        changed between ranges; it is taken out whole (its frames forgotten) when a range was rejected (that
        range's task reported why) or its ranges keep more than LOOKALIKE_VIDEO_MAX_FRAMES frames in all (reported
        here). Run again after a crash, it writes the same record."""
        by_video: dict[str, list[Range]] = {}
        for item, state, result in self.queue.ranges(task.job_id):
            by_video.setdefault(item["s"], []).append((item, state, result))
        rejected = []
        for source, ranges in by_video.items():
            reason = self._finish_video(task, source, ranges)
            if reason is not None:
                rejected.append({"source": source, "reason": reason})
        return rejected

    def _finish_video(self, task: Task, source: str, ranges: list[Range]) -> str | None:
        """One split video (``_finish_videos``); the reason when it is rejected here."""
        catalog, cap = self.parts.catalog, VideoLimits.from_settings(self.parts.settings).max_frames
        parts = [NewVideo(**{**p, "frames": tuple(p["frames"])}) for _, _, result in ranges
                 for p in result.get("parts", []) if p["source"] == source]  # fmt: skip
        if any(r.get("source") == source for _, _, result in ranges for r in result.get("rejected", [])):
            self._take_out(source, parts)
            return None
        spans = {(float(item["r"][0]), item["r"][1]) for item, _, _ in ranges}
        done = all(state == "done" for _, state, _ in ranges) and len(parts) == len(ranges)
        if not done or not _covers(spans) or len({p.sha256 for p in parts}) != 1:
            return None
        frames = tuple(sorted({f for p in parts for f in p.frames}))
        if len(frames) > cap:
            self._take_out(source, parts)
            return f"more than LOOKALIKE_VIDEO_MAX_FRAMES={cap} frames to keep ({len(frames)} in its time ranges)"
        touched = catalog.finish_video(replace(parts[0], frames=frames), self.queue.guard(task))
        self.parts.delete_orphans(catalog.orphans(touched))
        return None

    def _take_out(self, source: str, parts: list[NewVideo]) -> None:
        """A split video rejected: its frames are forgotten, as a whole pass writes none of a video it rejects;
        unless the catalog recorded this same file before (only the sampling changed: a stricter cap, another
        interval), whose record and frames stay, as they do when a whole pass rejects it (the frames its ranges
        wrote are the same file's too, and leave with it)."""
        catalog = self.parts.catalog
        old = catalog.video_states([source]).get(source)
        if old is not None:
            shas = {p.sha256 for p in parts}
            if (shas == {old.sha256}) if shas else _same_file(source, old.sha256):
                return
        self.parts.delete_orphans(catalog.orphans(forget_sources(catalog, [source])))


def _same_file(source: str, sha256: str) -> bool:
    """Whether a local video still holds the bytes of that sha256 (read and hashed: a rare path)."""
    try:
        return file_sha256(source) == sha256
    except VideoError:
        return False
