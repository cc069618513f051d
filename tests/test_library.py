"""Search through the core library: by file, bytes, URL or id; k, min_score, label; model guard."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lookalike.config import Settings
from lookalike.imaging import BadImage
from lookalike.library import Library, LibraryError, ModelMismatchError, NotFoundError
from tests.conftest import MODELS, photo


@pytest.fixture
def lib(settings: Settings, embedder, photo_dir: Path):
    with Library(settings, embedder=embedder) as library:
        library.index([str(photo_dir)])
        yield library


def test_search_by_bytes_equals_search_by_path(lib: Library) -> None:
    q = photo("bullet_train", 0, "test")
    by_path = lib.search(str(q), k=5)
    by_bytes = lib.search(q.read_bytes(), k=5)
    assert [h.id for h in by_path.hits] == [h.id for h in by_bytes.hits]
    assert [h.score for h in by_path.hits] == pytest.approx([h.score for h in by_bytes.hits])
    assert by_path.hits[0].label == "bullet_train"


def test_indexed_photo_finds_itself_with_score_one(lib: Library) -> None:
    """The query path embeds exactly like the index path."""
    hit = lib.search(str(photo("tiger_cat", 2)), k=1).hits[0]
    assert hit.similarity == pytest.approx(1.0, abs=1e-5) and hit.label == "tiger_cat"


def test_more_like_this_by_id_excludes_itself(lib: Library) -> None:
    image_id = lib.catalog.ids("goldfish")[0]
    hits = lib.search(int(image_id), k=3).hits
    assert image_id not in [h.id for h in hits] and len(hits) == 3
    assert hits[0].label == "goldfish"


def test_k_min_score_and_label_filter(lib: Library) -> None:
    q = str(photo("goldfish", 0, "test"))
    assert len(lib.search(q, k=12).hits) == 12
    strict = lib.search(q, k=12, min_score=0.5).hits
    assert strict and all(h.similarity >= 0.5 for h in strict) and len(strict) < 12
    cats = lib.search(q, k=10, label="tiger_cat").hits
    assert len(cats) == 4 and {h.label for h in cats} == {"tiger_cat"}
    assert lib.search(q, k=5, label="no-such-label").hits == []


def test_search_by_url(lib: Library, http_server: str, http_root: Path) -> None:
    shutil.copy(photo("goldfish", 1), http_root / "q.jpg")
    assert lib.search(f"{http_server}/q.jpg", k=1).hits[0].label == "goldfish"
    with pytest.raises(LibraryError, match="404"):
        lib.search(f"{http_server}/nothing.jpg")


def test_bad_queries_raise_clear_errors(lib: Library, tmp_path: Path) -> None:
    with pytest.raises(BadImage, match="empty"):
        lib.search(b"")
    with pytest.raises(NotFoundError, match="no image with id 999999"):
        lib.search(999999)
    with pytest.raises(LibraryError, match="k must be"):
        lib.search(b"x", k=0)
    with pytest.raises(LibraryError, match="no such file"):
        lib.search(str(tmp_path / "nope.jpg"))


def test_remove_deletes_everywhere(lib: Library) -> None:
    victim = lib.search(str(photo("goldfish", 0)), k=1).hits[0]
    removed = lib.remove([victim.id, 424242])
    assert [r.id for r in removed] == [victim.id]
    assert lib.catalog.get(victim.id) is None and not lib.images.exists("thumbnail", victim.sha256)
    assert victim.id not in lib.vectors.ids().tolist()
    assert lib.search(str(photo("goldfish", 0)), k=1).hits[0].id != victim.id


def test_stats(lib: Library) -> None:
    s = lib.stats()
    assert s["images"] == 12 and s["vectors"] == 12 and s["model"] == "mobilenet_v2" and s["dim"] == 1280
    assert s["index"] == "flat" and s["disk_bytes"]["images"] > 0


def test_library_refuses_a_different_model(tmp_path: Path, photo_dir: Path) -> None:
    home = tmp_path / "v1lib"
    with Library(Settings(home=home, models_dir=MODELS, model="mobilenet_v1")) as lib:
        lib.index([str(next((photo_dir / "goldfish").iterdir()))])
        assert lib.stats()["dim"] == 1024
    with pytest.raises(ModelMismatchError, match="indexed with model 'mobilenet_v1'"):
        Library(Settings(home=home, models_dir=MODELS, model="mobilenet_v2"))
    # without an explicit choice the library's own model is used
    with Library(Settings(home=home, models_dir=MODELS)) as lib:
        assert lib.model_name == "mobilenet_v1" and lib.search(str(photo("goldfish", 0)), k=1).hits


def test_large_library_uses_hnsw_and_still_finds_the_class(settings, embedder, photo_dir) -> None:
    tiny_threshold = settings.model_copy(update={"ann_threshold": 5})
    with Library(tiny_threshold, embedder=embedder) as lib:
        lib.index([str(photo_dir)])
        lib.space.photos.wait()  # the HNSW tier is built beside the live one, in a background thread
        assert lib.stats()["index"] == "hnsw"
        hits = lib.search(str(photo("goldfish", 0)), k=3, label="goldfish").hits
        assert hits[0].similarity == pytest.approx(1.0, abs=1e-4) and {h.label for h in hits} == {"goldfish"}


@pytest.mark.parametrize("target", ["milvus_lite", "milvus_server"])
def test_moving_to_milvus_keeps_identical_results(target, settings, embedder, photo_dir, tmp_path, request) -> None:
    """Switching the vector backend re-uses the catalog's embeddings: no re-embedding, same top 10.

    milvus_server runs inside the private network namespace of tests/store/test_milvus_server.py."""
    pytest.importorskip("pymilvus")
    uri = f"milvus-lite://{tmp_path}/milvus.db"
    if target == "milvus_server":
        uri = request.getfixturevalue("milvus_server_uri")
    with Library(settings, embedder=embedder) as lib:
        lib.index([str(photo_dir)])
        queries = [str(photo(label, 0, "test")) for label in ("goldfish", "tiger_cat", "bullet_train")]
        before = [[(h.id, round(h.score, 4)) for h in lib.search(q, k=10).hits] for q in queries]
    with Library(settings, embedder=embedder) as lib:
        info = lib.reindex(to=uri)
        assert info["index"] == "milvus" and info["vectors"] == 12
    with Library(settings, embedder=embedder) as lib:  # the move sticks without any setting
        assert lib.stats()["index"] == "milvus" and len(lib.vectors) == 12
        after = [[(h.id, round(h.score, 4)) for h in lib.search(q, k=10).hits] for q in queries]
        assert after == before
        lib.remove([before[0][0][0]])
        assert len(lib.vectors) == 11 and before[0][0][0] not in lib.vectors.ids().tolist()


def test_a_label_given_later_reaches_the_index_payloads(settings, embedder, tmp_path) -> None:
    """Filters run on the vector backend's payloads, so a first label given by a later copy must reach them."""
    first, copy = tmp_path / "a" / "fish.jpg", tmp_path / "b" / "fish.jpg"
    for path in (first, copy):
        path.parent.mkdir(parents=True)
        shutil.copy(photo("goldfish", 0), path)
    shutil.copy(photo("tiger_cat", 0), tmp_path / "a" / "cat.jpg")
    unlabelled = tmp_path / "a" / "photos.csv"
    unlabelled.write_text("id,path\n1,fish.jpg\n2,cat.jpg\n")  # a CSV without labels
    with Library(settings, embedder=embedder) as lib:
        lib.index([str(unlabelled)])
        assert lib.search(str(first), k=5, label="fish").hits == []
        report = lib.index([str(copy)], label="fish")  # the same bytes, now with a label
        assert len(report.duplicates) == 1
        hits = lib.search(str(first), k=5, label="fish").hits
        assert [h.label for h in hits] == ["fish"] and hits[0].similarity == pytest.approx(1.0, abs=1e-4)
        assert lib.vectors.payloads(np.array([hits[0].id]))[0]["label"] == "fish"


def test_an_index_saved_without_payloads_is_rebuilt_from_the_catalog(settings, embedder, photo_dir) -> None:
    with Library(settings, embedder=embedder) as lib:
        lib.index([str(photo_dir)])
    for payload_file in (settings.home / "vectors").glob("*.payload.npz"):
        payload_file.unlink()  # as written by a version before payloads
    with Library(settings, embedder=embedder) as lib:
        hits = lib.search(str(photo("goldfish", 0)), k=10, label="goldfish").hits
        assert len(hits) == 4 and {h.label for h in hits} == {"goldfish"}
