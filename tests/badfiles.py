"""Broken inputs made from real photos, for the bad-input tests."""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image

from tests.conftest import photo


def real_jpeg() -> bytes:
    return photo("goldfish", 0).read_bytes()


def salt(folder: Path) -> dict[str, str]:
    """Write one of each kind of bad file into ``folder``; returns file name -> expected reason fragment."""
    folder.mkdir(parents=True, exist_ok=True)
    data = real_jpeg()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "corrupt.jpg").write_bytes(data[:20] + os.urandom(4000))
    (folder / "notes.jpg").write_text("this is a text file pretending to be a photo\n" * 20)
    (folder / "bomb.png").write_bytes(bomb_png())
    return {
        "empty.jpg": "empty file",
        "truncated.jpg": "truncated",
        "corrupt.jpg": "",  # Pillow's wording varies by where the damage is; any reason will do
        "notes.jpg": "not an image",
        "bomb.png": "too many pixels",
    }


def bomb_png(side: int = 20_000) -> bytes:
    """A tiny PNG file that claims side x side pixels (a decompression bomb)."""
    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, format="PNG", optimize=True)
    return out.getvalue()
