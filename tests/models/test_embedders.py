"""Conformance suite every registered embedder passes when its runtime is installed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike.config import Settings
from lookalike.imaging import decode
from lookalike.models.registry import REGISTRY, UnknownModelError, get_spec
from tests.conftest import MODELS, photo

READY = [
    name for name, spec in REGISTRY.items() if spec.status(Settings(models_dir=MODELS, allow_download=False)) == "ready"
]


@pytest.fixture(scope="module", params=READY)
def model(request):
    return get_spec(request.param).load(Settings(models_dir=MODELS, allow_download=False, model=request.param))


def pixels(model, label: str, i: int = 0) -> np.ndarray:
    return model.prepare(decode(photo(label, i).read_bytes(), 10**8).image)


def test_default_and_second_model_are_ready() -> None:
    assert {"mobilenet_v2", "mobilenet_v1"} <= set(READY)


def test_shapes_and_unit_length(model) -> None:
    spec = get_spec(model.name)
    batch = np.stack([pixels(model, "goldfish", i) for i in range(3)])
    assert batch.shape == (3, model.input_size, model.input_size, 3) and batch.dtype == np.uint8
    vecs = model.embed(batch)
    assert vecs.shape == (3, spec.dim) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_deterministic_and_batch_independent(model) -> None:
    a = np.stack([pixels(model, "goldfish"), pixels(model, "tiger_cat")])
    assert np.allclose(model.embed(a), model.embed(a))
    assert np.allclose(model.embed(a)[1], model.embed(a[1:])[0])


def test_same_class_is_closer_than_other_class(model) -> None:
    fish = model.embed(np.stack([pixels(model, "goldfish", i) for i in range(4)]))
    train = model.embed(np.stack([pixels(model, "bullet_train", i) for i in range(4)]))
    within = (fish @ fish.T)[np.triu_indices(4, 1)].mean()
    across = (fish @ train.T).mean()
    assert within > across + 0.1


def test_prepare_keeps_aspect_with_centre_crop(model) -> None:
    wide = Image.new("RGB", (400, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 140, 100))  # blue only at the far left, outside the centre square
    px = model.prepare(wide)
    assert px.shape == (model.input_size, model.input_size, 3)
    assert (px[:, :, 0] > 200).all()


def test_wrong_input_shape_is_refused(model) -> None:
    with pytest.raises(ValueError):
        model.embed(np.zeros((1, 10, 10, 3), dtype=np.uint8))


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(UnknownModelError, match="mobilenet_v2"):
        get_spec("resnet9000")


def test_unavailable_model_says_what_it_needs() -> None:
    spec = REGISTRY["mobilenet_v2_fp32"]
    status = spec.status(Settings(models_dir=MODELS))
    assert status == "ready" or status.startswith("needs package")
