"""Edited copies of a photo, the way photos get re-posted: for measuring copy detection (bench/copies.py, tests).

Each edit is deterministic (fixed seed), so a benchmark run is repeatable.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _text(image: Image.Image, text: str = "SALE -50% lookalike.example", rows: int = 2) -> Image.Image:
    out = image.copy()
    draw = ImageDraw.Draw(out)
    size = max(12, image.height // 10)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    for r in range(rows):
        y = int(image.height * (0.12 + 0.62 * r))
        draw.text((int(image.width * 0.05), y), text, fill=(255, 255, 255), font=font, stroke_width=2,
                  stroke_fill=(0, 0, 0))  # fmt: skip
    return out


def _crop(image: Image.Image, fx: float, fy: float, fw: float, fh: float) -> Image.Image:
    w, h = image.size
    return image.crop((int(w * fx), int(h * fy), int(w * (fx + fw)), int(h * (fy + fh))))


def _screenshot(image: Image.Image) -> Image.Image:
    """The photo shown at 60 % of a phone screenshot: status bar, app bar, caption and buttons around it."""
    w = max(360, image.width)
    photo = image.resize((int(w * 0.9), int(image.height * w * 0.9 / image.width)))
    canvas = Image.new("RGB", (w, int(photo.height / 0.6)), (245, 245, 247))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, w, int(canvas.height * 0.05)), fill=(30, 30, 30))
    draw.rectangle((0, int(canvas.height * 0.05), w, int(canvas.height * 0.12)), fill=(59, 89, 152))
    top = int(canvas.height * 0.15)
    canvas.paste(photo, ((w - photo.width) // 2, top))
    font = ImageFont.load_default()
    draw.text(
        (int(w * 0.05), top + photo.height + 10), "Look what I found! #photo #share", fill=(20, 20, 20), font=font
    )
    for i in range(3):
        x = int(w * (0.1 + 0.3 * i))
        draw.ellipse((x, canvas.height - 60, x + 40, canvas.height - 20), fill=(200, 200, 210))
    return _jpeg(canvas, 80)


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "resized 30 % + JPEG 40": lambda im: _jpeg(
        im.resize((max(16, int(im.width * 0.3)), max(16, int(im.height * 0.3)))), 40
    ),
    "in a screenshot frame": _screenshot,
    "corner crop (35 % of the area)": lambda im: _crop(im, 0.0, 0.0, 0.59, 0.59),
    "crop + text + JPEG 50": lambda im: _jpeg(_text(_crop(im, 0.1, 0.1, 0.75, 0.75)), 50),
    "grayscale": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "rotated 90°": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "mirrored": ImageOps.mirror,
    "colour shift": lambda im: ImageEnhance.Brightness(ImageEnhance.Color(im).enhance(1.8)).enhance(1.15),
    "centre crop (50 % of the area)": lambda im: _crop(im, 0.146, 0.146, 0.707, 0.707),
    "text overlay": lambda im: _jpeg(_text(im), 85),
}


def _rotated(degrees: float) -> Callable[[Image.Image], Image.Image]:
    """Turned by an angle that is not a quarter turn: the canvas grows and its corners are black."""
    return lambda im: im.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True)


def _noisy(image: Image.Image, sigma: float = 15.0) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) + np.random.default_rng(0).normal(0.0, sigma, (image.height,
                                                                                               image.width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _letterboxed(image: Image.Image) -> Image.Image:
    """Shown in a 16:9 frame with black bars, as a video or a slide would show it."""
    width = max(image.width, round(image.height * 16 / 9))
    height = max(image.height, round(width * 9 / 16))
    canvas = Image.new("RGB", (width, height))
    canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
    return canvas


def _tilted(image: Image.Image) -> Image.Image:
    """Seen slightly from one side (a photo of a screen or a print): a mild perspective."""
    w, h = image.size
    seen = [(0.08 * w, 0.05 * h), (0.95 * w, 0.0), (w, h), (0.02 * w, 0.93 * h)]  # where the corners land
    rows = []
    for (x, y), (u, v) in zip([(0, 0), (w, 0), (w, h), (0, h)], seen, strict=True):
        rows += [[u, v, 1, 0, 0, 0, -x * u, -x * v], [0, 0, 0, u, v, 1, -y * u, -y * v]]
    corners = np.array([(0, 0), (w, 0), (w, h), (0, h)], dtype=np.float64).reshape(8)
    coefficients = np.linalg.solve(np.array(rows, dtype=np.float64), corners)
    return image.transform((w, h), Image.Transform.PERSPECTIVE, coefficients.tolist(), Image.Resampling.BILINEAR)


# Edits the standard ten do not cover, for measuring where copy detection stops (bench/copies.py --edits harder):
# other turns and flips, blur, noise, contrast, a thumbnail-sized copy, a stretch, a frame, a perspective, a smaller
# crop, a tint, and combinations
HARDER_EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "rotated 180°": lambda im: im.transpose(Image.Transpose.ROTATE_180),
    "rotated 10°": _rotated(10),
    "rotated 30°": _rotated(30),
    "rotated 45°": _rotated(45),
    "flipped upside down": ImageOps.flip,
    "blurred (radius 2)": lambda im: im.filter(ImageFilter.GaussianBlur(2)),
    "noise (sigma 15)": _noisy,
    "low contrast (0.5)": lambda im: ImageEnhance.Contrast(im).enhance(0.5),
    "tiny (64 px wide)": lambda im: im.resize((64, max(1, round(64 * im.height / im.width)))),
    "stretched 1.5x wide": lambda im: im.resize((round(im.width * 1.5), im.height)),
    "letterboxed 16:9": _letterboxed,
    "perspective tilt": _tilted,
    "corner crop (20 % of the area)": lambda im: _crop(im, 0.0, 0.0, 0.45, 0.45),
    "sepia": lambda im: ImageOps.colorize(ImageOps.grayscale(im), "#2b1a0e", "#f5e6c8"),
    "crop + rotate 10° + JPEG 60": lambda im: _jpeg(_rotated(10)(_crop(im, 0.1, 0.05, 0.8, 0.8)), 60),
    "mirror + colour + text": lambda im: _text(ImageEnhance.Color(ImageOps.mirror(im)).enhance(1.6), rows=1),
}


def edited(image: Image.Image, edit: str) -> Image.Image:
    return (EDITS.get(edit) or HARDER_EDITS[edit])(image.convert("RGB"))
