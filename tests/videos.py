"""Test videos made from real shared photos with PyAV: a slideshow with cuts, a slow pan and a chosen codec and
bitrate, so tests know exactly at which second each photo is on screen."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Shot:
    """One photo on screen for ``seconds``; ``pan``: the view slides across it (a slow camera move); ``fps``: its own
    frame rate, whatever the stream declares (a variable frame rate, as phones and screen recorders write)."""

    photo: Path
    seconds: float
    pan: bool = False
    fps: float | None = None


@lru_cache(maxsize=16)  # a long slideshow shows the same few photos again and again
def _fit(photo: Path, width: int, height: int, pan: bool) -> Image.Image:
    """The photo covering the frame (cropped to its aspect); a panned one 1.5x wider, to slide across."""
    img = Image.open(photo).convert("RGB")
    w = int(width * 1.5) if pan else width
    scale = max(w / img.width, height / img.height)
    img = img.resize((max(w, round(img.width * scale)), max(height, round(img.height * scale))), Image.BILINEAR)
    left, top = (img.width - w) // 2, (img.height - height) // 2
    return img.crop((left, top, left + w, top + height))


def make_video(path: Path, shots: Sequence[Shot], size: tuple[int, int] = (320, 180), fps: int | Fraction = 10,
               codec: str = "libx264", bitrate: int = 400_000, vfr: bool = False,
               rotate: int = 0) -> list[tuple[float, float]]:  # fmt: skip
    """Write a slideshow; returns each shot's (start, end) second. ``vfr``: a variable frame rate (frames last
    half and one and a half frame times in turn), timestamps in milliseconds. ``rotate``: as a phone records, the
    pictures are stored turned clockwise by that many degrees (90, 180, 270) and the stream's display matrix says to
    turn them back, so that a player shows ``size`` upright."""
    width, height = size
    times = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = (height, width) if rotate % 180 == 90 else (width, height)
        stream.pix_fmt = "yuv420p"
        if rotate:
            stream.set_display_rotation(rotate)
        stream.bit_rate = bitrate
        stream.time_base = Fraction(1, 1000)
        if any(shot.fps for shot in shots):  # the encoder's clock in ms too, or it rounds shots' own rates to ``fps``
            stream.codec_context.time_base = Fraction(1, 1000)
        ms, n = 0.0, 0
        for shot in shots:
            img = np.asarray(_fit(shot.photo, width, height, shot.pan))
            rate = shot.fps or fps
            frames = round(shot.seconds * rate)
            begin = ms
            for i in range(frames):
                x = round((img.shape[1] - width) * i / max(1, frames - 1)) if shot.pan else 0
                view = np.rot90(img[:, x : x + width], k=-(rotate // 90))  # stored turned clockwise
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(view), format="rgb24")
                frame.pts = round(ms)
                frame.time_base = Fraction(1, 1000)
                ms += 1000 / rate * ((0.5 if n % 2 else 1.5) if vfr else 1.0)
                n += 1
                for packet in stream.encode(frame):
                    out.mux(packet)
            times.append((begin / 1000, ms / 1000))
        for packet in stream.encode():
            out.mux(packet)
    return times
