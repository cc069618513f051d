"""One conformance suite for the catalog, run on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import threading
import time

import numpy as np
import pytest
from PIL import Image

from lookalike.store.catalog import (
    COPY,
    OBJECTS,
    PHOTO,
    SOURCES,
    Catalog,
    DatabaseError,
    NewImage,
    codec,
    object_vector_id,
)
from lookalike.store.catalog.database import CatalogUnavailable, LockLost
from lookalike.store.catalog.migrations import LATEST
from lookalike.store.images import LocalImageStore
from lookalike.store.payload import whole_photo
from tests.conftest import photo


def unit(seed: float, dim: int = 4) -> np.ndarray:
    v = np.arange(1, dim + 1, dtype=np.float32) * seed + 0.5
    return v / np.linalg.norm(v)


def item(sha: str, source: str, label: str | None = "a", vec: float | None = 1.0, dim: int = 4) -> NewImage:
    return NewImage(sha, source, label, 10, 20, "JPEG", 123, 123, 1, None if vec is None else unit(vec, dim))


def sha(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'c.sqlite'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def catalog(url):
    cat = Catalog.open(url)
    yield cat
    cat.close()


def test_batch_insert_and_read_back(catalog) -> None:
    result = catalog.add_batch([item("a" * 64, "/x/1.jpg"), item("b" * 64, "/x/2.jpg", label="b", vec=2.0)])
    assert [r[2] for r in result.rows] == [True, True] and result.displaced == []
    rec = catalog.get(result.rows[0][1])
    assert rec.sha256 == "a" * 64 and rec.sources == ("/x/1.jpg",) and rec.label == "a" and rec.width == 10
    assert catalog.count() == 2 and catalog.labels() == {"a": 1, "b": 1}
    assert np.allclose(catalog.embedding(rec.id), unit(1.0), atol=1e-6)
    found = catalog.vectors([result.rows[1][1], 999, rec.id])
    assert found.ids.tolist() == [result.rows[1][1], rec.id] and found.matrix.shape == (2, 4)
    assert found.payloads[0] == {"photo_id": result.rows[1][1], "object": 0, "label": "b", "detected_label": "",
                                 "box": (0.0, 0.0, 0.0, 0.0), "score": 0.0, "fields": {}}  # fmt: skip
    assert catalog.get(2**63) is None and catalog.get(-1) is None and catalog.embedding(2**64) is None


def test_the_library_is_searched_by_file_name(catalog) -> None:
    """Any case, any part of the name, under any of a photo's paths; LIKE's wildcards are plain characters."""
    rows = catalog.add_batch([item("a" * 64, "/x/IMG_0042.JPG"), item("b" * 64, "/x/beach_day.jpg"),
                              item("c" * 64, "/x/beach%day.jpg"), item("a" * 64, "/y/holiday_img.jpg", vec=None),
                              item("d" * 64, "/x/folder_img/other.jpg", label="b"),
                              item("e" * 64, "/x/Été_Straße.jpg")]).rows  # fmt: skip
    photo_a, beach, percent = rows[0][1], rows[1][1], rows[2][1]

    def named(name: str, **kw) -> list[int]:
        total, records = catalog.list_images("oldest", name=name, **kw)
        assert total == len(records)
        return [r.id for r in records]

    assert named("img_") == [photo_a]  # both of its names match; once; the folder's name does not count
    assert named("BEACH") == [beach, percent] and named("%") == [percent] and named("h_d") == [beach]
    assert named("other", label="b") == [rows[4][1]] and named("other", label="a") == []
    assert named("") == [r[1] for r in rows if r[2]]  # no filter
    assert named("été") == named("ÉTÉ") == named("Straße") == [rows[5][1]]  # any case beyond ASCII (SQLite too)
    assert named("\0") == [] and named("a\0b") == []  # SQLite's LIKE would stop reading at the NUL: all photos


def test_same_bytes_twice_is_one_image_with_two_sources(catalog) -> None:
    first = catalog.add_batch([item("a" * 64, "/x/1.jpg"), item("a" * 64, "/y/copy.jpg", vec=None)]).rows
    assert first[0][1] == first[1][1] and [r[2] for r in first] == [True, False]
    again = catalog.add_batch([item("a" * 64, "/z/third.jpg")]).rows  # embedded again by a racing writer
    assert again[0][1] == first[0][1] and again[0][2] is False
    assert catalog.count() == 1
    assert set(catalog.get(first[0][1]).sources) == {"/x/1.jpg", "/y/copy.jpg", "/z/third.jpg"}


def test_concurrent_writers_store_each_photo_once(url) -> None:
    """Two connections (as two replicas) write overlapping batches in opposite orders at the same time."""
    catalogs = [Catalog.open(url), Catalog.open(url)]
    errors: list[BaseException] = []

    def writer(cat: Catalog, order: list[int], tag: str) -> None:
        try:
            for start in range(0, len(order), 8):
                cat.add_batch([item(sha(n), f"/{tag}/{n}.jpg", vec=float(n)) for n in order[start : start + 8]])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    numbers = list(range(1, 65))
    threads = [threading.Thread(target=writer, args=(catalogs[0], numbers, "a")),
               threading.Thread(target=writer, args=(catalogs[1], numbers[::-1], "b"))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert catalogs[0].count() == 64 and catalogs[1].count() == 64
    ids = catalogs[0].ids().tolist()
    assert all(len(catalogs[1].get(i).sources) == 2 for i in ids)
    for cat in catalogs:
        cat.close()


def test_the_change_feed_never_skips_a_committed_change(url) -> None:
    """Readers follow ``seq > cursor``; with concurrent writers no change may appear behind a reader's cursor."""
    writers = [Catalog.open(url) for _ in range(3)]
    reader = Catalog.open(url)
    seen: list[int] = []
    stop = threading.Event()

    def follow() -> None:
        cursor = 0
        while not stop.is_set() or cursor < reader.last_seq():
            for change in reader.changes_since(cursor):
                seen.append(change.seq)
                cursor = change.seq

    errors: list[BaseException] = []

    def write(cat: Catalog, base: int) -> None:
        try:
            for n in range(base, base + 40):
                cat.add_batch([item(sha(n), f"/w/{n}.jpg", vec=float(n % 7 + 1))])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    follower = threading.Thread(target=follow)
    follower.start()
    threads = [threading.Thread(target=write, args=(cat, 1000 * (i + 1))) for i, cat in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    follower.join(60)
    assert not errors, errors
    every = [c.seq for c in reader.changes_since(0, 100_000)]
    assert len(every) == 120 and sorted(seen) == every and seen == sorted(seen)
    for cat in [*writers, reader]:
        cat.close()


def test_ids_are_never_reused(catalog) -> None:
    first = catalog.add_batch([item("a" * 64, "/1")]).rows[0][1]
    catalog.remove_images([first])
    second = catalog.add_batch([item("b" * 64, "/2")]).rows[0][1]
    assert second > first


def test_failed_batch_leaves_nothing(catalog) -> None:
    bad = NewImage("c" * 64, "/3", None, 1, 1, "JPEG", 1, 1, 1, "not an array")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        catalog.add_batch([item("a" * 64, "/1"), bad])
    assert catalog.count() == 0 and catalog.source_state("/1") is None and catalog.last_seq() == 0


def test_re_pointed_source_displaces_its_old_image(catalog) -> None:
    old = catalog.add_batch([item("a" * 64, "/x/1.jpg")]).rows[0][1]
    moved = catalog.add_batch([item("b" * 64, "/x/1.jpg", vec=2.0)])  # same path, new content
    assert moved.displaced == [old]
    assert catalog.orphans([old, moved.rows[0][1]]) == [old] and catalog.orphans() == [old]


def test_ids_for_shas_finds_the_held_bytes_in_one_call(catalog) -> None:
    rows = catalog.add_batch([item(sha(1), "/k/1.jpg"), item(sha(2), "/k/2.jpg", vec=2.0)]).rows
    ids = {row[0].sha256: row[1] for row in rows}
    assert catalog.ids_for_shas([sha(2), sha(9), sha(1), sha(2)]) == ids  # unknown left out, repeats once
    assert catalog.ids_for_shas([]) == {} and catalog.ids_for_shas(iter([sha(9)])) == {}
    assert catalog.ids_for_shas(sha(n) for n in range(3, 6001)) == {}  # more than one IN list (CHUNK)
    assert catalog.ids_for_shas([sha(n) for n in range(3, 6001)] + [sha(1)]) == {sha(1): ids[sha(1)]}


def test_sources_states_and_prefixes(catalog) -> None:
    catalog.add_batch([item(sha(1), "/data/my_photos/1.jpg"), item(sha(2), "/data/myXphotos/2.jpg"),
                       item(sha(3), "s3://bucket/a/3.jpg"), item(sha(4), "https://example.com/4.jpg"),
                       item(sha(5), "/data/100%/5.jpg")])  # fmt: skip
    assert catalog.sources_under("/data/my_photos/") == ["/data/my_photos/1.jpg"]
    assert catalog.sources_under("/data/100%/") == ["/data/100%/5.jpg"]
    assert catalog.sources_under("s3://bucket/") == ["s3://bucket/a/3.jpg"]
    # letter case counts (SQLite's LIKE ignores it: `index /data/My_Photos --prune` pruned /data/my_photos)
    assert catalog.sources_under("/data/My_Photos/") == [] and catalog.sources_under("/DATA/") == []
    states = catalog.source_states(["/data/my_photos/1.jpg", "/data/my_photos/nope.jpg", "https://example.com/4.jpg"])
    assert set(states) == {"/data/my_photos/1.jpg", "https://example.com/4.jpg"}
    assert states["/data/my_photos/1.jpg"][1:] == (123, 1, "a", None)
    touched = catalog.remove_sources(["/data/my_photos/1.jpg", "/unknown/x.jpg"])
    assert touched == [catalog.id_for_sha(sha(1))] and catalog.orphans(touched) == touched


def test_remove_images_cascades_and_reports_what_it_deleted(catalog) -> None:
    ids = [r[1] for r in catalog.add_batch([item(sha(n), f"/r/{n}.jpg") for n in range(3)]).rows]
    catalog.set_objects(ids[0], "nanodet_m", [((1, 2, 3, 4), "dog", 0.9, unit(3.0))])
    removed = catalog.remove_images([ids[0], ids[1], 424242])
    assert sorted(r.id for r in removed) == ids[:2] and removed[0].sources
    assert catalog.count() == 1 and catalog.objects(ids[0]) == [] and catalog.counts()["sources"] == 1
    assert catalog.remove_images([ids[0]]) == []  # already gone: nothing to report twice


def test_removing_orphans_keeps_one_given_a_source_since_it_was_found(catalog) -> None:
    """A run found a photo sourceless (its file moved), then another run indexed the moved file, giving the photo a
    source, before the first deleted it: the delete took the second run's photo and source with it, silently
    (hostile probe). ``orphans_only`` checks in the delete itself."""
    a, b = (r[1] for r in catalog.add_batch([item(sha(1), "/a/gone.jpg"), item(sha(2), "/a/other.jpg")]).rows)
    catalog.remove_sources(["/a/gone.jpg", "/a/other.jpg"])
    assert catalog.orphans([a, b]) == [a, b]
    catalog.add_batch([item(sha(1), "/b/moved-here.jpg")])  # the other run, between the check and the delete
    removed = catalog.remove_images([a, b], orphans_only=True)
    assert [r.id for r in removed] == [b] and list(catalog.get(a).sources) == ["/b/moved-here.jpg"]


def test_a_pruned_source_leaves_a_label_that_another_source_still_carries(catalog) -> None:
    """Sources added in one run share their time: the photo's "oldest labelled source" was a tie, and pruning an
    unrelated path flipped its label to another folder's (review). A label some source still carries stays."""
    catalog.add_batch([item(sha(2), "/z/other.jpg", "z")])  # the folder z is known first (a lower folder id)
    rows = catalog.add_batch([item(sha(1), "/m/x.jpg", "m"), item(sha(1), "/z/x.jpg", "z"),
                              item(sha(1), "/y/x.jpg", "y")]).rows  # fmt: skip
    photo = rows[0][1]
    assert catalog.get(photo).label == "m"
    catalog.remove_sources(["/y/x.jpg"])
    assert catalog.get(photo).label == "m"
    catalog.remove_sources(["/m/x.jpg"])  # its path gone: the label of the paths left
    assert catalog.get(photo).label == "z"


def test_copies_are_removed_only_while_the_photo_kept_in_their_place_is_there(catalog) -> None:
    """`duplicates --remove --yes` acts on a report made before: a run that wrote other bytes over the kept photo's
    file in between moved its source to the new photo (and removes the old one at its end), then the removal took
    the copy too, and the picture was gone from the library with its file left out of every later run (probe, then
    a review: the kept photo's row alone is not enough). ``keeping`` checks, in the removal's own transaction, that
    the kept photo is there with a source."""
    keep, copy, other, lone = (r[1] for r in catalog.add_batch([item(sha(n), f"/d/{n}.jpg") for n in range(4)]).rows)
    catalog.add_batch([item(sha(9), "/d/0.jpg")])  # the other run: new bytes under the kept photo's name
    assert catalog.get(keep) is not None and catalog.orphans([keep]) == [keep]  # still there, without a file
    assert catalog.remove_images([copy], remember=True, keeping={copy: keep}) == []
    assert catalog.get(copy) is not None and catalog.removed_sizes(["/d/1.jpg"]) == {}  # nor remembered
    catalog.remove_images([keep])
    assert catalog.remove_images([copy], keeping={copy: keep}) == []  # gone altogether: the same
    assert catalog.remove_images([lone], keeping={}) == []  # a copy of nothing named is not removed
    removed = catalog.remove_images([copy, lone], remember=True, keeping={copy: other, lone: other})
    assert sorted(r.id for r in removed) == [copy, lone] and set(catalog.removed_sizes(["/d/1.jpg"])) == {"/d/1.jpg"}


def _held_in_feed(monkeypatch, thread_name: str) -> tuple[threading.Event, threading.Event]:
    """(written, go): the thread named ``thread_name`` stops in its write's change feed, its rows written and not
    committed (``written`` set), until ``go`` is set: another transaction in flight, for real, on PostgreSQL."""
    written, go = threading.Event(), threading.Event()
    real = Catalog._feed

    def held(self, conn, changes):
        if threading.current_thread().name == thread_name:
            written.set()
            go.wait(30)
        return real(self, conn, changes)

    monkeypatch.setattr(Catalog, "_feed", held)
    return written, go


def test_removing_orphans_waits_for_a_source_being_attached(pg_url, monkeypatch) -> None:
    """PostgreSQL: another run's transaction has attached a source to the sourceless photo and not committed yet
    when the orphans are deleted. READ COMMITTED judged the DELETE's NOT EXISTS before it waited for that row, and
    the photo went with the source just committed (review). The rows are locked first, then judged."""
    cat = Catalog.open(pg_url)
    try:
        a = cat.add_batch([item(sha(1), "/a/gone.jpg")]).rows[0][1]
        cat.remove_sources(["/a/gone.jpg"])
        written, go = _held_in_feed(monkeypatch, "other-run")
        other = threading.Thread(target=cat.add_batch, args=([item(sha(1), "/b/moved-here.jpg", vec=None)],),
                                 name="other-run")  # fmt: skip
        other.start()
        assert written.wait(30)
        removed: list = []
        deleter = threading.Thread(target=lambda: removed.extend(cat.remove_images([a], orphans_only=True)))
        deleter.start()
        time.sleep(1.0)  # the delete waits on the photo's row
        go.set()
        other.join(30)
        deleter.join(30)
        assert removed == [] and list(cat.get(a).sources) == ["/b/moved-here.jpg"]
    finally:
        cat.close()


def test_a_file_attached_to_a_twin_being_removed_is_left_out_not_an_error(pg_url, monkeypatch) -> None:
    """PostgreSQL: a run attaches a file of known bytes while `lookalike remove` deletes its twin (not committed yet):
    the run found the twin, then its source's foreign key failed the whole batch (review). It waits for the removal
    now and leaves the file out of its rows (the pipeline reports it, TWIN_REMOVED)."""
    cat = Catalog.open(pg_url)
    try:
        a = cat.add_batch([item(sha(1), "/a/one.jpg")]).rows[0][1]
        written, go = _held_in_feed(monkeypatch, "remover")
        remover = threading.Thread(target=cat.remove_images, args=([a],), kwargs={"remember": True}, name="remover")
        remover.start()
        assert written.wait(30)
        results: list = []
        adder = threading.Thread(target=lambda: results.append(cat.add_batch([item(sha(1), "/b/copy.jpg", vec=None)])))
        adder.start()
        time.sleep(1.0)
        go.set()
        remover.join(30)
        adder.join(60)
        assert len(results) == 1 and results[0].rows == [] and cat.count() == 0
    finally:
        cat.close()


def test_two_runs_merging_records_into_one_photo_do_not_deadlock(pg_url, monkeypatch, caplog) -> None:
    """PostgreSQL: two runs attach files with records to one indexed photo at once. Each looked its twin up FOR KEY
    SHARE, then asked FOR UPDATE to merge the records: a deadlock each time, retried after a second (review). The
    merge takes FOR NO KEY UPDATE, which waits for the other merge without conflicting with the look-ups."""
    cat = Catalog.open(pg_url)
    try:
        cat.add_batch([item(sha(1), "/a/one.jpg")])
        both = threading.Barrier(2, timeout=10)
        real = Catalog._locked_fields

        def together(self, conn, image_id):  # both runs hold the look-up's lock before either merges
            with contextlib.suppress(threading.BrokenBarrierError):
                both.wait()
            return real(self, conn, image_id)

        monkeypatch.setattr(Catalog, "_locked_fields", together)
        runs = [threading.Thread(target=cat.add_batch, args=(
            [dataclasses.replace(item(sha(1), f"/b{n}/copy.jpg", vec=None), fields={f"k{n}": "v"})],)) for n in (0, 1)]
        with caplog.at_level("WARNING", logger="lookalike"):
            for run in runs:
                run.start()
            for run in runs:
                run.join(60)
        assert not [r for r in caplog.records if "deadlock" in r.getMessage()]
        rec = cat.get(1)
        assert sorted(rec.sources) == ["/a/one.jpg", "/b0/copy.jpg", "/b1/copy.jpg"]
        assert rec.fields == {"k0": "v", "k1": "v"}
    finally:
        cat.close()


def test_every_write_appends_to_the_change_feed(catalog) -> None:
    a, b = (r[1] for r in catalog.add_batch([item(sha(1), "/f/1.jpg"), item(sha(2), "/f/2.jpg", label=None)]).rows)
    catalog.add_batch([item(sha(2), "/g/2.jpg", label="late", vec=None)])  # a first label for b
    catalog.set_objects(a, "nanodet_m", [((1, 2, 3, 4), "dog", 0.9, unit(2.0))])
    catalog.remove_images([a])
    catalog.touch([b], PHOTO)
    changes = catalog.changes_since(0)
    assert [(c.image_id, c.flags) for c in changes] == [
        (a, PHOTO), (b, PHOTO), (b, PHOTO | OBJECTS), (a, OBJECTS), (a, PHOTO | OBJECTS), (b, PHOTO)]  # fmt: skip
    assert [c.seq for c in changes] == sorted(c.seq for c in changes) and catalog.last_seq() == changes[-1].seq
    assert catalog.changes_since(changes[2].seq, limit=2) == changes[3:5]
    catalog.add_batch([item(sha(2), "/h/2.jpg", label="other", vec=None)])  # labelled already: a path only
    assert [(c.image_id, c.flags) for c in catalog.changes_since(changes[-1].seq)] == [(b, SOURCES)]


def test_pruning_keeps_the_newest_change_and_says_how_far_it_went(catalog) -> None:
    catalog.add_batch([item(sha(n), f"/p/{n}.jpg") for n in range(5)])
    last = catalog.last_seq()
    assert catalog.prune_changes(keep_from=last + 100, older_than=3600) == 0  # too recent
    assert catalog.prune_changes(keep_from=3, older_than=0) == 2 and catalog.pruned_upto() == 3
    assert catalog.prune_changes(keep_from=last + 100, older_than=0) == 2
    assert [c.seq for c in catalog.changes_since(0)] == [last] and catalog.last_seq() == last


def test_objects_round_trip_with_payloads(catalog) -> None:
    image_id = catalog.add_batch([item(sha(1), "/o/1.jpg", label="street")]).rows[0][1]
    objs = [((1.5, 2, 30, 40), "dog", 0.9, unit(2.0)), ((5, 6, 7, 8), "cat", 0.6, unit(3.0))]
    assert catalog.set_objects(image_id, "nanodet_m", objs)
    assert catalog.detected_with(image_id) == "nanodet_m"
    assert [(o.idx, o.label) for o in catalog.objects(image_id)] == [(1, "dog"), (2, "cat")]
    found = catalog.object_vectors([image_id])
    assert found.ids.tolist() == [object_vector_id(image_id, 1), object_vector_id(image_id, 2)]
    assert found.payloads[0] == {"photo_id": image_id, "object": 1, "label": "street", "detected_label": "dog",
                                 "box": (1.5, 2.0, 30.0, 40.0), "score": pytest.approx(0.9), "fields": {}}  # fmt: skip
    assert np.allclose(found.matrix[1], unit(3.0), atol=1e-6)
    assert catalog.object_record(object_vector_id(image_id, 2)).label == "cat"
    assert catalog.object_labels() == {"dog": 1, "cat": 1}
    assert catalog.counts()["photos_with_objects"] == 1 and catalog.object_vector_ids().tolist() == found.ids.tolist()
    assert catalog.set_objects(image_id, "nanodet_m", []) and catalog.objects(image_id) == []
    catalog.remove_images([image_id])
    assert catalog.set_objects(image_id, "nanodet_m", objs) is False  # the photo is gone


def test_vectors_in_id_order_chunks_and_samples(catalog) -> None:
    catalog.add_batch([item(sha(n), f"/{n}", vec=float(n + 1)) for n in range(10)])
    chunks = list(catalog.iter_vectors(chunk=4))
    assert [len(c) for c in chunks] == [4, 4, 2] and chunks[0].matrix.shape == (4, 4)
    assert np.concatenate([c.ids for c in chunks]).tolist() == catalog.ids().tolist()
    sample = catalog.sample_ids(3, seed=1)
    assert len(sample) == 3 and sample == sorted(sample) and sample == catalog.sample_ids(3, seed=1)
    assert catalog.sample_ids(50) == catalog.ids().tolist()


def test_meta_transforms_and_locks(url, catalog) -> None:
    assert catalog.setdefault_meta("model", "first") == "first" and catalog.setdefault_meta("model", "x") == "first"
    catalog.set_metas({"a": "1", "b": "2"})
    assert catalog.meta_items("") == {"model": "first", "a": "1", "b": "2"}
    catalog.delete_meta("a")
    assert catalog.get_meta("a") is None
    v1 = catalog.add_transform("pca-whitening", 8, 100, b"\x00\x01")
    v2 = catalog.add_transform("identity", 4, 0, b"")
    assert v2 > v1 and catalog.transform(v1) == ("pca-whitening", 8, 100, b"\x00\x01")
    assert catalog.delete_transforms([v2]) == 1 and catalog.transform(v1) is None
    other = Catalog.open(url)
    with catalog.lock("relearn") as got:
        assert got
        with other.lock("relearn", wait=False) as also:
            assert not also
    with other.lock("relearn", wait=False) as got:
        assert got
    other.close()


def test_codec_is_lossless_for_the_quantised_model_and_small(embedder) -> None:
    pixels = np.stack([embedder.prepare(Image.open(photo(c, 0)).convert("RGB")) for c in ("goldfish", "lion")])
    for vec in embedder.embed(pixels):
        blob = codec.encode(vec)
        assert blob[0] == codec.UINT8_ZLIB and len(blob) < 1100  # vs 5,120 bytes of float32
        assert np.abs(codec.decode(blob) - vec).max() < 2e-6
    mixed = unit(1.3, 64) - 0.1  # negative values: not one quantised tensor
    blob = codec.encode(mixed)
    assert blob[0] == codec.FLOAT32 and np.array_equal(codec.decode(blob), mixed.astype(np.float32))
    with pytest.raises(ValueError, match="unknown embedding encoding"):
        codec.decode(b"\x09abc")


def test_a_catalog_from_before_schema_versions_is_converted(tmp_path) -> None:
    """The SQLite layout of earlier versions (hex sha256, float32 blobs, whole-path sources) keeps its ids."""
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE images (id INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL UNIQUE, label TEXT,
            width INTEGER NOT NULL, height INTEGER NOT NULL, format TEXT NOT NULL, bytes INTEGER NOT NULL,
            added_at REAL NOT NULL, has_original INTEGER NOT NULL DEFAULT 0, embedding BLOB NOT NULL);
        CREATE INDEX images_label ON images(label);
        CREATE TABLE sources (source TEXT PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images(id)
            ON DELETE CASCADE, label TEXT, size INTEGER, mtime_ns INTEGER, added_at REAL NOT NULL);
        CREATE INDEX sources_image ON sources(image_id);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE objects (image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
            label TEXT NOT NULL, score REAL NOT NULL, embedding BLOB NOT NULL, PRIMARY KEY (image_id, idx));
        CREATE TABLE detections (image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
            detector TEXT NOT NULL);
    """)  # fmt: skip
    for n in (1, 2, 7):
        old.execute("INSERT INTO images VALUES (?, ?, 'cats', 10, 20, 'JPEG', 99, 1.0, 0, ?)",
                    (n, sha(n), unit(float(n)).tobytes()))  # fmt: skip
        old.execute("INSERT INTO sources VALUES (?, ?, 'cats', 99, 5, 1.0)", (f"/p/cats/{n}.jpg", n))
    old.execute("DELETE FROM images WHERE id = 7")  # the highest id ever used stays used
    old.execute("INSERT INTO objects VALUES (2, 1, 1, 2, 3, 4, 'cat', 0.8, ?)", (unit(5.0).tobytes(),))
    old.execute("INSERT INTO detections VALUES (2, 'nanodet_m')")
    old.execute("INSERT INTO meta VALUES ('model', 'mobilenet_v2')")
    old.commit()
    old.close()
    cat = Catalog.open(f"sqlite:///{path}")
    assert cat.get_meta("model") == "mobilenet_v2" and cat.ids().tolist() == [1, 2]
    assert cat.get(2).sources == ("/p/cats/2.jpg",) and cat.get(2).sha256 == sha(2)
    assert np.allclose(cat.embedding(1), unit(1.0), atol=1e-6) and cat.objects(2)[0].label == "cat"
    assert cat.source_state("/p/cats/1.jpg")[0] == 1
    assert cat.add_batch([item(sha(9), "/p/9.jpg")]).rows[0][1] == 8
    cat.close()


def test_copy_descriptors_are_stored_with_new_photos_backfilled_and_go_with_them(catalog) -> None:
    vec = unit(3.0, 512)
    part = unit(4.0, 512)
    with_copy = dataclasses.replace(item(sha(1), "/f/1.jpg"), copy_vector=vec, part_vector=part)
    without = item(sha(2), "/f/2.jpg")
    ids = [r[1] for r in catalog.add_batch([with_copy, without]).rows]
    found = catalog.copy_vectors(ids + [424242])
    assert found.ids.tolist() == [ids[0]] and found.payloads == [whole_photo(ids[0], "a")]
    assert float(found.matrix[0] @ vec) > 0.999  # int8 with one scale: cosines move by ~0.003 at most
    centre = catalog.copy_vectors(ids, parts=True)
    assert centre.ids.tolist() == [ids[0]] and float(centre.matrix[0] @ part) > 0.999
    assert catalog.copy_vector_ids(parts=True).tolist() == [ids[0]]
    assert catalog.without_copy_vector() == [ids[1]] and catalog.count_without_copy_vector() == 1
    again = dataclasses.replace(item(sha(1), "/f/copy.jpg", vec=None), copy_vector=unit(9.0, 512))  # known bytes
    catalog.add_batch([again])
    assert float(catalog.copy_vectors([ids[0]]).matrix[0] @ vec) > 0.999  # the first photo's descriptor stays
    seq = catalog.last_seq()
    assert catalog.set_copy_vectors({ids[1]: unit(5.0, 512), 424242: vec}) == 1  # a photo gone meanwhile: skipped
    assert [(c.image_id, c.flags) for c in catalog.changes_since(seq)] == [(ids[1], COPY)]
    assert catalog.copy_vector_ids().tolist() == sorted(ids)
    # a descriptor without its centre's (stored before schema version 5) is incomplete: the backfill completes it
    assert catalog.without_copy_vector() == [ids[1]] and catalog.copy_vector_ids(parts=True).tolist() == [ids[0]]
    assert catalog.set_copy_vectors({ids[1]: unit(5.0, 512)}, {ids[1]: unit(6.0, 512)}) == 1
    assert catalog.count_without_copy_vector() == 0 and catalog.copy_vector_ids(parts=True).tolist() == sorted(ids)
    assert [c.ids.tolist() for c in catalog.iter_copy_vectors(chunk=1)] == [[ids[0]], [ids[1]]]
    catalog.remove_images([ids[0]])
    assert len(catalog.copy_vectors([ids[0]])) == 0 and catalog.copy_vector_ids().tolist() == [ids[1]]


def test_a_catalog_with_local_features_migrates_to_copy_descriptors(tmp_path) -> None:
    """Version 3 stored 10.8 KB of ORB features a photo; version 4 drops them (copies are checked from the
    thumbnails) and starts an empty copy_vectors table that `lookalike copies` fills."""
    path = tmp_path / "c.sqlite"
    cat = Catalog.open(f"sqlite:///{path}")
    image_id = cat.add_batch([item(sha(1), "/f/1.jpg")]).rows[0][1]
    cat.close()
    with sqlite3.connect(path) as c:  # back to version 3, as an earlier Lookalike left it
        c.execute("DROP TABLE copy_vectors")
        c.execute("CREATE TABLE features (image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE, "
                  "data BLOB NOT NULL)")  # fmt: skip
        c.execute("INSERT INTO features VALUES (?, ?)", (image_id, b"\x01" * 10_000))
        c.execute("ALTER TABLE images DROP COLUMN fields")  # version 7's
        c.execute("ALTER TABLE sources DROP COLUMN fields")
        c.execute("ALTER TABLE removed DROP COLUMN size")  # version 10's
        c.execute("DELETE FROM schema_migrations WHERE version >= 4")
    cat = Catalog.open(f"sqlite:///{path}")
    with sqlite3.connect(path) as c:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "features" not in tables and "copy_vectors" in tables
    assert cat.without_copy_vector() == [image_id] and cat.ids().tolist() == [image_id]
    cat.close()


def test_centres_pooled_before_version_8_are_dropped_for_the_backfill(tmp_path) -> None:
    """Version 8 describes a photo's centre from its pixels: the pooled centres stored before are dropped (the whole
    photo's descriptor stays), so the photos are incomplete until `lookalike copies` describes their centres again."""
    path = tmp_path / "c.sqlite"
    cat = Catalog.open(f"sqlite:///{path}")
    vec, part = unit(3.0, 512), unit(4.0, 512)
    image_id = cat.add_batch([dataclasses.replace(item(sha(1), "/f/1.jpg"), copy_vector=vec, part_vector=part)]
                             ).rows[0][1]  # fmt: skip
    assert cat.count_without_copy_vector() == 0
    cat.close()
    with sqlite3.connect(path) as c:  # back to version 7, as the last Lookalike left it: the pooled centre in 'part'
        c.execute("UPDATE copy_vectors SET part = centre")
        c.execute("ALTER TABLE copy_vectors DROP COLUMN centre")
        c.execute("ALTER TABLE removed DROP COLUMN size")  # version 10's
        c.execute("DELETE FROM schema_migrations WHERE version >= 8")
    cat = Catalog.open(f"sqlite:///{path}")
    assert cat.without_copy_vector() == [image_id] and cat.copy_vector_ids(parts=True).tolist() == []
    assert float(cat.copy_vectors([image_id]).matrix[0] @ vec) > 0.999
    with sqlite3.connect(path) as c:  # the pooled centre's bytes are freed
        assert c.execute("SELECT part FROM copy_vectors").fetchall() == [(None,)]
    # the backfill gives the centre alone: the whole descriptor stays as it was
    assert cat.set_copy_vectors({}, {image_id: unit(7.0, 512)}) == 1
    assert cat.count_without_copy_vector() == 0 and float(cat.copy_vectors([image_id]).matrix[0] @ vec) > 0.999
    assert float(cat.copy_vectors([image_id], parts=True).matrix[0] @ unit(7.0, 512)) > 0.999
    cat.close()


def test_removals_recorded_before_version_10_still_hold(tmp_path) -> None:
    """Version 10 keeps a removed file's size (another file under its name is indexed); a removal recorded before
    has none, and still leaves its file out."""
    path = tmp_path / "c.sqlite"
    cat = Catalog.open(f"sqlite:///{path}")
    image_id = cat.add_batch([item(sha(1), "/f/1.jpg")]).rows[0][1]
    cat.remove_images([image_id], remember=True)
    assert cat.removed_sizes(["/f/1.jpg"]) == {"/f/1.jpg": item(sha(1), "/f/1.jpg").size}
    cat.close()
    with sqlite3.connect(path) as c:
        c.execute("ALTER TABLE removed DROP COLUMN size")
        c.execute("DELETE FROM schema_migrations WHERE version >= 10")
    cat = Catalog.open(f"sqlite:///{path}")
    assert cat.removed_sizes(["/f/1.jpg"]) == {"/f/1.jpg": None}  # still removed: a removal without its size
    cat.close()


def test_a_newer_schema_is_refused(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    Catalog.open(url).close()
    with sqlite3.connect(tmp_path / "c.sqlite") as c:
        c.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', 0)", (LATEST + 1,))
    with pytest.raises(RuntimeError, match="newer than this Lookalike"):
        Catalog.open(url)


def test_an_unreachable_database_names_the_setting(tmp_path) -> None:
    with pytest.raises(DatabaseError, match="LOOKALIKE_DATABASE_URL") as err:
        Catalog.open(f"postgresql://someone:secret@/nowhere?host={tmp_path}&connect_timeout=2")
    assert "secret" not in str(err.value)
    with pytest.raises(DatabaseError, match="must start with postgresql"):
        Catalog.open("mysql://x/y")


def test_a_read_waits_out_a_database_that_blinks_only_when_asked(own_pg) -> None:
    """A command's catalog (``read_patience``) reads through a restart, as its writes do; the service's answers
    CatalogUnavailable at once (a 503). A 0.2 s restart used to end a 1,000-photo `lookalike index` run."""
    url = own_pg.create_database()
    waiting, at_once = Catalog.open(url, read_patience=60.0), Catalog.open(url)
    back = threading.Timer(1.5, own_pg.resume)
    try:
        waiting.add_batch([item(sha(1), "/s/1.jpg")])
        assert waiting.count() == 1 and at_once.count() == 1
        own_pg.pause()  # every pooled connection is cut, and nothing answers until resume()
        with pytest.raises(CatalogUnavailable):
            at_once.count()
        back.start()
        start = time.monotonic()
        assert waiting.count() == 1 and waiting.ids_for_shas([sha(1), sha(2)]).keys() == {sha(1)}
        assert time.monotonic() - start >= 1.0  # it did wait for the server
        assert at_once.count() == 1  # and the other catalog works again without being opened again
    finally:
        if back.ident is not None:
            back.join()
        waiting.close()
        at_once.close()


def test_a_lock_whose_session_a_restart_ended_says_so(own_pg) -> None:
    """PostgreSQL releases an advisory lock with its session: after a restart another process may take it while
    its holder, whose reads now ride the restart out, carries on (review). ``check()`` tells the holder before it
    does what only the lock allows; leaving the lost lock is no error."""
    cat = Catalog.open(own_pg.create_database(), read_patience=60.0)
    try:
        with cat.lock("relearn", wait=False) as held:
            assert held
            held.check()
            own_pg.restart()
            assert cat.count() == 0  # the holder's reads go on
            with pytest.raises(LockLost, match="relearn"):
                held.check()
        with cat.lock("relearn", wait=False) as again:
            assert again
            again.check()
    finally:
        cat.close()


def test_sizes_are_reported(catalog) -> None:
    catalog.add_batch([item(sha(n), f"/s/{n}.jpg") for n in range(20)])
    sizes = catalog.table_bytes()
    assert sizes["images"] > 0 and sizes["sources"] > 0 and catalog.disk_bytes() >= sizes["images"]


def test_local_image_store_roundtrip(tmp_path) -> None:
    store = LocalImageStore(tmp_path / "images")
    digest = "ab" * 32
    store.put("thumbnail", digest, b"jpeg")
    assert store.exists("thumbnail", digest) and store.get("thumbnail", digest) == b"jpeg"
    assert store.path("thumbnail", digest).parent.name == "ab"
    store.delete("thumbnail", digest)
    assert store.get("thumbnail", digest) is None
    with pytest.raises(ValueError):
        store.put("original", "../../etc/passwd", b"x")


def test_writes_wait_for_each_other_instead_of_failing(url) -> None:
    """A long write transaction in one process makes another writer wait, not error (SQLite busy, PG locks)."""
    a, b = Catalog.open(url), Catalog.open(url)
    inside, ending = threading.Event(), threading.Event()

    def slow_write() -> None:
        with a.db.write() as conn:
            a._feed(conn, [(1, PHOTO)])
            inside.set()  # the transaction holds its write now
            time.sleep(1.0)  # a long transaction
            ending.set()  # set before the commit: a write that waited for it can only end after this

    t = threading.Thread(target=slow_write)
    t.start()
    assert inside.wait(30)
    b.add_batch([item(sha(1), "/w/1.jpg")])  # waits for a's transaction, then succeeds
    assert ending.is_set() and b.count() == 1
    t.join()
    a.close()
    b.close()


def test_relabelled_sources_decide_the_photo_label(catalog) -> None:
    a = catalog.add_batch([item(sha(1), "/r/x/1.jpg", label="x")]).rows[0][1]
    catalog.add_batch([item(sha(1), "/r/y/1.jpg", label="y", vec=None)])  # a copy, labelled differently
    last = catalog.last_seq()
    assert catalog.relabel_sources({"/r/y/1.jpg": None}) == []  # the photo keeps the oldest source's label
    assert catalog.relabel_sources({"/r/x/1.jpg": None, "/unknown/1.jpg": "z"}) == [a]
    assert catalog.get(a).label is None and catalog.relabel_sources({"/r/y/1.jpg": "why"}) == [a]
    assert catalog.get(a).label == "why"
    assert [(c.image_id, c.flags) for c in catalog.changes_since(last)] == [(a, PHOTO | OBJECTS)] * 2


def test_sources_a_user_removed_are_remembered_until_forgotten(catalog) -> None:
    rows = catalog.add_batch([item(sha(1), "/f/a.jpg"), item(sha(2), "/f/b.jpg"), item(sha(3), "/g/c.jpg")]).rows
    ids = {row.source: image_id for row, image_id, _ in rows}
    catalog.add_batch([item(sha(1), "/g/a-again.jpg")])  # the same bytes under a second name: one image, 2 sources
    catalog.remove_images([ids["/f/b.jpg"]])  # pruned or replaced: not the user's choice, not remembered
    asked = ["/f/a.jpg", "/f/b.jpg", "/g/a-again.jpg", "/g/c.jpg", "/h/new.jpg"]
    assert set(catalog.removed_sizes(asked)) == set()
    assert [r.id for r in catalog.remove_images([ids["/f/a.jpg"]], remember=True)] == [ids["/f/a.jpg"]]
    assert set(catalog.removed_sizes(asked)) == {"/f/a.jpg", "/g/a-again.jpg"}  # every path the photo had
    catalog.remove_images([ids["/f/a.jpg"]], remember=True)  # gone already: nothing changes, no error
    assert catalog.forget_removed(["/f/a.jpg", "/h/new.jpg"]) == 1
    assert set(catalog.removed_sizes(asked)) == {"/g/a-again.jpg"}
    assert catalog.source_states(asked).keys() == {"/g/c.jpg"}


def test_fields_are_stored_merged_from_sources_and_changed_in_place(catalog) -> None:
    """A photo's record: its first source's fields; another source's merge in key by key; a source whose fields
    changed (a corrected CSV row) replaces what it gave before; ``set_fields`` changes it by hand. Every change is
    in the feed (payloads change), the embedding never."""
    first = dataclasses.replace(item(sha(70), "/shop/a.jpg"), fields={"title": "Mug", "price": 12.5, "tags": ["red"]})
    image_id = catalog.add_batch([first]).rows[0][1]
    assert catalog.get(image_id).fields == {"title": "Mug", "price": 12.5, "tags": ["red"]}
    assert catalog.source_state("/shop/a.jpg").fields == '{"price":12.5,"tags":["red"],"title":"Mug"}'
    seq = catalog.last_seq()
    # the same bytes from a second source, with a record of its own: merged, the newer value wins
    other = dataclasses.replace(item(sha(70), "/other/b.jpg", vec=None), fields={"price": 11.0, "brand": "Acme"})
    catalog.add_batch([other])
    assert catalog.get(image_id).fields == {"title": "Mug", "price": 11.0, "tags": ["red"], "brand": "Acme"}
    assert [(c.image_id, c.flags) for c in catalog.changes_since(seq)] == [(image_id, PHOTO | OBJECTS)]
    # the first source's row corrected: the tag it no longer gives goes, the price it gives now is set
    assert catalog.refield_sources({"/shop/a.jpg": {"title": "Mug", "price": 9.0}}) == [image_id]
    assert catalog.get(image_id).fields == {"title": "Mug", "price": 9.0, "brand": "Acme"}
    assert catalog.refield_sources({"/shop/a.jpg": {"title": "Mug", "price": 9.0}}) == []  # the same: no change
    # by hand: a null removes, a new key is added; a bad record is refused whole
    seq = catalog.last_seq()
    assert catalog.set_fields(image_id, {"brand": None, "stock": 3}).fields == {"title": "Mug", "price": 9.0,
                                                                                "stock": 3}  # fmt: skip
    assert [c.flags for c in catalog.changes_since(seq)] == [PHOTO | OBJECTS]
    with pytest.raises(ValueError, match="field name"):
        catalog.set_fields(image_id, {"bad name": 1})
    assert catalog.get(image_id).fields == {"title": "Mug", "price": 9.0, "stock": 3}
    assert catalog.set_fields(10**9, {"a": 1}) is None
    assert np.allclose(catalog.embedding(image_id), unit(1.0), atol=0.01)
    # a photo without fields has an empty record
    plain = catalog.add_batch([item(sha(71), "/shop/c.jpg")]).rows[0][1]
    assert catalog.get(plain).fields == {} and catalog.source_state("/shop/c.jpg").fields is None


def test_the_field_summary_says_what_a_filter_bar_offers(catalog) -> None:
    records = [{"brand": "Arla", "price": 12.5, "tags": ["milk", "organic"], "organic": True},
               {"brand": "Valio", "price": 3, "tags": ["milk"]},
               {"brand": "Arla", "price": "n/a", "title": "x"},
               {"title": "y", "code": 7},
               {"tags": "milk", "price": 20}]  # text where the others have lists  # fmt: skip
    catalog.add_batch([dataclasses.replace(item(sha(80 + n), f"/s/{n}.jpg"), fields=r) for n, r in enumerate(records)])
    catalog.add_batch([item(sha(90), "/s/none.jpg")])  # no record
    got = {f.name: f.as_dict() for f in catalog.field_summary()}
    assert got["brand"] == {"name": "brand", "photos": {"text": 3}, "min": None, "max": None,
                            "values": {"Arla": 2, "Valio": 1}, "items": [], "texts": ["Arla", "Valio"]}  # fmt: skip
    assert got["price"]["photos"] == {"num": 3, "text": 1} and (got["price"]["min"], got["price"]["max"]) == (3, 20)
    # a field that is a list in some photos and text in others: which strings are which (the bar's = or contains)
    assert got["tags"]["photos"] == {"list": 2, "text": 1} and got["tags"]["values"] == {"milk": 3, "organic": 1}
    assert got["tags"]["items"] == ["milk", "organic"] and got["tags"]["texts"] == ["milk"]
    assert got["organic"]["photos"] == {"flag": 1} and got["code"]["min"] == got["code"]["max"] == 7
    assert sorted(got) == ["brand", "code", "organic", "price", "tags", "title"]


def test_a_key_one_source_stops_giving_stays_while_another_source_gives_it(catalog) -> None:
    """The record is rebuilt from the photo's sources: a key a corrected row no longer gives takes another source's
    value (the newest source's) and goes only when no source gives it; a value that is not the corrected source's
    (another source's, a hand edit) stays."""
    a = dataclasses.replace(item(sha(100), "/m/a.jpg"), fields={"brand": "Acme", "color": "red", "size": 1})
    image_id = catalog.add_batch([a]).rows[0][1]
    b = dataclasses.replace(item(sha(100), "/n/b.jpg", vec=None), fields={"brand": "Acme", "color": "blue"})
    c = dataclasses.replace(item(sha(100), "/o/c.jpg", vec=None), fields={"color": "green"})
    catalog.add_batch([b])
    catalog.add_batch([c])
    assert catalog.get(image_id).fields == {"brand": "Acme", "color": "green", "size": 1}
    # c's row stops giving color: the newest other source that gives it (b, after a) decides
    assert catalog.refield_sources({"/o/c.jpg": {}}) == [image_id]
    assert catalog.get(image_id).fields == {"brand": "Acme", "color": "blue", "size": 1}
    # a's row stops giving brand and color: b still gives brand, so it stays; the photo's color is not a's: it stays
    assert catalog.refield_sources({"/m/a.jpg": {"size": 1}}) == []
    assert catalog.get(image_id).fields == {"brand": "Acme", "color": "blue", "size": 1}
    # b stops giving both: no source gives them any more, they go
    assert catalog.refield_sources({"/n/b.jpg": {}}) == [image_id]
    assert catalog.get(image_id).fields == {"size": 1}
    # a hand edit wins over the sources until that source's row changes
    catalog.set_fields(image_id, {"size": 5})
    assert catalog.refield_sources({"/m/a.jpg": {}}) == []  # 5 is not a's earlier 1: it stays
    assert catalog.get(image_id).fields == {"size": 5}


def test_concurrent_edits_of_one_record_lose_nothing(catalog) -> None:
    """Writers merging into one photo's record at once (two PATCHes, a worker's re-run beside a hand edit) each
    read it under a lock: on PostgreSQL, without one, a writer's keys were lost between another's read and write."""
    image_id = catalog.add_batch([item(sha(95), "/r/1.jpg")]).rows[0][1]

    def edit(prefix: str) -> None:
        for n in range(15):
            catalog.set_fields(image_id, {f"{prefix}{n}": n})

    threads = [threading.Thread(target=edit, args=(p,)) for p in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(catalog.get(image_id).fields) == 45


def test_a_record_that_does_not_fit_beside_another_sources_is_left_out_not_fatal(catalog) -> None:
    first = dataclasses.replace(item(sha(96), "/r/a.jpg"), fields={f"a{i}": i for i in range(40)})
    image_id = catalog.add_batch([first]).rows[0][1]
    second = dataclasses.replace(item(sha(96), "/r/b.jpg", vec=None), fields={f"b{i}": i for i in range(40)})
    other = item(sha(97), "/r/c.jpg")
    result = catalog.add_batch([second, other])  # 80 fields would be too many: the photo keeps its 40
    assert len(result.rows) == 2 and catalog.get(image_id).fields == first.fields
    assert catalog.refield_sources({"/r/b.jpg": {f"c{i}": i for i in range(40)}}) == []
