"""A screenshot of a video's frame (resized, cropped, recompressed) finds the video and the second, first; results
name the moment and group a video's frames under its best one."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import av
import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike.cli import app
from lookalike.config import Settings
from lookalike.errors import NotFoundError
from lookalike.library import Library
from lookalike.moments import clock
from tests.conftest import photo
from tests.videos import Shot, make_video

# a cut every 3 s, then a 6 s pan (5 s after its start, the view has moved two thirds of a frame)
SHOTS = [Shot(photo(label, 2), 3) for label in ("goldfish", "tiger_cat", "bullet_train", "Afghan_hound")]
SHOTS.append(Shot(photo("African_crocodile", 2), 6, pan=True))


def screenshot(video: Path, t: float) -> bytes:
    """The frame shown at ``t``, as a phone would share it: 5 % cropped off each side, resized, JPEG 70."""
    with av.open(str(video)) as container:
        frame = next(f for f in container.decode(video=0) if f.time is not None and f.time >= t - 1e-3)
        image = frame.to_image()
    w, h = image.size
    image = image.crop((w // 20, h // 20, w - w // 20, h - h // 20)).resize((int(w * 0.7), int(h * 0.7)))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=70)
    return buf.getvalue()


@pytest.fixture
def indexed(tmp_path: Path, settings: Settings, embedder) -> tuple[Library, Path]:
    folder = tmp_path / "media"
    folder.mkdir()
    clip = folder / "clip.mp4"
    make_video(clip, SHOTS, size=(480, 270))
    for label in ("goldfish", "tiger_cat", "bullet_train", "Afghan_hound", "African_crocodile"):  # the same classes
        shutil.copy(photo(label, 5), folder / f"{label}.jpg")
    settings.video_interval = 1.0  # inside the pan, a frame a second
    lib = Library(settings, embedder=embedder)
    report = lib.index([str(folder)])
    assert report.videos == 1 and len(report.added) == 5 and not report.rejected
    return lib, clip


@pytest.mark.parametrize("t", [0.5, 3.4, 6.8, 9.9, 12.4, 14.5])
def test_a_screenshot_finds_its_video_and_second_first(indexed: tuple[Library, Path], t: float) -> None:
    """Inside a still shot every frame is the same picture: the moment named is the shot's start (the first frame
    kept), so those screenshots are taken within 1 s of a cut; inside the pan, of any second."""
    lib, clip = indexed
    with lib:
        hit = lib.search(screenshot(clip, t), k=5).hits[0]
    assert hit.video == str(clip) and hit.t is not None and abs(hit.t - t) <= 1.0, (hit.video, hit.t)
    assert hit.copy  # the frame's copy check passes: the same picture, edited
    assert hit.as_dict()["video"] is True and hit.as_dict()["t"] == hit.t


def test_a_video_is_one_result_with_its_other_frames_listed(indexed: tuple[Library, Path]) -> None:
    lib, clip = indexed
    with lib:
        hits = lib.search(screenshot(clip, 13.0), k=20).hits
    videos = [h for h in hits if h.video is not None]
    assert len(videos) == 1 and videos[0].frames  # the pan's neighbouring frames, under the best one
    assert all(f.t != videos[0].t for f in videos[0].frames)
    assert len(hits) == len({h.id for h in hits})


def test_the_cli_prints_the_video_and_the_moment(indexed: tuple[Library, Path], tmp_path: Path,
                                                 settings: Settings) -> None:  # fmt: skip
    lib, clip = indexed
    lib.close()
    shot = tmp_path / "shot.jpg"
    shot.write_bytes(screenshot(clip, 3.4))
    home = ["--home", str(settings.home)]
    table = CliRunner().invoke(app, [*home, "search", str(shot), "-k", "3"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    first = next(line for line in table.output.splitlines() if line.lstrip("│ ").startswith("1 "))
    assert "clip.mp4 @ 00:03.0" in first, table.output
    assert "also at 00:" in table.output  # the video's other frames that matched, under its best one
    data = json.loads(CliRunner().invoke(app, [*home, "search", str(shot), "-k", "3", "--json"]).output)
    assert data["hits"][0]["video"] is True and data["hits"][0]["video_source"] == str(clip)


def test_clock() -> None:
    assert (clock(83.4), clock(0), clock(59.96), clock(3725.25)) == ("01:23.4", "00:00.0", "01:00.0", "1:02:05.2")


def test_a_frames_original_is_decoded_again_from_its_video(indexed: tuple[Library, Path]) -> None:
    """The page opens a hit large, and a region of it can be searched, from its original: a frame's is decoded again
    from its video, as long as the file is the one indexed."""
    lib, clip = indexed
    with lib:
        hit = lib.search(screenshot(clip, 12.4), k=1).hits[0]
        original = Image.open(io.BytesIO(lib.original_bytes(hit.id)))
        assert original.size == (480, 270) and original.format == "JPEG"
        region = lib.search(hit.id, k=3, box=(0, 0, 240, 270)).hits  # the left half of the frame
        assert region[0].video == str(clip)
        make_video(clip, SHOTS[:2], size=(480, 270))  # the file changed: its frames are no longer in it
        with pytest.raises(NotFoundError, match="no longer available"):
            lib.original_bytes(hit.id)
