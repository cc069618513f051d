"""A candidate's local features stored beside its thumbnail: the same features as found on the thumbnail, read back
by later checks, found again when their file is unusable, and removed with the photo."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from lookalike.config import Settings
from lookalike.copyedits import edited
from lookalike.imaging import thumbnail_jpeg
from lookalike.library import Library
from lookalike.search import copies, feature_files
from lookalike.store.images import LocalImageStore
from tests.conftest import photo

SHA = "ab" * 32


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would: no failure said yet."""
    monkeypatch.setattr(feature_files, "_said", set())


@pytest.fixture
def stored(tmp_path: Path) -> tuple[LocalImageStore, int, int]:
    """A store holding one real photo's thumbnail, and the photo's size."""
    picture = Image.open(photo("castle", 1)).convert("RGB")
    images = LocalImageStore(tmp_path / "images")
    images.put("thumbnail", SHA, thumbnail_jpeg(picture, 256, 85))
    return images, picture.width, picture.height


def same(a: copies.Features, b: copies.Features) -> bool:
    return (a.width, a.height) == (b.width, b.height) and np.array_equal(a.points, b.points) and np.array_equal(
        a.descriptors, b.descriptors) and np.array_equal(a.small, b.small)  # fmt: skip


def test_the_stored_features_are_the_ones_found_on_the_thumbnail(stored) -> None:
    images, w, h = stored
    found = copies.from_jpeg(images.get("thumbnail", SHA), w, h, copies.QUERY_FEATURES)
    assert len(found.points) > 100
    first = feature_files.candidate_features(images, SHA, w, h)
    assert first is not None and same(first, found)
    assert images.exists("features", SHA)
    images.delete("thumbnail", SHA)  # the second check reads the file: the thumbnail is not needed any more
    second = feature_files.candidate_features(images, SHA, w, h)
    assert second is not None and same(second, found)


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "other recipe", "other size", "longer"])
def test_an_unusable_file_is_found_again_and_replaced(stored, damage: str) -> None:
    images, w, h = stored
    good = feature_files.encode(copies.from_jpeg(images.get("thumbnail", SHA), w, h, copies.QUERY_FEATURES))
    bad = {"empty": b"", "truncated": good[:-100], "garbage": b"\x00\xff" * 500,
           "other recipe": good[:8] + b"\x01" * 8 + good[16:],
           "other size": good[:16] + (w + 1).to_bytes(4, "little") + good[20:],
           "longer": good + b"\x00"}[damage]  # fmt: skip
    images.put("features", SHA, bad)
    assert feature_files.decode(bad, w, h) is None
    features = feature_files.candidate_features(images, SHA, w, h)
    assert features is not None and feature_files.encode(features) == good
    assert images.get("features", SHA) == good


def test_a_photo_without_a_thumbnail_has_no_features(tmp_path: Path) -> None:
    assert feature_files.candidate_features(LocalImageStore(tmp_path / "images"), SHA, 640, 480) is None


def test_a_store_that_cannot_take_them_still_gives_the_features(stored, caplog) -> None:
    images, w, h = stored
    (images.root / "features").write_bytes(b"a file where the folder would be")
    features = feature_files.candidate_features(images, SHA, w, h)
    assert features is not None and len(features.points) > 100
    assert "could not be stored" in caplog.text


def test_a_store_that_refuses_every_write_is_warned_about_once(stored, caplog) -> None:
    """A read-only store refuses the features of every check: one warning says so, the rest go to debug."""
    images, w, h = stored
    (images.root / "features").write_bytes(b"a file where the folder would be")
    caplog.set_level(logging.DEBUG, logger=feature_files.__name__)
    for _ in range(3):
        assert feature_files.candidate_features(images, SHA, w, h) is not None
    said = [r for r in caplog.records if "could not be stored" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "said once" in said[0].getMessage()


def test_a_failure_of_another_kind_is_warned_about_too(stored, caplog, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a store refused once (said), a later failure of another kind (a timeout, then a full disk) is a new
    warning, not a debug line an operator never sees."""
    images, w, h = stored
    caplog.set_level(logging.DEBUG, logger=feature_files.__name__)
    for error in (TimeoutError("the bucket did not answer"), TimeoutError("again"), OSError(28, "No space left")):
        def refuse(*args: object, error: Exception = error) -> None:
            raise error

        monkeypatch.setattr(images, "put", refuse)
        assert feature_files.candidate_features(images, SHA, w, h) is not None
    said = [r for r in caplog.records if "could not be stored" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG, logging.WARNING]
    assert "No space left" in said[2].getMessage()


def test_searches_judge_alike_with_and_without_the_files_and_removal_takes_them(settings: Settings,
                                                                               tmp_path: Path) -> None:  # fmt: skip
    """A copy found by geometry (a crop is below the descriptor's sure cosine) gets the same verdict whether its
    original's features are found on the thumbnail or read from their file; deleting the photo deletes the file."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for label in ("castle", "pizza", "goldfish", "tiger_cat"):
        Image.open(photo(label, 1)).convert("RGB").save(folder / f"{label}.jpg", quality=90)
    query = tmp_path / "query.jpg"
    edited(Image.open(photo("castle", 1)).convert("RGB"), "corner crop (35 % of the area)").save(query, quality=80)
    with Library(settings) as lib:
        lib.index([str(folder)])
        castle = next(i for i in lib.catalog.ids().tolist() if lib.get(i).sources[0].endswith("castle.jpg"))
        sha = lib.get(castle).sha256
        first = lib.search(str(query), k=3)
        assert lib.images.exists("features", sha), "the check stored the original's features"
        second = lib.search(str(query), k=3)
        assert first.hits[0].id == castle and first.hits[0].copy
        assert [h.as_dict() for h in first.hits] == [h.as_dict() for h in second.hits]
        lib.delete_images([castle])
        assert not lib.images.exists("features", sha)


def test_with_keep_off_nothing_is_read_or_written(stored) -> None:
    images, w, h = stored
    images.put("features", SHA, b"would be unusable, but is not even read")
    features = feature_files.candidate_features(images, SHA, w, h, keep=False)
    assert features is not None and len(features.points) > 100
    assert images.get("features", SHA) == b"would be unusable, but is not even read"


def test_a_mirrored_copy_is_looked_for_only_where_its_cosine_could_make_it_a_copy(stored, monkeypatch) -> None:
    """The mirror image is matched against the candidates whose whole cosine reaches CHECK_FLOOR (below it a copy
    verdict would not be kept): a mirrored copy is found at 0.5, and at 0.2 the mirror pass does not run."""
    from lookalike.search import verification
    from lookalike.search.results import Hit

    images, w, h = stored
    mirrored = ImageOps.mirror(Image.open(photo("castle", 1)).convert("RGB"))
    hit = Hit(1, 0.5, None, ("castle.jpg",), w, h, SHA)
    seen: list[int] = []

    def features_of(candidate: Hit) -> copies.Features | None:
        seen.append(candidate.id)
        return feature_files.candidate_features(images, candidate.sha256, candidate.width, candidate.height)

    def judged(cosine: float) -> dict:
        query = verification.CopyQuery(None, lambda: mirrored, mirrored.width, mirrored.height)
        return verification.judge(query, [hit], {1: cosine}, features_of, reach={1: 0.5})

    found = judged(0.5)
    assert found[1].copy and found[1].mirrored and seen == [1]
    geometry, calls = verification._geometry, []
    monkeypatch.setattr(verification, "_geometry", lambda *args: calls.append(args[3]) or geometry(*args))
    assert judged(0.2) == {} and calls == [set()]


def test_a_features_file_that_cannot_be_read_or_replaced_falls_back_to_the_thumbnail(stored, caplog) -> None:
    """A cache never fails a search: a features 'file' that is a folder cannot be read (nor replaced: the local
    store keeps what a key holds)."""
    images, w, h = stored
    images.path("features", SHA).mkdir(parents=True)
    features = feature_files.candidate_features(images, SHA, w, h)
    assert features is not None and len(features.points) > 100
    assert "could not be read" in caplog.text


def test_a_file_deleted_by_another_process_reads_as_missing(tmp_path: Path) -> None:
    images = LocalImageStore(tmp_path / "images")
    images.put("features", SHA, b"x")
    images.path("features", SHA).unlink()  # what another process's delete does between two calls
    assert images.get("features", SHA) is None
