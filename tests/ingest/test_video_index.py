"""Videos indexed from a folder beside photos: one item each, frames as images, incremental and crash-safe."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image

from lookalike.config import Settings
from lookalike.errors import BusyError, NotFoundError
from lookalike.ingest.video import VideoLimits, frames
from lookalike.library import Library
from tests.conftest import MODELS, photo
from tests.videos import Shot, make_video

SHOTS = ("goldfish", "tiger_cat", "bullet_train")  # on screen 0-4 s, 4-8 s, 8-12 s


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "clips").mkdir(parents=True)
    make_video(root / "clips" / "clip.mp4", [Shot(photo(label, 1), 4) for label in SHOTS])
    for label in ("Afghan_hound", "African_crocodile"):
        shutil.copy(photo(label, 0), root / "clips" / f"{label}.jpg")
    return root


@pytest.fixture
def lib(settings: Settings, embedder):
    with Library(settings, embedder=embedder) as library:
        yield library


def frame_rows(lib: Library) -> list[tuple[float, str]]:
    """(second, source) of every frame in the catalog."""
    with lib.catalog.db.read() as conn:
        rows = conn.execute(sa.text("SELECT f.t, d.path || s.name FROM frames f JOIN sources s ON "
                                    "s.image_id = f.image_id JOIN dirs d ON d.id = s.dir_id ORDER BY f.t"))  # fmt: skip
        return [(float(t), src) for t, src in rows]


def test_a_video_is_one_item_and_its_frames_are_searchable_images(lib: Library, folder: Path) -> None:
    report = lib.index([str(folder)])
    assert (report.videos, report.frames, len(report.added), report.rejected) == (1, 3, 2, [])
    clip = str(folder / "clips" / "clip.mp4")
    assert frame_rows(lib) == [(0.0, f"{clip}#t=0.000"), (4.0, f"{clip}#t=4.000"), (8.0, f"{clip}#t=8.000")]
    assert lib.catalog.labels() == {"clips": 5}  # the folder rule labels frames as it labels photos
    assert len(lib.vectors.ids()) == 5
    hit = lib.search(str(photo("tiger_cat", 1)), k=3).hits[0]  # the photo on screen from 4 to 8 s
    assert hit.sources == (f"{clip}#t=4.000",) and lib.catalog.frame_times([hit.id]) == {hit.id: 4.0}
    assert lib.images.exists("thumbnail", hit.sha256)
    stats = lib.stats()
    assert (stats["images"], stats["videos"], stats["video_frames"]) == (5, 1, 3)


def test_an_unchanged_video_is_skipped_and_a_changed_one_replaced(lib: Library, folder: Path) -> None:
    lib.index([str(folder)])
    again = lib.index([str(folder)])
    assert (again.unchanged, again.videos, again.frames) == (3, 0, 0)
    clip = folder / "clips" / "clip.mp4"
    make_video(clip, [Shot(photo("goldfish", 1), 6), Shot(photo("Afghan_hound", 2), 3)])  # new cuts: 0 and 6 s
    changed = lib.index([str(folder)])
    assert (changed.videos, changed.frames, changed.unchanged) == (1, 2, 2)
    assert [t for t, _ in frame_rows(lib)] == [0.0, 6.0]
    assert lib.catalog.count() == 4 and len(lib.vectors.ids()) == 4  # the old frames at 4 and 8 s are gone


def test_a_run_killed_half_way_through_a_video_resumes_without_doubles(lib: Library, folder: Path) -> None:
    """What a kill leaves: some frames committed, the video not recorded. The re-run writes the rest, embeds only
    what is missing, and records the video."""
    lib.index([str(folder)])
    with lib.catalog.db.write() as conn:
        conn.execute(sa.text("DELETE FROM videos"))
    lib.delete_images([lib.search(str(photo("bullet_train", 1)), k=1).hits[0].id])  # the frame at 8 s never written
    resumed = lib.index([str(folder)])
    assert (resumed.videos, resumed.frames, resumed.unchanged) == (1, 1, 2)
    assert [t for t, _ in frame_rows(lib)] == [0.0, 4.0, 8.0] and lib.catalog.count() == 5
    assert lib.index([str(folder)]).unchanged == 3


def test_a_vanished_video_is_reported_once_and_pruned_with_its_frames(lib: Library, folder: Path) -> None:
    lib.index([str(folder)])
    os.remove(folder / "clips" / "clip.mp4")
    report = lib.index([str(folder)], prune=True)
    assert report.vanished == [str(folder / "clips" / "clip.mp4")] and report.pruned == 3
    assert frame_rows(lib) == [] and lib.catalog.count() == 2


def test_bad_videos_are_reported_and_the_rest_indexed(lib: Library, folder: Path, settings: Settings) -> None:
    (folder / "clips" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(5000))
    (folder / "clips" / "empty.webm").write_bytes(b"")
    make_video(folder / "clips" / "long.mkv", [Shot(photo("goldfish", 3), 14)])
    lib.settings.video_max_seconds = 13
    report = lib.index([str(folder)])
    reasons = {Path(r.source).name: r.reason for r in report.rejected}
    assert set(reasons) == {"broken.mp4", "empty.webm", "long.mkv"}
    assert "LOOKALIKE_VIDEO_MAX_SECONDS" in reasons["long.mkv"] and "not a readable video" in reasons["empty.webm"]
    assert (report.videos, report.frames, len(report.added)) == (1, 3, 2)
    assert [t for t, _ in frame_rows(lib)] == [0.0, 4.0, 8.0]


def test_frames_get_their_subjects_with_objects(lib: Library, folder: Path) -> None:
    report = lib.index([str(folder)], objects=True)
    assert report.frames == 3 and report.subjects > 0
    with lib.catalog.db.read() as conn:
        detected = conn.execute(sa.text("SELECT COUNT(*) FROM detections d JOIN frames f ON f.image_id = d.image_id"))
        assert detected.scalar_one() == 3  # every frame was run through the detector, like every photo


def test_another_sampling_interval_indexes_the_video_again(lib: Library, tmp_path: Path) -> None:
    folder = tmp_path / "pan"
    folder.mkdir()
    make_video(folder / "pan.mp4", [Shot(photo("goldfish", 1), 9, pan=True)])
    lib.settings.video_interval = 10
    assert [t for t, _ in (lib.index([str(folder)]), frame_rows(lib))[1]] == [0.0]
    lib.settings.video_interval = 4
    again = lib.index([str(folder)])
    assert (again.videos, again.frames, again.unchanged) == (1, 2, 0)
    assert [t for t, _ in frame_rows(lib)] == [0.0, 4.0, 8.0]


def test_a_video_url_is_fetched_under_the_url_cap_and_indexed(lib: Library, http_root: Path, http_server: str) -> None:
    make_video(http_root / "clip.mp4", [Shot(photo(label, 1), 3) for label in SHOTS])
    url = f"{http_server}/clip.mp4"
    report = lib.index([url])
    assert (report.videos, report.frames, report.rejected) == (1, 3, [])
    hit = lib.search(str(photo("tiger_cat", 1)), k=1).hits[0]
    assert (hit.video, hit.t) == (url, 3.0)
    assert lib.index([url]).unchanged == 1  # a URL's content is taken as fixed once fetched, as a photo's


def test_a_video_url_over_the_cap_is_rejected(settings: Settings, embedder, http_root: Path, http_server: str) -> None:
    make_video(http_root / "clip.webm", [Shot(photo("goldfish", 1), 3)], codec="libvpx")
    with Library(settings.model_copy(update={"url_max_bytes": 1000}), embedder=embedder) as lib:
        rejected = lib.index([f"{http_server}/clip.webm"]).rejected
    assert len(rejected) == 1 and "1000" in rejected[0].reason, rejected  # the cap, before any decoding


def test_kill_9_while_indexing_videos_then_rerun_doubles_nothing(tmp_path: Path) -> None:
    """A real `lookalike index` killed once some videos are recorded: the re-run indexes the rest, and every video
    ends with exactly the frames a clean run chooses (nothing doubled, nothing lost)."""
    folder = tmp_path / "videos"
    folder.mkdir()
    labels = ("goldfish", "tiger_cat", "bullet_train", "Afghan_hound", "African_crocodile", "Airedale")
    for n in range(12):
        shots = [Shot(photo(labels[(n + i) % len(labels)], n % 5), 10, pan=True) for i in range(3)]
        make_video(folder / f"v{n:02d}.mp4", shots)
    want = {str(v): len(list(frames(v, VideoLimits(interval=1)))) for v in sorted(folder.iterdir())}
    home = tmp_path / "home"
    env = {**os.environ, "LOOKALIKE_HOME": str(home), "LOOKALIKE_MODELS_DIR": str(MODELS),
           "LOOKALIKE_BATCH_SIZE": "4", "LOOKALIKE_VIDEO_INTERVAL": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "lookalike", "index", str(folder), "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    recorded, deadline = 0, time.time() + 120
    while time.time() < deadline and proc.poll() is None and recorded < 2:
        time.sleep(0.05)
        if not (home / "catalog.sqlite").exists():
            continue
        with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(home / "catalog.sqlite", timeout=5) as c:
            recorded = c.execute("SELECT COUNT(*) FROM videos").fetchone()[0]
    assert proc.poll() is None, "indexing finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()
    report = json.loads(rerun.stdout)
    assert report["unchanged"] >= 2 and report["unchanged"] + report["videos"] == 12 and not report["rejected"]
    with Library(Settings(home=home, models_dir=MODELS)) as lib:
        got: dict[str, int] = {}
        for _, source in frame_rows(lib):
            video = source.rpartition("#t=")[0]
            got[video] = got.get(video, 0) + 1
        assert got == want
        assert lib.catalog.count() == sum(want.values()) == len(lib.vectors.ids())


def test_frames_of_one_video_are_not_duplicates_of_each_other(lib: Library, tmp_path: Path) -> None:
    """Frames a second apart in a slow pan are nearly the same picture, and a re-encoded video's frames copies of the
    first one's, but they are moments of videos, not copies to remove: `lookalike duplicates` leaves frames out (and
    still finds a photo's copy)."""
    folder = tmp_path / "pan"
    folder.mkdir()
    pan = [Shot(photo("goldfish", 1), 6, pan=True)]
    make_video(folder / "pan.mp4", pan)
    make_video(folder / "reencoded.mkv", pan, bitrate=150_000)  # the same video encoded again: its frames are copies
    lib.settings.video_interval = 1
    assert lib.index([str(folder)]).videos == 2
    shutil.copy(photo("tiger_cat", 1), folder / "cat.jpg")
    Image.open(photo("tiger_cat", 1)).resize((200, 150)).save(folder / "cat-small.jpg", quality=70)
    assert len(lib.index([str(folder)]).added) == 2
    groups = lib.duplicates()["groups"]
    assert [[Path(p["source"]).name for p in g["photos"]] for g in groups] == [["cat.jpg", "cat-small.jpg"]]


def test_a_frames_original_is_served_while_its_video_is_the_one_indexed(lib: Library, folder: Path) -> None:
    lib.index([str(folder)])
    clip = folder / "clips" / "clip.mp4"
    frame = lib.search(str(photo("tiger_cat", 1)), k=1).hits[0]
    assert Image.open(io.BytesIO(lib.original_bytes(frame.id))).size == (320, 180)  # as recorded: not hashed again
    recorded = lib.catalog.video_states([str(clip)])[str(clip)]
    assert lib.reader.video_sha256(str(clip)) == recorded.sha256
    os.utime(clip, ns=(0, 0))  # touched, the same bytes: hashed again, and served
    assert Image.open(io.BytesIO(lib.original_bytes(frame.id))).size == (320, 180)
    with clip.open("ab") as fh:  # changed: hashed again, and refused
        fh.write(b"\0" * 100)
    with pytest.raises(NotFoundError, match="no longer available"):
        lib.original_bytes(frame.id)


def test_a_frames_original_is_decoded_under_the_decode_gate(lib: Library, folder: Path) -> None:
    """Opening a frame decodes its video again (a bucket's fetched whole first): it waits at the gate that bounds the
    photos decoded at once, and a full gate answers busy (503 over HTTP), not one more decode (found in review)."""
    lib.index([str(folder)])
    frame = lib.search(str(photo("tiger_cat", 1)), k=1).hits[0]
    lib.settings.decode_wait = 0.05
    gate = lib.reader.decodes
    held = [gate.acquire(timeout=1) for _ in range(lib.settings.resolved_decodes)]
    try:
        with pytest.raises(BusyError):
            lib.original_bytes(frame.id)
    finally:
        for _ in held:
            gate.release()
    assert Image.open(io.BytesIO(lib.original_bytes(frame.id))).size == (320, 180)


def test_a_phone_video_is_indexed_upright(lib: Library, tmp_path: Path) -> None:
    """A portrait video stored as turned landscape pictures with a display matrix: its frame is recorded at its size
    as shown and found by the upright photo (cropped to portrait in the video) as a copy of it."""
    folder = tmp_path / "phone"
    folder.mkdir()
    make_video(folder / "phone.mov", [Shot(photo("tiger_cat", 1), 3)], size=(180, 320), rotate=90)
    assert lib.index([str(folder)]).frames == 1
    hit = lib.search(str(photo("tiger_cat", 1)), k=1).hits[0]
    record = lib.catalog.get_many([hit.id])[hit.id]
    assert (hit.t, record.width, record.height, hit.copy) == (0.0, 180, 320, True), hit
    with lib.catalog.db.read() as conn:
        assert conn.execute(sa.text("SELECT width, height FROM videos")).one() == (180, 320)  # the video as shown
