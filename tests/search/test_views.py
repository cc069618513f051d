"""Regional views of the copy descriptor: a photo shown small inside another photo (a picture in a scene, a cover on
a table) is too little of the query for the whole photo's descriptor to find it, but the query's centre view reaches
it, and geometry confirms it. Real photos, real model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.library import Library
from lookalike.models import copy_descriptor
from tests.conftest import MODELS, copy_photos, photo

CLASSES = ("goldfish", "tiger_cat", "pizza", "castle", "flamingo")


def in_a_scene(subject: Path, scene: Path, share: float = 0.5) -> Image.Image:
    """``subject`` pasted, ``share`` of the width, in the middle of ``scene`` (640 x 480)."""
    picture = Image.open(subject).convert("RGB")
    out = Image.open(scene).convert("RGB").resize((640, 480))
    small = picture.resize((int(640 * share), int(640 * share * picture.height / picture.width)))
    out.paste(small, ((640 - small.width) // 2, (480 - small.height) // 2))
    return out


@pytest.fixture(scope="module")
def model() -> copy_descriptor.CopyDescriptor:
    return copy_descriptor.load(MODELS, 160)


def test_the_query_rows_are_the_whole_photo_its_views_its_centre_and_the_centre_views(model) -> None:
    image = Image.open(photo("castle", 2)).convert("RGB")
    rows = model.describe_views(image)
    per_pass = 1 + len(copy_descriptor.VIEWS)
    # each row once (two views of a small feature map can round to the same cells)
    assert rows.shape[0] <= 2 * per_pass and rows.shape[1] == copy_descriptor.DIM
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert float(rows[0] @ model.describe(image)) > 0.9999  # row 0: the whole photo, as stored
    centre = copy_descriptor.centre_crop(image)
    assert centre.size == (round(0.7 * image.width) - round(0.3 * image.width),
                           round(0.7 * image.height) - round(0.3 * image.height))  # fmt: skip
    query_centre = model.embed(model.prepare(centre, copy_descriptor.QUERY_CENTRE_SIDE))
    at = int(np.argmax(rows @ query_centre))
    assert float(rows[at] @ query_centre) > 0.9999 and 1 < at <= per_pass  # after the whole photo's pooled views
    whole, stored_centre = model.describe_stored(image)
    assert float(whole @ rows[0]) > 0.9999
    # the stored centre is the same pixels at a smaller side: near the query's centre, far nearer than the whole is
    assert float(stored_centre @ rows[at]) > 0.7
    assert float(stored_centre @ rows[at]) > float(stored_centre @ whole) + 0.1


def test_a_centre_of_a_tiny_photo_is_still_a_picture(model) -> None:
    tiny = Image.new("RGB", (2, 1), (200, 30, 30))
    assert copy_descriptor.centre_crop(tiny).size == (1, 1)
    whole, centre = model.describe_stored(tiny)
    assert np.isfinite(whole).all() and np.isfinite(centre).all()


def test_a_photo_small_in_a_scene_reaches_its_original_through_the_views(tmp_path, embedder, monkeypatch) -> None:
    from lookalike.config import Settings

    root = copy_photos(tmp_path / "photos", CLASSES, 5)
    lib = Library(Settings(home=tmp_path / "lib", models_dir=MODELS, allow_download=False), embedder=embedder)
    try:
        lib.index([str(root)])
        original = photo("flamingo", 0)
        buf = io.BytesIO()
        in_a_scene(original, photo("pizza", 7)).save(buf, "JPEG", quality=90)  # the scene is not in the library
        query = buf.getvalue()

        def judged() -> list[str]:
            return [Path(h.sources[0]).name for h in lib.search(query, k=10).hits if h.copy or h.same_object]

        assert original.name in judged()
        found = next(h for h in lib.search(query, k=10).hits if Path(h.sources[0]).name == original.name)
        # its whole descriptor is far (a quarter of the scene): shown as the same object, never as an edited copy
        assert found.same_object and not found.copy and found.verdict.cosine < 0.30
        monkeypatch.setattr(lib.searcher, "settings", lib.settings.model_copy(update={"copy_views": False}))
        assert original.name not in judged()  # the whole photo's descriptor alone does not reach it
    finally:
        lib.close()
