"""A long video in an index job is split into time ranges that several workers share (real videos made from the
shared photos, real workers: in-process ones claimed by hand, and `lookalike worker` processes, one killed)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from lookalike.config import Settings
from lookalike.ingest.pipeline import IndexingParts
from lookalike.ingest.sources import SourceItem
from lookalike.ingest.video import Span, VideoLimits, frames, probe
from lookalike.jobs import Task, Worker
from lookalike.jobs.worker import video_ranges
from lookalike.library import Library
from lookalike.moments import frame_source
from tests.conftest import MODELS, photo
from tests.videos import Shot, make_video

SHOTS = ("goldfish", "tiger_cat", "bullet_train")  # on screen 0-10 s, 10-20 s, 20-30 s


@pytest.fixture
def lib(settings: Settings, embedder):
    s = settings.model_copy(update={"job_chunk": 5, "video_chunk_seconds": 15.0})
    with Library(s, embedder=embedder) as library:
        yield library


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    make_video(folder / "long.mp4", [Shot(photo(label, 1), 10) for label in SHOTS])
    return folder / "long.mp4"


def claim(lib: Library, worker: Worker) -> Task:
    task = lib.jobs.claim(worker.name)
    assert task is not None
    return task


def frame_times(lib: Library) -> list[float]:
    with lib.catalog.db.read() as conn:
        return [float(t) for (t,) in conn.execute(sa.text("SELECT t FROM frames ORDER BY t"))]


def range_tasks(lib: Library, job_id: int) -> list[tuple[str, list, int]]:
    """(worker, range, attempts) of each of the job's range tasks."""
    with lib.catalog.db.read() as conn:
        rows = conn.execute(sa.text("SELECT worker, items, attempts FROM job_tasks WHERE job_id = :j AND kind = "
                                    "'index' ORDER BY seq"), {"j": job_id}).fetchall()  # fmt: skip
    return [(w, json.loads(items)[0]["r"], int(n)) for w, items, n in rows]


def test_two_workers_share_a_long_video_by_time_range(lib: Library, clip: Path) -> None:
    job_id = lib.jobs.submit("index", {"paths": [str(clip.parent)]})
    a, b = lib.worker("a"), lib.worker("b")
    a.run_task(claim(lib, a))  # the listing: 30 s in ranges of 15 s
    first, second = claim(lib, a), claim(lib, b)  # both ranges held at once, by two workers
    assert (first.items[0]["r"], second.items[0]["r"]) == ([0.0, 15.0], [15.0, None])
    b.run_task(second)
    a.run_task(first)
    assert lib.catalog.video_states([str(clip)]) == {}  # not complete before the job's finish step sees every range
    a.run_task(claim(lib, a))  # the finish step
    job = lib.jobs.get(job_id)
    assert job.state == "done" and job.total == job.done == 2 and not job.errors, job.as_dict()
    assert [w for w, _, _ in range_tasks(lib, job_id)] == ["a", "b"]
    # cuts at 0, 10 and 20 s; the second range opens with the frame at 15 s; each range wrote its own
    assert frame_times(lib) == [0.0, 10.0, 15.0, 20.0]
    state = lib.catalog.video_states([str(clip)])[str(clip)]
    assert state.frames == 4 and lib.catalog.count() == 4 == len(lib.vectors.ids())
    hit = lib.search(str(photo("bullet_train", 1)), k=1).hits[0]
    assert hit.sources == (frame_source(str(clip), 20.0),)
    again = lib.jobs.submit("index", {"paths": [str(clip.parent)], "prune": True})
    lib.worker("c").run(once=True)
    job = lib.jobs.get(again)  # a recorded video: one task, skipped unchanged, not vanished
    assert (job.state, job.total, job.unchanged, lib.catalog.count()) == ("done", 1, 1, 4)
    clip.unlink()
    # something else is still there: a folder that lists nothing at all is never pruned (pipeline.EMPTY_ROOT)
    (clip.parent / "notes.dat").write_bytes(b"not a photo")
    gone = lib.jobs.submit("index", {"paths": [str(clip.parent)], "prune": True})
    lib.worker("c").run(once=True)
    assert lib.jobs.vanished(gone) == [str(clip)] and lib.catalog.count() == 0
    assert lib.catalog.video_states([str(clip)]) == {}


def test_a_range_rejected_takes_the_video_out_whole(lib: Library, tmp_path: Path) -> None:
    """A Matroska file cut at 80 %: the listing sees its declared 30 s; the first range decodes, the second meets
    the end of the data. The video is reported and none of its frames stay."""
    folder = tmp_path / "cut"
    folder.mkdir()
    make_video(tmp_path / "whole.mkv", [Shot(photo(label, 1), 10) for label in SHOTS])
    data = (tmp_path / "whole.mkv").read_bytes()
    (folder / "cut.mkv").write_bytes(data[: len(data) * 8 // 10])  # frames to 19.9 s
    job_id = lib.jobs.submit("index", {"paths": [str(folder)]})
    lib.worker("a").run(once=True)
    job = lib.jobs.get(job_id)
    assert job.state == "done" and job.total == 2 and job.rejected == 1, job.as_dict()
    assert "truncated" in job.errors[0]["reason"] and job.errors[0]["source"] == str(folder / "cut.mkv")
    assert frame_times(lib) == [] and lib.catalog.count() == 0
    assert lib.catalog.video_states([str(folder / "cut.mkv")]) == {}


def test_the_frame_cap_applies_to_the_video_not_each_range(lib: Library, clip: Path) -> None:
    lib.settings.video_max_frames = 3  # each range keeps 2 frames, the video 4
    job_id = lib.jobs.submit("index", {"paths": [str(clip.parent)]})
    lib.worker("a").run(once=True)
    job = lib.jobs.get(job_id)
    assert job.state == "done" and job.rejected == 1 and "LOOKALIKE_VIDEO_MAX_FRAMES=3" in job.errors[0]["reason"]
    assert lib.catalog.count() == 0 and lib.catalog.video_states([str(clip)]) == {}


def test_a_recorded_video_rejected_again_for_its_sampling_keeps_its_frames(lib: Library, clip: Path) -> None:
    """The same file indexed again because the sampling changed (here the interval), and rejected this time (here by
    a lower frame cap): its earlier record and frames stay, as when a whole pass rejects it (found in review: the
    split path forgot the whole video)."""
    lib.jobs.submit("index", {"paths": [str(clip.parent)]})
    lib.worker("a").run(once=True)
    assert lib.catalog.video_states([str(clip)])[str(clip)].frames == 4 and lib.catalog.count() == 4
    lib.settings.video_interval, lib.settings.video_max_frames = 3.0, 3
    job_id = lib.jobs.submit("index", {"paths": [str(clip.parent)]})
    lib.worker("a").run(once=True)
    job = lib.jobs.get(job_id)
    assert job.state == "done" and job.rejected == 1 and "LOOKALIKE_VIDEO_MAX_FRAMES=3" in job.errors[0]["reason"]
    assert lib.catalog.video_states([str(clip)])[str(clip)].frames == 4 and lib.catalog.count() == 4
    assert lib.search(str(photo("bullet_train", 1)), k=1).hits[0].sources == (frame_source(str(clip), 20.0),)


def test_a_worker_killed_mid_range_is_finished_by_another_without_doubles(tmp_path: Path) -> None:
    """Two `lookalike worker` processes on one long video: the first is killed (SIGKILL) once it wrote frames of its
    range; the second takes that range again when its lease runs out, and the rest. Every range's frames are there
    once, exactly those a clean decode of each range chooses, and the video is recorded."""
    folder = tmp_path / "videos"
    folder.mkdir()
    labels = ("goldfish", "tiger_cat", "bullet_train", "Afghan_hound", "African_crocodile", "Airedale")
    video = folder / "long.mp4"
    make_video(video, [Shot(photo(label, 2), 10, pan=True) for label in labels])  # 60 s
    spans = [Span(0, 20), Span(20, 40), Span(40)]
    want = [f.t for s in spans for f in frames(video, VideoLimits(interval=1), s)]
    home = tmp_path / "home"
    env = {**os.environ, "LOOKALIKE_HOME": str(home), "LOOKALIKE_MODELS_DIR": str(MODELS),
           "LOOKALIKE_BATCH_SIZE": "2", "LOOKALIKE_VIDEO_INTERVAL": "1", "LOOKALIKE_VIDEO_CHUNK_SECONDS": "20",
           "LOOKALIKE_JOB_LEASE": "2"}  # fmt: skip
    lookalike = [sys.executable, "-m", "lookalike"]
    added = subprocess.run([*lookalike, "jobs", "add", str(folder)], env=env, capture_output=True, timeout=120)
    assert added.returncode == 0, added.stderr.decode()
    first = subprocess.Popen([*lookalike, "worker", "--name", "first"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    written, deadline = 0, time.time() + 120
    while time.time() < deadline and first.poll() is None and written < 4:
        time.sleep(0.05)
        with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(home / "catalog.sqlite", timeout=5) as c:
            written = c.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
    assert first.poll() is None and written >= 4, "the first worker ended before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(2.5)  # its lease runs out
    second = subprocess.run([*lookalike, "worker", "--once", "--name", "second"], env=env, capture_output=True,
                            timeout=600)  # fmt: skip
    assert second.returncode == 0, second.stderr.decode()
    with Library(Settings(home=home, models_dir=MODELS)) as lib:
        job = lib.jobs.list(1)[0]
        assert job.state == "done" and job.total == job.done == 3 and not job.errors, job.as_dict()
        tasks = range_tasks(lib, job.id)
        assert [r for _, r, _ in tasks] == [[0.0, 20.0], [20.0, 40.0], [40.0, None]]
        killed = [(w, n) for w, _, n in tasks if n > 1]  # the range the first worker held when killed: run again
        assert killed == [("second", 2)] and 4 <= written < len(want), (written, tasks)
        assert frame_times(lib) == want  # each frame once: the first worker's and the second's
        assert lib.catalog.count() == len(want) == len(lib.vectors.ids())
        assert lib.catalog.video_states([str(video)])[str(video)].frames == len(want)


def test_which_videos_are_split_and_how(lib: Library, clip: Path, tmp_path: Path) -> None:
    item = SourceItem(str(clip), None, clip.stat().st_size, clip.stat().st_mtime_ns)
    duration = probe(clip).duration
    half = math.nextafter(duration / 2, 0)  # a half read from a setting's text, a hair short
    spans = {chunk: [r.span for r in video_ranges(item, replace_settings(lib, chunk))]
             for chunk in (half, 10.0, duration)}  # fmt: skip
    assert spans[half] == [(0.0, round(duration / 2, 3)), (round(duration / 2, 3), None)]  # not a third
    assert spans[10.0] == [(0.0, 10.0), (10.0, 20.0), (20.0, None)] and spans[duration] == [None]
    url = SourceItem("https://example.com/long.mp4")
    photo_item = SourceItem(str(photo("goldfish", 1)))
    assert [i.span for i in (*video_ranges(url, lib.indexing_parts()), *video_ranges(photo_item, lib.indexing_parts()))
            ] == [None, None]  # fmt: skip  # a URL's video is fetched whole by one worker
    lib.index([str(clip.parent)])  # recorded: a later job's task skips it unchanged, whole
    assert [r.span for r in video_ranges(item, replace_settings(lib, 10.0))] == [None]


def replace_settings(lib: Library, chunk: float) -> IndexingParts:
    parts = lib.indexing_parts()
    return dataclasses.replace(parts, settings=parts.settings.model_copy(update={"video_chunk_seconds": chunk}))
