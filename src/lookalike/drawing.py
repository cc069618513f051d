"""Draw detection boxes on a photo, for `lookalike detect --draw` and for looking at results."""

from __future__ import annotations

from PIL import ImageDraw, ImageFont

from lookalike.imaging import decode
from lookalike.models.detectors import Detection

PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


def draw_boxes(data: bytes, detections: list[Detection], max_pixels: int):
    """The photo at full size with each box and its label and score drawn on it."""
    image = decode(data, max_pixels).image.copy()
    pen = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 300))
    size = max(12, round(max(image.size) / 40))
    font = ImageFont.load_default(size=size)  # Pillow without FreeType: a bitmap font, which has no .size
    for i, det in enumerate(detections):
        colour = PALETTE[i % len(PALETTE)]
        pen.rectangle(det.box, outline=colour, width=width)
        text = f"{det.label}? {det.score:.0%} sure"  # the detector's guess, said as one (as on the page)
        x, y = det.box[0], max(0, det.box[1] - size - 4)
        left, top, right, bottom = pen.textbbox((x, y), text, font=font)
        pen.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=colour)
        pen.text((x, y), text, fill=(255, 255, 255), font=font)
    return image
