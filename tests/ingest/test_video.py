"""Frame choice and hostile videos, on videos made here from real shared photos (tests/videos.py)."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from lookalike.config import Settings
from lookalike.ingest.video import Span, VideoError, VideoLimits, frame_at, frames, is_video, probe
from tests.conftest import photo
from tests.videos import Shot, make_video
from tests.videos import _fit as fit

LABELS = ("goldfish", "tiger_cat", "bullet_train", "Afghan_hound", "African_crocodile")


def slideshow() -> list[Shot]:
    """Cuts at 3, 5, 17 and 25 s; a 12 s pan from 5 to 17 s."""
    p = [photo(label) for label in LABELS]
    return [Shot(p[0], 3), Shot(p[1], 2), Shot(p[2], 12, pan=True), Shot(p[3], 8), Shot(p[4], 2)]


def kept(path: Path, **limits: float) -> list[float]:
    return [f.t for f in frames(path, VideoLimits(**limits))]  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    make_video(path, slideshow())
    return path


def near(got: list[float], want: list[float], slack: float = 0.25) -> bool:
    return len(got) == len(want) and all(abs(g - w) <= slack for g, w in zip(got, want, strict=True))


def test_a_frame_at_each_cut_and_one_per_interval_in_a_long_scene(clip: Path) -> None:
    # cuts at 0, 3, 5, 17, 25; the pan from 5 to 17 s gets one more every 4 s; the still 8 s shot none
    assert near(kept(clip, interval=4), [0, 3, 5, 9, 13, 17, 25])
    assert near(kept(clip, interval=10), [0, 3, 5, 15, 17, 25])
    kept_frames = list(frames(clip))
    assert kept_frames[0].image.size == (320, 180) and kept_frames[0].image.mode == "RGB"


def test_a_still_scene_keeps_one_frame_however_long(tmp_path: Path) -> None:
    path = tmp_path / "still.mp4"
    make_video(path, [Shot(photo("goldfish"), 30)])
    assert kept(path, interval=2) == [0.0]  # the others are near-identical to it


@pytest.mark.parametrize(
    ("codec", "suffix", "bitrate", "vfr"),
    [("libx264", ".mkv", 60_000, False), ("mpeg4", ".avi", 80_000, False), ("libvpx", ".webm", 150_000, False),
     ("mpeg4", ".mov", 2_000_000, False), ("libx264", ".mkv", 300_000, True)],
)  # fmt: skip
def test_the_same_cuts_whatever_the_codec_bitrate_or_frame_rate(tmp_path: Path, codec: str, suffix: str,
                                                                 bitrate: int, vfr: bool) -> None:  # fmt: skip
    path = tmp_path / f"clip{suffix}"
    starts = [start for start, _ in make_video(path, slideshow(), codec=codec, bitrate=bitrate, vfr=vfr)]
    got = kept(path, interval=30)
    assert near(got, starts, slack=0.2), (got, starts)  # a variable frame rate: the frames' own timestamps


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_a_rotated_video_is_kept_upright_as_a_player_shows_it(tmp_path: Path, rotate: int) -> None:
    """A phone's portrait video: landscape pictures turned in the file and a display matrix to turn them back. The
    kept frame is the photo upright (the picture as stored is not), with its size as shown."""
    path = tmp_path / "phone.mp4"
    make_video(path, [Shot(photo("goldfish"), 2), Shot(photo("tiger_cat"), 2)], size=(180, 320), rotate=rotate,
               bitrate=1_000_000)  # fmt: skip
    with av.open(str(path)) as container:  # the file holds the pictures turned, and the matrix saying so
        stored = next(container.decode(video=0))
        assert (stored.width, stored.height) == ((320, 180) if rotate != 180 else (180, 320))
        assert round(stored.rotation) % 360 == rotate
    got = list(frames(path))
    assert [(f.t, f.image.size, f.width, f.height) for f in got] == [(0.0, (180, 320), 180, 320),
                                                                     (2.0, (180, 320), 180, 320)]  # fmt: skip
    for kept_frame, label in zip(got, ("goldfish", "tiger_cat"), strict=True):
        upright = np.asarray(fit(photo(label), 180, 320, False), np.float32)
        shown = np.asarray(kept_frame.image, np.float32)
        assert np.abs(shown - upright).mean() < 8, (rotate, label)  # the photo, up to compression
        assert np.abs(np.rot90(shown, 2) - upright).mean() > 25  # not upside down
    assert np.abs(np.asarray(frame_at(path, 2.0), np.float32) - upright).mean() < 8  # a hit's frame, upright too


@pytest.mark.parametrize(("codec", "suffix"), [("libx264", ".mkv"), ("libvpx", ".webm"), ("mpeg4", ".mp4")])
def test_a_variable_frame_rate_is_timed_by_its_timestamps(tmp_path: Path, codec: str, suffix: str) -> None:
    """Shots at 2, 25 and 2 frames a second in a stream that declares 10: timed by frame count, the cuts would fall
    at 0.8 and 8.3 s; the frames' own timestamps put them at 4 and 7 s."""
    path = tmp_path / f"vfr{suffix}"
    shots = [Shot(photo("goldfish"), 4, fps=2), Shot(photo("tiger_cat"), 3, fps=25),
             Shot(photo("bullet_train"), 3, fps=2)]  # fmt: skip
    assert [start for start, _ in make_video(path, shots, codec=codec, bitrate=800_000)] == [0, 4, 7]
    got = list(frames(path, VideoLimits(interval=30)))
    assert [f.t for f in got] == [0.0, 4.0, 7.0]
    again = np.asarray(frame_at(path, 4.0), np.float32)
    assert np.abs(again - np.asarray(got[1].image, np.float32)).mean() < 1.0


def test_probe_and_names(clip: Path) -> None:
    info = probe(clip)
    assert (info.width, info.height, info.codec) == (320, 180, "h264") and 26.5 < info.duration < 27.5
    assert is_video("/a/B.MP4") and is_video("https://x/clip.webm?sig=1") and not is_video("/a/b.jpg")


def test_limits_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert VideoLimits.from_settings(Settings()).max_frames == 14400 == VideoLimits().max_frames  # 1 a second of 4 h
    monkeypatch.setenv("LOOKALIKE_VIDEO_MAX_SECONDS", str(24 * 3600))
    assert VideoLimits.from_settings(Settings()).max_frames == 86400  # the default cap follows the duration limit
    monkeypatch.setenv("LOOKALIKE_VIDEO_INTERVAL", "2.5")
    monkeypatch.setenv("LOOKALIKE_VIDEO_MAX_FRAMES", "7")
    limits = VideoLimits.from_settings(Settings())
    assert (limits.interval, limits.max_frames) == (2.5, 7)


def test_a_four_hour_video_cut_every_five_seconds_is_kept_whole_and_a_strobe_is_not(tmp_path: Path) -> None:
    """The default frame cap: 4 h (the longest video allowed) with a cut every 5 s keeps 2,880 frames (more than the
    2,000 the cap once was) and passes; a strobe, every frame a cut, is refused (here under a 5 min duration limit,
    whose default cap is 300 frames; two shots a second). Tiny frames, one per shot, keep them quick to make."""
    p = [photo(label) for label in LABELS]
    film = tmp_path / "film.mkv"
    make_video(film, [Shot(p[n % 5], 5) for n in range(4 * 720)], size=(64, 36), fps=Fraction(1, 5), bitrate=20_000)
    assert len(list(frames(film, VideoLimits.from_settings(Settings())))) == 4 * 720
    strobe = tmp_path / "strobe.mkv"
    make_video(strobe, [Shot(p[n % 5], 0.5) for n in range(400)], size=(64, 36), fps=2, bitrate=20_000)
    with pytest.raises(VideoError, match="LOOKALIKE_VIDEO_MAX_FRAMES=300 "):
        list(frames(strobe, VideoLimits.from_settings(Settings(video_max_seconds=300))))


@pytest.mark.parametrize(("codec", "suffix"), [("libx264", ".mp4"), ("libx264", ".mkv"), ("libvpx", ".webm"),
                                               ("mpeg4", ".avi"), ("mpeg4", ".mov")])  # fmt: skip
def test_ranges_of_a_video_keep_its_cuts_once_and_a_frame_at_each_start(tmp_path: Path, codec: str,
                                                                         suffix: str) -> None:  # fmt: skip
    """A long video split by time range (lookalike.jobs): the union of the ranges keeps every cut of a whole pass,
    no frame twice (a frame at 10.000 s is the second range's, not the first's), plus a frame at each range's start;
    inside the pan the frames one per interval restart at the range's start, within an interval of a whole pass's.
    Each container is sought by its own index."""
    clip = tmp_path / f"clip{suffix}"
    make_video(clip, slideshow(), codec=codec)
    whole = kept(clip, interval=4)
    limits = VideoLimits(interval=4)
    parts = [[f.t for f in frames(clip, limits, span)] for span in (Span(0, 10), Span(10, 20), Span(20))]
    assert all(0 <= t < 10 for t in parts[0]) and all(10 <= t < 20 for t in parts[1]) and all(t >= 20 for t in parts[2])
    union = [t for part in parts for t in part]
    assert union == sorted(set(union)), union  # in time order, nothing twice
    assert near(parts[1][:1] + parts[2][:1], [10, 20], slack=0.1)  # each range opens with a frame
    for cut in (0, 3, 5, 17, 25):
        assert min(abs(t - cut) for t in union) <= 0.25, (cut, union)
    assert all(min(abs(t - w) for t in union) <= 4 for w in whole), (whole, union)
    assert len(union) <= len(whole) + 2, (whole, union)


def test_a_range_decodes_its_share_of_the_frame_budget(clip: Path) -> None:
    """27 s at 10 frames a second; a range may decode its share of the frames, and 10 s more (from the key frame
    before it)."""
    assert kept(clip, max_decoded=270)  # the whole pass decodes at most that
    with pytest.raises(VideoError, match="LOOKALIKE_VIDEO_MAX_DECODED"):
        list(frames(clip, VideoLimits(max_decoded=27), Span(20)))  # (7 + 10) s of 27: 17 frames, too few
    assert near([f.t for f in frames(clip, VideoLimits(max_decoded=270), Span(20))], [20, 25])
    assert [f.t for f in frames(clip, VideoLimits(max_decoded=270), Span(27.5))] == []  # past the end: nothing


def test_a_range_of_a_video_without_timestamps_is_refused(tmp_path: Path) -> None:
    raw = tmp_path / "raw.mp4"
    make_video(tmp_path / "raw.h264", [Shot(photo("goldfish"), 4)])
    (tmp_path / "raw.h264").rename(raw)
    with pytest.raises(VideoError, match="cannot be sought"):
        list(frames(raw, span=Span(2)))


# --- bad and hostile videos: each a clear error, never a hang --------------------------------------------


def error(path: Path, **limits: float) -> str:
    with pytest.raises(VideoError) as exc:
        kept(path, **limits)
    return str(exc.value)


def test_truncated_videos(clip: Path, tmp_path: Path) -> None:
    data = clip.read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])  # the index (moov) comes last: lost
    assert "not a readable video" in error(tmp_path / "half.mp4")
    mkv = tmp_path / "clip.mkv"
    make_video(mkv, slideshow())
    data = mkv.read_bytes()
    (tmp_path / "half.mkv").write_bytes(data[: len(data) // 2])  # frames until the cut, then nothing
    assert "truncated" in error(tmp_path / "half.mkv")
    (tmp_path / "header.mkv").write_bytes(data[: data.index(bytes.fromhex("1F43B675"))])  # a stream, zero frames
    assert "not a readable video" in error(tmp_path / "header.mkv")


def test_not_videos(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(200_000))
    shutil.copy(photo("goldfish"), tmp_path / "photo.mp4")  # a wrong extension
    assert "not a readable video" in error(tmp_path / "empty.mp4")
    assert "not a readable video" in error(tmp_path / "garbage.mp4")
    assert "a single picture" in error(tmp_path / "photo.mp4")


def test_a_stream_without_video(tmp_path: Path) -> None:
    path = tmp_path / "sound.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    assert "no video stream" in error(path)


def test_each_limit(clip: Path) -> None:
    assert "LOOKALIKE_VIDEO_MAX_PIXELS" in error(clip, max_pixels=320 * 179)  # a decoding bomb's size, refused
    assert "LOOKALIKE_VIDEO_MAX_SECONDS" in error(clip, max_seconds=20)  # declared: refused before decoding
    assert "LOOKALIKE_VIDEO_MAX_FRAMES" in error(clip, max_frames=3)
    assert "LOOKALIKE_VIDEO_MAX_DECODED" in error(clip, max_decoded=50)  # an absurd frame count
    assert "LOOKALIKE_VIDEO_TIMEOUT" in error(clip, timeout=1e-6)  # the wall-clock budget


def test_a_video_without_timestamps_is_timed_and_stopped_by_its_frames(tmp_path: Path) -> None:
    """A raw H.264 stream declares no duration and no timestamps: its frames are counted at the stream's rate, so
    it is timed right and stopped at the limit all the same."""
    raw = tmp_path / "raw.h264"
    make_video(raw, [Shot(photo("goldfish"), 4), Shot(photo("tiger_cat"), 4)])
    renamed = tmp_path / "raw.mp4"  # under a container's name
    raw.rename(renamed)
    assert probe(renamed).duration == 0
    assert near(kept(renamed), [0, 4], slack=0.15)
    assert "LOOKALIKE_VIDEO_MAX_SECONDS" in error(renamed, max_seconds=6)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
def test_the_frame_at_a_second_is_the_frame_kept_there(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"clip{suffix}"
    make_video(path, slideshow(), codec="libvpx" if suffix == ".webm" else "libx264")
    for kept_frame in frames(path, VideoLimits(interval=4)):
        again = np.asarray(frame_at(path, kept_frame.t), np.float32)
        assert np.abs(again - np.asarray(kept_frame.image, np.float32)).mean() < 1.0, kept_frame.t
    with pytest.raises(VideoError, match="no frame at"):
        frame_at(path, 60.0)
