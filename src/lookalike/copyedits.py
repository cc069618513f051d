"""Edited copies of a photo, the way photos get re-posted: for measuring copy detection (bench/copies.py, tests).

Each edit is deterministic (fixed seed), so a benchmark run is repeatable.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps


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


def edited(image: Image.Image, edit: str) -> Image.Image:
    return EDITS[edit](image.convert("RGB"))
