"""Retrieval-quality transforms on real photos: whitening, query expansion, flip TTA, GeM, fusion."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike.config import Settings
from lookalike.imaging import decode
from lookalike.library import Library
from lookalike.models.registry import get_spec
from lookalike.search.rerank import expand_query, k_reciprocal_order
from lookalike.search.whitening import Whitening
from tests.conftest import CLASSES, MODELS, copy_photos, photo


def load(name: str):
    return get_spec(name).load(Settings(models_dir=MODELS, allow_download=False, model=name))


@pytest.fixture(scope="module")
def real_vectors(embedder) -> np.ndarray:
    """Embeddings of 36 real photos (12 classes x 3)."""
    labels = ("goldfish", "tiger_cat", "bullet_train", "pizza", "castle", "flamingo", "ambulance", "banana",
              "orange", "junco", "lion", "typewriter_keyboard")  # fmt: skip
    px = [embedder.prepare(decode(photo(c, i).read_bytes(), 10**9, 256).image) for c in labels for i in range(3)]
    return embedder.embed(np.stack(px))


def test_whitening_gives_unit_vectors_of_the_chosen_dimension(real_vectors) -> None:
    w = Whitening.fit([real_vectors], dim=16)
    out = w.apply(real_vectors)
    assert out.shape == (36, 16) and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert w.fitted_on == 36


def test_whitening_never_keeps_more_directions_than_the_photos_span(real_vectors) -> None:
    w = Whitening.fit([real_vectors[:10]], dim=256)
    assert w.dim == 9 and np.isfinite(w.apply(real_vectors)).all()


def test_whitening_streamed_in_chunks_equals_one_pass(real_vectors) -> None:
    one = Whitening.fit([real_vectors], dim=12)
    chunked = Whitening.fit([real_vectors[:10], real_vectors[10:25], real_vectors[25:]], dim=12)
    a, b = one.apply(real_vectors), chunked.apply(real_vectors)
    assert np.allclose(np.abs((a * b).sum(axis=1)), 1.0, atol=1e-4)  # same directions (up to sign)


def test_whitening_round_trips_through_the_catalog_form_and_old_files(real_vectors, tmp_path) -> None:
    w = Whitening.fit([real_vectors], dim=16)
    back = Whitening.from_bytes(w.to_bytes())
    assert back.fitted_on == 36 and np.array_equal(back.apply(real_vectors), w.apply(real_vectors))
    w.save(tmp_path / "w.npz")  # the file a library directory of an earlier version holds
    assert np.array_equal(Whitening.load(tmp_path / "w.npz").apply(real_vectors), w.apply(real_vectors))
    assert Whitening.load(tmp_path / "missing.npz") is None


def test_whitening_separates_classes_better(real_vectors) -> None:
    labels = np.repeat(np.arange(12), 3)
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(36, dtype=bool)

    def margin(v):
        s = v @ v.T
        return s[same & off].mean() - s[~same].mean()

    assert margin(Whitening.fit([real_vectors], dim=24).apply(real_vectors)) > margin(real_vectors)


def test_whitening_keeps_the_directions_that_explain_the_variance_share(real_vectors) -> None:
    centred = real_vectors.astype(np.float64) - real_vectors.mean(axis=0)
    eig = np.sort(np.linalg.eigvalsh(centred.T @ centred / len(centred)))[::-1]
    share = np.cumsum(eig) / eig.sum()
    for variance in (0.5, 0.8, 0.9):
        expected = int(np.argmax(share >= variance)) + 1  # the fewest directions reaching the share
        assert Whitening.fit([real_vectors], 1280, variance=variance).dim == expected
    assert Whitening.fit([real_vectors], 4, variance=0.9).dim == 4  # the cap still holds


def test_shrinkage_keeps_small_directions_from_being_blown_up(real_vectors) -> None:
    def spread(w: Whitening) -> float:
        scale = np.linalg.norm(w.projection, axis=0)  # 1 / (eigenvalue + shrink) ** (power / 2)
        return float(scale.max() / scale.min())

    plain = Whitening.fit([real_vectors], 30, power=0.5)
    shrunk = Whitening.fit([real_vectors], 30, power=0.5, shrink=1.0)
    gentle = Whitening.fit([real_vectors], 30, power=0.25)
    assert spread(shrunk) < spread(plain) and spread(gentle) < spread(plain)
    assert np.isfinite(shrunk.apply(real_vectors)).all()


def test_query_expansion_by_hand() -> None:
    q = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    nb = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    out = expand_query(q, nb, np.array([0.5, -0.2]), alpha=1.0)  # negative similarity weighs nothing
    assert out == pytest.approx(np.array([1.0, 0.5, 0.0]) / np.sqrt(1.25))
    assert expand_query(q, nb[:0], np.array([]), 1.0) is q


def test_k_reciprocal_order_is_a_permutation_and_lambda_one_is_the_cosine_order(real_vectors) -> None:
    query, candidates = real_vectors[0], real_vectors[1:]
    order, distance = k_reciprocal_order(query, candidates, k1=6, k2=3, lam=0.5)
    assert sorted(order.tolist()) == list(range(35)) and np.all(np.diff(distance) >= 0)
    plain, _ = k_reciprocal_order(query, candidates, k1=6, k2=3, lam=1.0)
    assert plain.tolist() == np.argsort(-(candidates @ query), kind="stable").tolist()
    one, _ = k_reciprocal_order(query, candidates[:1])
    assert one.tolist() == [0] and k_reciprocal_order(query, candidates[:0])[0].size == 0


def test_k_reciprocal_ranks_mutual_neighbours_of_the_same_subject_higher(real_vectors) -> None:
    """Each photo queries the 35 others: the re-ranked top 2 hold at least as many same-class photos."""
    labels = np.repeat(np.arange(12), 3)

    def hits_in_top2(lam: float) -> int:
        total = 0
        for q in range(36):
            rest = np.delete(np.arange(36), q)
            order, _ = k_reciprocal_order(real_vectors[q], real_vectors[rest], k1=4, k2=2, lam=lam)
            total += int((labels[rest[order[:2]]] == labels[q]).sum())
        return total

    assert hits_in_top2(0.3) > hits_in_top2(1.0)


def test_library_learns_whitening_and_expansion_keeps_results_a_permutation(settings, embedder, photo_dir) -> None:
    copy_photos(photo_dir, ("pizza", "castle", "flamingo"), 4)
    raw_settings = settings.model_copy(update={"whiten": False, "query_expansion": 0, "rerank_depth": 0})
    tuned = settings.model_copy(update={"whiten_min_photos": 16, "whiten_variance": 1.0, "query_expansion": 2,
                                        "rerank_depth": 24})
    query = str(photo("goldfish", 0, "test"))
    with Library(raw_settings, embedder=embedder) as lib:
        lib.index([str(photo_dir)])
        raw = lib.search(query, k=24).hits
        assert lib.stats()["whitening"] == "off" and lib.vectors.dim == 1280
    with Library(tuned, embedder=embedder) as lib:
        lib.index([str(photo_dir)])  # nothing new, but the whitening is learned now
        assert lib.stats()["whitening"] == "1280 -> 23, learned from 24 photos" and lib.vectors.dim == 23
        hits = lib.search(query, k=24).hits
        assert sorted(h.id for h in hits) == sorted(h.id for h in raw)  # the same photos, re-ranked
        assert hits[0].label == "goldfish"
        same = lib.search(str(photo("tiger_cat", 1)), k=1).hits[0]
        assert same.similarity == pytest.approx(1.0, abs=1e-4)  # scores stay the cosine to the photo given
        info = lib.reindex()
        assert info["whitening"] == "1280 -> 23" and info["dim"] == 23
    with Library(raw_settings, embedder=embedder) as lib:  # switched off again: raw from the next re-learn on
        assert lib.vectors.dim == 23
        lib.reindex()
        assert lib.vectors.dim == 1280 and len(lib.vectors) == 24


def test_flip_tta_is_mirror_invariant() -> None:
    model = load("mobilenet_v2_flip")
    px = model.prepare(Image.open(photo("flamingo", 0)).convert("RGB"))
    a, b = model.embed(np.stack([px, px[:, ::-1]]))
    assert np.allclose(a, b, atol=1e-5)


def test_gem_with_p_one_is_the_average_pool(embedder) -> None:
    gem = load("mobilenet_v2_gem")
    gem.gem_p = 1.0
    px = embedder.prepare(Image.open(photo("lion", 0)).convert("RGB"))[None]
    assert float(gem.embed(px)[0] @ embedder.embed(px)[0]) > 0.995  # same up to int8 rounding of the pool
    gem.gem_p = 3.0
    assert float(gem.embed(px)[0] @ embedder.embed(px)[0]) < 0.995


def test_fusion_score_is_the_weighted_sum(embedder) -> None:
    fused, v1 = load("mobilenet_v2+v1"), load("mobilenet_v1")
    px = np.stack([embedder.prepare(Image.open(photo(c, 0)).convert("RGB")) for c in CLASSES[:2]])
    f, a, b = fused.embed(px), embedder.embed(px), v1.embed(px)
    assert float(f[0] @ f[1]) == pytest.approx(0.8 * float(a[0] @ a[1]) + 0.2 * float(b[0] @ b[1]), abs=1e-5)
