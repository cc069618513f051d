"""The catalog keeps one row per distinct image and every source that pointed at it."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.store.catalog import Catalog, NewImage
from lookalike.store.images import LocalImageStore


def item(sha: str, source: str, label: str | None = "a", vec: float | None = 1.0) -> NewImage:
    emb = None if vec is None else np.full(4, vec, dtype=np.float32)
    return NewImage(sha, source, label, 10, 20, "JPEG", 123, 123, 1, emb)


@pytest.fixture
def catalog(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite")
    yield cat
    cat.close()


def test_batch_insert_and_read_back(catalog) -> None:
    results = catalog.add_batch([item("a" * 64, "/x/1.jpg"), item("b" * 64, "/x/2.jpg", label="b")])
    assert [r[2] for r in results] == [True, True]
    rec = catalog.get(results[0][1])
    assert rec.sha256 == "a" * 64 and rec.sources == ("/x/1.jpg",) and rec.label == "a"
    assert catalog.count() == 2 and catalog.labels() == {"a": 1, "b": 1}
    assert np.allclose(catalog.embedding(rec.id), 1.0)


def test_same_bytes_twice_is_one_image_with_two_sources(catalog) -> None:
    first = catalog.add_batch([item("a" * 64, "/x/1.jpg"), item("a" * 64, "/y/copy.jpg", vec=None)])
    assert first[0][1] == first[1][1] and [r[2] for r in first] == [True, False]
    assert catalog.count() == 1
    assert set(catalog.get(first[0][1]).sources) == {"/x/1.jpg", "/y/copy.jpg"}


def test_ids_are_never_reused(catalog) -> None:
    ((_, first, _),) = catalog.add_batch([item("a" * 64, "/1")])
    catalog.remove_images([first])
    ((_, second, _),) = catalog.add_batch([item("b" * 64, "/2")])
    assert second > first


def test_failed_batch_leaves_nothing(catalog) -> None:
    bad = NewImage("c" * 64, "/3", None, 1, 1, "JPEG", 1, 1, 1, "not an array")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        catalog.add_batch([item("a" * 64, "/1"), bad])
    assert catalog.count() == 0 and catalog.source_state("/1") is None


def test_orphans_after_source_moves(catalog) -> None:
    ((_, old, _),) = catalog.add_batch([item("a" * 64, "/x/1.jpg")])
    catalog.add_batch([item("b" * 64, "/x/1.jpg", vec=2.0)])  # same path, new content
    assert catalog.orphans() == [old]


def test_sources_under_escapes_like_wildcards(catalog) -> None:
    catalog.add_batch([item("a" * 64, "/data/my_photos/1.jpg"), item("b" * 64, "/data/myXphotos/2.jpg")])
    assert catalog.sources_under("/data/my_photos/") == ["/data/my_photos/1.jpg"]


def test_iter_embeddings_in_chunks(catalog) -> None:
    catalog.add_batch([item(f"{i:064x}", f"/{i}", vec=float(i)) for i in range(10)])
    chunks = list(catalog.iter_embeddings(chunk=4))
    assert [len(ids) for ids, _ in chunks] == [4, 4, 2]
    assert chunks[0][1].shape == (4, 4)


def test_local_image_store_roundtrip(tmp_path) -> None:
    store = LocalImageStore(tmp_path / "images")
    sha = "ab" * 32
    store.put("thumbnail", sha, b"jpeg")
    assert store.exists("thumbnail", sha) and store.get("thumbnail", sha) == b"jpeg"
    assert store.path("thumbnail", sha).parent.name == "ab"
    store.delete("thumbnail", sha)
    assert store.get("thumbnail", sha) is None
    with pytest.raises(ValueError):
        store.put("original", "../../etc/passwd", b"x")
