"""The catalog's videos (schema 9) on both dialects: frames written with their images, a video recorded once its
frames are, a changed video's old frames let go, a vanished one forgotten."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.store.catalog import Catalog, NewImage, NewVideo, VideoState

CLIP = "/media/clips/clip.mp4"
VIDEO_SHA = "ab" * 32


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest, tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    cat = Catalog.open(url)
    yield cat
    cat.close()


def frame(n: int, t: float, video: str = VIDEO_SHA) -> NewImage:
    vec = np.zeros(4, np.float32)
    vec[n % 4] = 1
    return NewImage(f"{n:064x}", f"{CLIP}#t={t:.3f}", "clips", 320, 180, "VIDEO", 0, 10, 1, vec, video=video, t=t)


def video(*frames: NewImage, size: int = 10) -> NewVideo:
    return NewVideo(CLIP, VIDEO_SHA, size, 1, 12.0, 320, 180, tuple(f.source for f in frames))


def test_frames_and_their_video(catalog: Catalog) -> None:
    frames = [frame(1, 0.0), frame(2, 4.0), frame(3, 8.0)]
    ids = [image_id for _, image_id, _ in catalog.add_batch(frames).rows]
    assert catalog.frame_times(ids) == {ids[0]: 0.0, ids[1]: 4.0, ids[2]: 8.0}
    assert catalog.video_states([CLIP]) == {}  # not recorded until its frames are all written
    assert catalog.finish_video(video(*frames)) == []
    assert catalog.video_states([CLIP, "/media/clips/other.mp4"]) == {CLIP: VideoState(VIDEO_SHA, 10, 1, 3, 10.0)}
    catalog.add_batch(frames)  # written again (a resumed run): nothing doubles
    assert catalog.count() == 3 and catalog.frame_times(ids) == {ids[0]: 0.0, ids[1]: 4.0, ids[2]: 8.0}
    assert sorted(catalog.frame_sources(CLIP)) == sorted(f.source for f in frames)
    assert catalog.frame_sources("/media/clips/other.mp4") == catalog.frame_sources("/nowhere/clip.mp4") == []
    assert catalog.frame_sources("/media/clips/Clip.mp4") == []  # another file (SQLite's LIKE ignores case)


def test_a_changed_video_lets_its_old_frames_go(catalog: Catalog) -> None:
    old = [frame(1, 0.0), frame(2, 4.0)]
    old_ids = [i for _, i, _ in catalog.add_batch(old).rows]
    catalog.finish_video(video(*old))
    new = [frame(5, 0.0, "cd" * 32), frame(6, 6.0, "cd" * 32)]
    written = catalog.add_batch(new)
    assert written.displaced == [old_ids[0]]  # t=0 now names the new file's frame
    assert catalog.finish_video(video(*new, size=20)) == [old_ids[1]]  # t=4 is not a frame any more
    assert sorted(catalog.orphans(old_ids)) == old_ids
    assert catalog.video_states([CLIP])[CLIP].size == 20


def test_a_forgotten_video_takes_its_frames_sources(catalog: Catalog) -> None:
    frames = [frame(1, 0.0), frame(2, 4.0)]
    ids = sorted(i for _, i, _ in catalog.add_batch(frames).rows)
    catalog.finish_video(video(*frames))
    assert catalog.forget_videos([CLIP]) == ids
    assert catalog.frame_sources(CLIP) == []
    assert catalog.video_states([CLIP]) == {} and sorted(catalog.orphans(ids)) == ids
