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


def test_the_views_come_from_one_pass_and_row_0_is_the_whole_photo(model) -> None:
    image = Image.open(photo("castle", 2)).convert("RGB")
    views = model.describe_views(image)
    assert views.shape == (1 + len(copy_descriptor.VIEWS), copy_descriptor.DIM)
    assert np.allclose(np.linalg.norm(views, axis=1), 1.0, atol=1e-5)
    assert float(views[0] @ model.describe(image)) > 0.9999
    whole, part = model.describe_stored(image)
    assert float(whole @ views[0]) > 0.9999 and part is not None
    assert float(part @ views[1 + copy_descriptor.PART]) > 0.9999
    # a view describes its part of the photo: the centre view is nearer the centre's own crop than the whole is
    w, h = image.size
    centre = model.describe(image.crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4)))
    assert float(centre @ part) > float(centre @ whole) + 0.1


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
