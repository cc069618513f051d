"""The edits benchmarks make copies with (bench/copies.py): each is repeatable, so two runs measure the same queries,
and each really changes the photo the way its name says."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike.copyedits import EDITS, HARDER_EDITS, edited
from tests.conftest import photo


@pytest.fixture(scope="module")
def original() -> Image.Image:
    return Image.open(photo("castle", 0)).convert("RGB")


@pytest.mark.parametrize("edit", sorted(HARDER_EDITS))
def test_a_harder_edit_is_repeatable_and_changes_the_photo(original: Image.Image, edit: str) -> None:
    once, again = edited(original, edit), edited(original, edit)
    assert once.mode == "RGB" and once.tobytes() == again.tobytes()
    assert once.size != original.size or not np.array_equal(np.asarray(once), np.asarray(original))


def test_the_harder_edits_are_new_kinds(original: Image.Image) -> None:
    assert not set(EDITS) & set(HARDER_EDITS)
    w, h = original.size
    turned = edited(original, "rotated 45°")
    assert turned.width > w and turned.height > h and turned.getpixel((0, 0)) == (0, 0, 0)  # black corners
    boxed = edited(original, "letterboxed 16:9")
    assert abs(boxed.width / boxed.height - 16 / 9) < 0.01 and boxed.height >= h
    assert edited(original, "corner crop (20 % of the area)").size == (int(0.45 * w), int(0.45 * h))
    assert edited(original, "tiny (64 px wide)").width == 64
