"""How a video's frame is named: its video's source and its second (``clip.mp4#t=83.400``), and a second as a
clock (``01:23.4``). Indexing writes these names, search reads them back; nothing here decodes a video."""

from __future__ import annotations

import hashlib
from pathlib import Path

VIDEO_SUFFIXES = frozenset([".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"])
MARK = "#t="
FRAME_FORMAT = "VIDEO"  # the catalog's format of an image that is a video's frame


def is_video(source: str) -> bool:
    """Whether a source is indexed as a video (by its name: a video is read as a stream, never into memory)."""
    return Path(source.split("?", 1)[0]).suffix.lower() in VIDEO_SUFFIXES


def frame_source(video: str, t: float) -> str:
    """A frame's source: its video's, with its second to the millisecond."""
    return f"{video}{MARK}{t:.3f}"


def frame_key(video_sha256: str, t: float) -> str:
    """The sha256 a video's frame is stored under: of its video's bytes and its second (so the same video at two paths
    shares its frames, and a re-run finds the frames it wrote before)."""
    return hashlib.sha256(f"lookalike video frame {video_sha256} {t:.3f}".encode()).hexdigest()


def moment(source: str) -> tuple[str, float] | None:
    """(video, second) of a frame's source; None for any other source."""
    video, sep, second = source.rpartition(MARK)
    if not sep or not is_video(video):
        return None
    try:
        return video, float(second)
    except ValueError:
        return None


def clock(t: float) -> str:
    """Seconds as minutes:seconds to the tenth (``83.4`` -> ``01:23.4``), with hours when there are any."""
    tenths = round(t * 10)
    minutes, seconds = divmod(tenths / 10, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{minutes:02d}:{seconds:04.1f}"
    return f"{hours}:{text}" if hours else text
