"""Videos as sources: decode with PyAV under limits and choose the frames worth indexing.

A frame is kept at each scene change (a small grey picture of it differs from the previous frame's by more than
``CUT``), and at most one per ``interval`` seconds inside a long scene (a pan, a slow zoom), unless it is nearly the
same as the last frame kept. Only what a frame choice needs is decoded: non-reference frames are skipped (about half
of an H.264 stream), the codec runs its own threads, and each frame is compared as a 64 x 36 grey picture; only kept
frames are converted to RGB, at most ``KEPT_SIDE`` pixels on their long side, and turned upright as a player shows
them (a phone records a portrait video as landscape frames and a display matrix saying to turn them).

Hostile files never hang or exhaust memory: the stream's declared duration, resolution and every decoded frame's
size are checked before pixels are converted, and the decode stops at a wall-clock and a decoded-frame budget.
Every problem is a ``VideoError`` whose message says what is wrong in words.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from lookalike.config import Settings
from lookalike.moments import VIDEO_SUFFIXES, is_video

__all__ = ["VIDEO_SUFFIXES", "Frame", "Span", "VideoError", "VideoInfo", "VideoLimits", "file_sha256", "frames",
           "is_video", "probe"]  # fmt: skip

GREY = (64, 36)  # the picture frames are compared as: cheap, and blind to compression noise
CUT = 20.0  # mean absolute grey difference (0..255) between consecutive frames that is a scene change
NEAR = 6.0  # a frame closer than this to the last frame kept adds nothing
KEPT_SIDE = 1024  # kept frames are reduced to this long side: more than the model, thumbnail and copy check need
LUMA_FORMATS = frozenset(["yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"])
IMAGE_FORMATS = ("_pipe", "image2")  # FFmpeg demuxers of single pictures: a photo under a video's name
# The default cap on frames kept per video: one per KEPT_EVERY seconds of the longest video allowed (14,400 for the
# default 4 h). A video keeps a frame per cut and, in a scene that moves, one per LOOKALIKE_VIDEO_INTERVAL (2 s), and
# films cut every 3 to 6 s on average: a 4 h film keeps about one frame every 2 s, 7,200 (a fixed 2,000 rejected it).
# Scaled with the duration limit, whoever allows longer videos allows their frames too; what keeps more than a frame
# a second over the whole allowed length (a strobe, noise, a slideshow of a picture per frame) costs more to embed than
# it can be worth, and is still rejected (and decoding stays bounded by LOOKALIKE_VIDEO_MAX_DECODED and
# LOOKALIKE_VIDEO_TIMEOUT).
KEPT_EVERY = 1.0
SEEK_SLACK = 10.0  # seconds of decoding a range may spend before its start (from the key frame before it)


class VideoError(ValueError):
    """The file is not a usable video; ``str(exc)`` says why in words."""


@dataclass(frozen=True)
class VideoLimits:
    """What a video may cost (``Settings.video_*``)."""

    max_seconds: float = 4 * 3600.0
    max_frames: int = math.ceil(4 * 3600.0 / KEPT_EVERY)  # frames kept
    max_pixels: int = 7680 * 4320
    max_decoded: int = 2_000_000  # frames decoded (an absurd frame rate or count)
    timeout: float = 1800.0  # wall-clock seconds for one video
    interval: float = 2.0  # at most one kept frame per this many seconds inside one scene

    @classmethod
    def from_settings(cls, s: Settings) -> VideoLimits:
        kept = s.video_max_frames or math.ceil(s.video_max_seconds / KEPT_EVERY)
        return cls(s.video_max_seconds, kept, s.video_max_pixels, s.video_max_decoded, s.video_timeout,
                   s.video_interval)  # fmt: skip


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    duration: float  # seconds, as the container declares it (0: unknown)
    codec: str
    format: str


@dataclass(frozen=True)
class Frame:
    t: float  # seconds from the video's start
    image: Image.Image  # RGB, upright as a player shows it, at most KEPT_SIDE on its long side
    width: int = 0  # its size as shown, at full resolution
    height: int = 0


def file_sha256(path: str | Path) -> str:
    """The sha256 of a video file, read in pieces (a video is never held in memory); only a regular file is read
    (opened non-blocking: a FIFO under a video's name is refused, not waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as exc:
        raise VideoError(f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VideoError("not a regular file")
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _open(path: str | Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), "r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise VideoError(f"not a readable video: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _info(container: av.container.InputContainer, limits: VideoLimits) -> VideoInfo:
    """The first video stream's facts, refused before any pixel is decoded when they exceed the limits."""
    fmt = container.format.name
    if any(part in fmt for part in IMAGE_FORMATS):
        raise VideoError(f"not a video: a single picture ({fmt}) under a video's name")
    if not container.streams.video:
        raise VideoError("no video stream")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    width, height = int(ctx.width or 0), int(ctx.height or 0)
    if width <= 0 or height <= 0:
        raise VideoError(f"invalid frame size {width}x{height}")
    if width * height > limits.max_pixels:
        raise VideoError(f"frames too large: {width}x{height} exceeds LOOKALIKE_VIDEO_MAX_PIXELS={limits.max_pixels}")
    duration = 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    if duration > limits.max_seconds:
        raise VideoError(f"too long: {duration:.0f} s exceeds LOOKALIKE_VIDEO_MAX_SECONDS={limits.max_seconds:g}")
    return VideoInfo(width, height, max(0.0, duration), ctx.name, fmt)


def probe(path: str | Path, limits: VideoLimits | None = None) -> VideoInfo:
    """A video's size, duration and codec, checked against the limits; nothing decoded."""
    with _open(path) as container:
        return _info(container, limits or VideoLimits())


def _grey(frame: av.VideoFrame) -> np.ndarray:
    """The frame as a GREY grid of brightness: sampled straight from the luma plane of YUV frames (no conversion
    of the whole frame: the most frequent step of all), else by FFmpeg's scaler."""
    if frame.format.name in LUMA_FORMATS:
        plane = frame.planes[0]
        luma = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
        ys = np.linspace(0, frame.height - 1, 2 * GREY[1]).astype(np.intp)
        xs = np.linspace(0, frame.width - 1, 2 * GREY[0]).astype(np.intp)
        grid = luma[np.ix_(ys, xs)].astype(np.float32)
        return grid.reshape(GREY[1], 2, GREY[0], 2).mean(axis=(1, 3))
    return frame.reformat(width=GREY[0], height=GREY[1], format="gray").to_ndarray().astype(np.float32)


TURNS = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}


def _turns(frame: av.VideoFrame) -> int:
    """Quarter turns counterclockwise that show the frame as a player does: its display matrix's rotation (PyAV's
    ``VideoFrame.rotation``, counterclockwise degrees, 0 without a matrix), to the nearest quarter."""
    rotation = float(frame.rotation or 0)
    return round(rotation / 90) % 4 if math.isfinite(rotation) else 0


def _rgb(frame: av.VideoFrame) -> Image.Image:
    """The frame in RGB, at most KEPT_SIDE on its long side, upright."""
    scale = min(1.0, KEPT_SIDE / max(frame.width, frame.height))
    w, h = max(1, round(frame.width * scale)), max(1, round(frame.height * scale))
    image = frame.reformat(width=w, height=h, format="rgb24").to_image()
    turns = _turns(frame)
    return image.transpose(TURNS[turns]) if turns else image


def _kept(t: float, frame: av.VideoFrame) -> Frame:
    width, height = (frame.height, frame.width) if _turns(frame) % 2 else (frame.width, frame.height)
    return Frame(round(t, 3), _rgb(frame), width, height)


@dataclass(frozen=True)
class Span:
    """A time range ``[start, end)`` of a video in seconds (``end`` None: to its end): one job task's share of a long
    video (lookalike.jobs), decoded by ``frames(path, limits, span)``."""

    start: float
    end: float | None = None

    def holds(self, t: float) -> bool:
        """Whether a frame at second ``t`` (to the millisecond, as frames are named) is this range's: every frame
        of a video is in exactly one of ranges that meet end to start."""
        return self.start <= t and (self.end is None or t < self.end)


def frames(path: str | Path, limits: VideoLimits | None = None, span: Span | None = None) -> Iterator[Frame]:
    """The frames worth indexing, in time order (see the module's docstring for the rule).

    With ``span``, only that range's: the decode seeks to the key frame before its start, drops the frames before
    it, and stops at its end. The first frame of a range is kept as if it followed a cut (the range does not know
    the frames kept before it), then the rule runs as in a whole pass. So the union of ranges that meet end to start
    keeps every cut a whole pass keeps (cuts compare consecutive frames, which a range decodes as a whole pass does),
    each frame at most once (a frame is in one range only, by its timestamp), plus one frame at each range's start;
    inside a long scene the frames one per ``interval`` restart from that start, so they may sit up to an interval
    from a whole pass's. Limits per range: the wall-clock ``timeout`` is each range's (one worker's decode run);
    ``max_decoded`` is shared by the ranges in proportion to their length (the video's frames, decoded once in all);
    ``max_frames`` is checked here against the range and, summed, when the video is complete
    (lookalike.jobs.worker)."""
    limits = limits or VideoLimits()
    deadline = time.monotonic() + limits.timeout
    with _open(path) as container:
        info = _info(container, limits)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        base = stream.time_base
        timed = stream.start_time is not None and base is not None
        if timed:  # a raw stream without timestamps: its frames are counted, none skipped
            stream.codec_context.skip_frame = "NONREF"
        start = float(stream.start_time * base) if stream.start_time is not None and base is not None else None
        step = _step(stream)
        span = span or Span(0.0)
        budget = _decode_budget(limits, info, span)
        if span.start > 0:
            if base is None or stream.start_time is None or not info.duration:
                raise VideoError("a range of a video without timestamps or duration cannot be sought")
            container.seek(int((span.start + (start or 0.0)) / base), stream=stream, backward=True)
        previous: np.ndarray | None = None
        kept: np.ndarray | None = None
        kept_t, t, decoded, count, ended = -math.inf, -step, 0, 0, False
        try:
            for frame in container.decode(stream):
                decoded += 1
                if decoded > budget:
                    raise VideoError(f"more than LOOKALIKE_VIDEO_MAX_DECODED={limits.max_decoded} frames")
                if time.monotonic() > deadline:
                    raise VideoError(f"decoding took longer than LOOKALIKE_VIDEO_TIMEOUT={limits.timeout:g} s")
                if frame.width * frame.height > limits.max_pixels or frame.width <= 0 or frame.height <= 0:
                    raise VideoError(f"a frame of {frame.width}x{frame.height} exceeds LOOKALIKE_VIDEO_MAX_PIXELS"
                                     f"={limits.max_pixels}")  # fmt: skip
                t = _time(frame, start, t, step)
                if decoded == 1 and span.start > 0:
                    _check_landed(t, span, step)
                if round(t, 3) < span.start:
                    continue  # from the key frame before the range to its start
                if not span.holds(round(t, 3)):
                    ended = True
                    break
                if t > limits.max_seconds:
                    raise VideoError(f"too long: frames past LOOKALIKE_VIDEO_MAX_SECONDS={limits.max_seconds:g}")
                grey = _grey(frame)
                cut = previous is None or float(np.abs(grey - previous).mean()) > CUT
                previous = grey
                due = cut or t - kept_t >= limits.interval
                if not due or (kept is not None and float(np.abs(grey - kept).mean()) < NEAR):
                    continue
                count += 1
                if count > limits.max_frames:
                    raise VideoError(f"more than LOOKALIKE_VIDEO_MAX_FRAMES={limits.max_frames} frames to keep")
                kept, kept_t = grey, t
                yield _kept(t, frame)
        except av.error.FFmpegError as exc:
            raise VideoError(f"undecodable at {max(t, 0.0):.1f} s: {_reason(exc)}") from None
        if decoded == 0:
            raise VideoError("no decodable frame (an empty or truncated stream)")
        if not ended and info.duration and t < info.duration * 0.95 - 1.0:
            raise VideoError(f"truncated: its frames end at {t:.1f} s of the {info.duration:.1f} s it declares")


def _step(stream: av.video.stream.VideoStream) -> float:
    """A frame's time at the stream's rate: for frames without a timestamp."""
    rate = float(stream.guessed_rate or stream.average_rate or 25)
    return 1.0 / rate if math.isfinite(rate) and rate > 0 else 0.04


def _decode_budget(limits: VideoLimits, info: VideoInfo, span: Span) -> int:
    """The frames a range may decode: its share of the video's ``max_decoded`` by length, counting ``SEEK_SLACK``
    seconds more for the frames from the key frame before its start (all of it for a whole pass, or a video of
    unknown length)."""
    if not info.duration or (span.start <= 0 and span.end is None):
        return limits.max_decoded
    end = info.duration if span.end is None else min(span.end, info.duration)
    share = min(1.0, (max(0.0, end - span.start) + SEEK_SLACK) / info.duration)
    return max(1, math.ceil(limits.max_decoded * share))


def _check_landed(t: float, span: Span, step: float) -> None:
    """The seek must land at or before the range's start; a file whose index sends it further would lose frames."""
    if t > span.start + 2 * step:
        raise VideoError(f"seeking to {span.start:.1f} s landed at {t:.1f} s (a broken index)")


def frame_at(path: str | Path, t: float, limits: VideoLimits | None = None) -> Image.Image:
    """The frame shown at second ``t`` (the first one at or after it), as ``frames`` reduces a kept one: a frame hit's
    original. Seeks to the key frame before ``t`` and decodes from there, under the same limits."""
    limits = limits or VideoLimits()
    deadline = time.monotonic() + limits.timeout
    with _open(path) as container:
        _info(container, limits)
        stream = container.streams.video[0]
        base = stream.time_base
        start = float(stream.start_time * base) if stream.start_time is not None and base is not None else 0.0
        try:
            if base is not None and stream.start_time is not None:
                container.seek(int((t + start) / base), stream=stream, backward=True)
            rate = float(stream.guessed_rate or stream.average_rate or 25)
            step, last = 1.0 / rate, -math.inf
            for decoded, frame in enumerate(container.decode(stream), 1):
                if decoded > limits.max_decoded or time.monotonic() > deadline:
                    raise VideoError("the frame is too far into the video to decode within the limits")
                last = _time(frame, start, last, step)
                if last >= t - step / 2:
                    return _rgb(frame)
        except av.error.FFmpegError as exc:
            raise VideoError(f"undecodable near {t:.1f} s: {_reason(exc)}") from None
    raise VideoError(f"no frame at {t:.1f} s")


def _time(frame: av.VideoFrame, start: float | None, last: float, step: float) -> float:
    """Seconds from the stream's start; frames without a timestamp, or going back in time (a broken variable frame
    rate), are put one frame after the last."""
    if frame.time is None:
        return last + step
    t = float(frame.time) - (start or 0.0)
    return t if t > last else last + step
