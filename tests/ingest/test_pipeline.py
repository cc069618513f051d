"""Indexing end to end on real photos: incremental re-runs, duplicates, changes, bad input, interruption."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lookalike.config import Settings
from lookalike.ingest.pipeline import EMPTY_ROOT, TWICE, TWIN_REMOVED
from lookalike.ingest.sources import INSIDE_LIBRARY, LIBRARY_FOLDER, LIBRARY_MARKER, OTHER_LIBRARY
from lookalike.library import Library
from tests.badfiles import salt
from tests.conftest import MODELS, TOWHEE, photo


def consistent(lib: Library) -> None:
    """Catalog, vector index and thumbnails agree."""
    ids = lib.catalog.ids()
    assert sorted(lib.vectors.ids().tolist()) == ids.tolist()
    for i in ids.tolist():
        rec = lib.catalog.get(i)
        assert rec.sources and lib.images.exists("thumbnail", rec.sha256)
    n_sha = len({rec.sha256 for rec in lib.catalog.get_many(ids).values()})
    assert n_sha == len(ids)


@pytest.fixture
def lib(settings: Settings, embedder):
    with Library(settings, embedder=embedder) as library:
        yield library


def test_index_folder_then_search_finds_the_class(lib: Library, photo_dir: Path) -> None:
    report = lib.index([str(photo_dir)])
    assert len(report.added) == 12 and not report.rejected and not report.duplicates
    assert lib.catalog.labels() == {"goldfish": 4, "tiger_cat": 4, "bullet_train": 4}
    result = lib.search(str(photo("goldfish", 0, "test")), k=4)
    assert [h.label for h in result.hits[:3]] == ["goldfish"] * 3
    assert result.query["width"] > 0
    consistent(lib)


def test_second_run_skips_everything_without_decoding(lib: Library, photo_dir: Path, monkeypatch) -> None:
    lib.index([str(photo_dir)])

    def no_decode(*a, **k):
        raise AssertionError("an unchanged file was decoded")

    monkeypatch.setattr("lookalike.models.loaded.decode", no_decode)
    monkeypatch.setattr("lookalike.ingest.reading.read_file", no_decode)
    again = lib.index([str(photo_dir)])
    assert again.unchanged == 12 and not again.added and not again.rejected and not again.duplicates


def test_changed_file_is_re_embedded_and_old_version_dropped(lib: Library, photo_dir: Path) -> None:
    lib.index([str(photo_dir)])
    target = next((photo_dir / "goldfish").iterdir())
    old_id = lib.catalog.source_state(str(target))[0]
    shutil.copy(photo("bullet_train", 7), target)  # new content at the same path
    report = lib.index([str(photo_dir)])
    assert report.updated == 1 and report.unchanged == 11
    new_id = lib.catalog.source_state(str(target))[0]
    assert new_id != old_id and lib.catalog.get(old_id) is None and lib.catalog.count() == 12
    hit = lib.search(str(photo("bullet_train", 7)), k=1).hits[0]
    assert hit.id == new_id and hit.similarity > 0.999
    consistent(lib)


def test_exact_duplicates_are_stored_once_and_reported(lib: Library, photo_dir: Path) -> None:
    src = next((photo_dir / "goldfish").iterdir())
    (photo_dir / "copies").mkdir()
    shutil.copy(src, photo_dir / "copies" / "same.jpg")
    shutil.copy(src, photo_dir / "copies" / "again.jpg")
    report = lib.index([str(photo_dir)])
    assert len(report.added) == 12 and len(report.duplicates) == 2
    assert {d.image_id for d in report.duplicates} == {lib.catalog.source_state(str(src))[0]}
    rec = lib.catalog.get(report.duplicates[0].image_id)
    assert len(rec.sources) == 3 and lib.catalog.count() == 12
    consistent(lib)


def test_known_bytes_are_asked_once_per_chunk_of_photos(settings, embedder, photo_dir: Path, monkeypatch) -> None:
    """The catalog is asked which photos it holds once per chunk a worker takes (issue #29), not once per photo;
    and never for more than ``GROUP_BYTES`` of photos at once (what a worker holds in memory)."""
    from lookalike.ingest import pipeline
    from lookalike.store.catalog import Catalog

    asked: list[int] = []
    real = Catalog.ids_for_shas

    def counted(self, shas):
        shas = list(shas)
        asked.append(len(shas))
        return real(self, shas)

    monkeypatch.setattr(Catalog, "ids_for_shas", counted)
    src = next((photo_dir / "goldfish").iterdir())
    shutil.copy(src, photo_dir / "goldfish" / "same.jpg")  # 13 photos; the copy's bytes are known by the rerun
    one = settings.model_copy(update={"workers": 1})
    with Library(one, embedder=embedder) as lib:
        report = lib.index([str(photo_dir)])
        assert len(report.added) + len(report.duplicates) == 13 and len(report.duplicates) == 1
        assert asked == [3, 3, 3, 3, 1]  # chunks of 13 // 4 photos
        asked.clear()
        (photo_dir / "goldfish" / "same.jpg").unlink()
        shutil.copy(src, photo_dir / "goldfish" / "again.jpg")  # a new path to known bytes: not embedded again
        monkeypatch.setattr(pipeline, "GROUP_BYTES", 1)
        monkeypatch.setattr(lib.models, "prepare_pixels", lambda data: pytest.fail("known bytes were decoded"))
        report = lib.index([str(photo_dir)])
        assert asked == [1] and [d.image_id for d in report.duplicates] == [lib.catalog.source_state(str(src))[0]]
    monkeypatch.setattr(pipeline, "GROUP_BYTES", 1)
    asked.clear()
    with Library(one.model_copy(update={"home": settings.home.parent / "other"}), embedder=embedder) as lib:
        assert len(lib.index([str(photo_dir)]).added) == 12 and asked == [1] * 13  # one photo at a time


def test_vanished_files_are_reported_and_pruned_on_request(lib: Library, photo_dir: Path) -> None:
    lib.index([str(photo_dir)])
    gone = sorted((photo_dir / "tiger_cat").iterdir())[:2]
    for g in gone:
        g.unlink()
    report = lib.index([str(photo_dir)])
    assert sorted(report.vanished) == sorted(map(str, gone)) and lib.catalog.count() == 12
    report = lib.index([str(photo_dir)], prune=True)
    assert report.pruned == 2 and lib.catalog.count() == 10
    consistent(lib)


def test_a_folder_that_cannot_be_listed_is_reported_and_its_photos_are_never_pruned(
    lib: Library, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder the walk cannot list (a permission change, a network file system's hiccup) is a rejected item with
    the reason, and the photos indexed below it are neither vanished nor pruned: they come back unchanged once it
    can be listed again. (Root lists any folder whatever its mode, so as root the failure is injected where the
    walk lists the folder.)"""
    lib.index([str(photo_dir)])
    locked = photo_dir / "tiger_cat"
    if os.geteuid() == 0:
        listing = os.scandir

        def scandir(path=".", *args):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return listing(path, *args)

        monkeypatch.setattr(os, "scandir", scandir)
    else:
        locked.chmod(0)
    try:
        report = lib.index([str(photo_dir)], prune=True)
    finally:
        monkeypatch.undo()
        locked.chmod(0o755)
    assert report.vanished == [] and report.pruned == 0 and lib.catalog.count() == 12
    assert [(r.source, r.reason) for r in report.rejected] == [
        (str(locked) + os.sep, "cannot list the folder: Permission denied")
    ]
    again = lib.index([str(photo_dir)])
    assert again.unchanged == 12 and again.rejected == []
    consistent(lib)


def test_files_the_walk_skips_but_still_there_are_never_pruned(lib: Library, photo_dir: Path, tmp_path: Path) -> None:
    """`index --prune` of a folder pruned photos whose files were still where they were indexed: a hidden file or
    a photo with another suffix named on its own (the walk of the folder skips them), and the photos of a
    sub-folder moved to another disk and linked back (the walk never follows links). Only what is gone goes."""
    hidden, odd = photo_dir / "goldfish" / ".hidden.jpg", photo_dir / "goldfish" / "scan.txt"
    shutil.copy(photo("pizza", 0), hidden)
    shutil.copy(photo("pizza", 1), odd)
    lib.index([str(photo_dir)])
    assert len(lib.index([str(hidden), str(odd)]).added) == 2 and lib.catalog.count() == 14
    moved = tmp_path / "other-disk" / "tiger_cat"
    moved.parent.mkdir()
    (photo_dir / "tiger_cat").rename(moved)
    (photo_dir / "tiger_cat").symlink_to(moved)
    report = lib.index([str(photo_dir)], prune=True)
    assert report.vanished == [] and report.pruned == 0 and lib.catalog.count() == 14
    hidden.unlink()
    (photo_dir / "tiger_cat").unlink()  # the link gone: its photos are gone from this folder
    report = lib.index([str(photo_dir)], prune=True)
    assert report.pruned == 5 and sorted(report.vanished) == sorted([str(hidden)] + [
        str(photo_dir / "tiger_cat" / p.name) for p in moved.iterdir()])  # fmt: skip
    assert lib.catalog.count() == 9
    consistent(lib)


def test_a_library_inside_the_folder_it_indexes_never_indexes_itself(settings, embedder, photo_dir: Path) -> None:
    """`--home photos/library index photos` indexed the library's own thumbnails on every run (then thumbnails of
    thumbnails) and rejected its database and lock files each time: a library's folder is never walked into."""
    inside = settings.model_copy(update={"home": photo_dir / "library"})
    with Library(inside, embedder=embedder) as lib:
        first = lib.index([str(photo_dir)])
        assert len(first.added) == 12 and first.rejected == []
        again = lib.index([str(photo_dir)], prune=True)
        assert again.unchanged == 12 and again.added == [] and again.rejected == [] and lib.catalog.count() == 12
        alone = lib.index([str(photo_dir / "library")])
        assert [(r.source, r.reason) for r in alone.rejected] == [(str(photo_dir / "library") + os.sep, LIBRARY_FOLDER)]
        below = photo_dir / "library" / "images"  # a folder inside it: its thumbnails were indexed (review)
        assert [r.reason for r in lib.index([str(below)]).rejected] == [INSIDE_LIBRARY]
        # a thumbnail indexed from inside it (as every run did before): pruned, though its file is still there
        thumb = next((photo_dir / "library" / "images" / "thumbnails").rglob("*.jpg"))
        assert len(lib.index([str(thumb)]).added) == 1 and lib.catalog.count() == 13  # new bytes: a photo
        again = lib.index([str(photo_dir)], prune=True)
        assert again.vanished == [str(thumb)] and again.pruned == 1 and lib.catalog.count() == 12
        consistent(lib)


def test_a_marker_left_in_a_folder_of_photos_is_said_and_prunes_nothing(lib: Library, photo_dir: Path) -> None:
    """A `.lookalike-library` marker in a folder of photos (a library once kept there, a folder copied from one)
    made every walk skip that folder without a word, and `--prune` then dropped all the photos indexed from it.
    Now the folder is a rejected item saying why, and what was indexed below it is kept."""
    lib.index([str(photo_dir)])
    assert lib.catalog.count() == 12
    marked = photo_dir / "goldfish"
    (marked / LIBRARY_MARKER).write_text("")
    report = lib.index([str(photo_dir)], prune=True)
    assert [(r.source, r.reason) for r in report.rejected] == [(str(marked) + os.sep, OTHER_LIBRARY)]
    assert report.vanished == [] and report.pruned == 0 and lib.catalog.count() == 12
    # a new photo put there is not indexed, but the run says why (above); the running library's own folder is
    # still walked past in silence (test_a_library_inside_the_folder_it_indexes_never_indexes_itself)
    shutil.copy(next((photo_dir / "tiger_cat").iterdir()), marked / "new.jpg")
    again = lib.index([str(photo_dir)], prune=True)
    assert again.added == [] and [r.source for r in again.rejected] == [str(marked) + os.sep]
    assert lib.catalog.count() == 12
    consistent(lib)


def test_a_renamed_folder_gives_its_photos_its_new_name(lib: Library, photo_dir: Path) -> None:
    """`mv apiary bees` then `index --prune`: the photos kept the old folder's label for good (a known photo took a
    label only when it had none, and pruning the old paths never looked again): searches by the new label found
    nothing (hostile probe). Pruned sources give their photos the label of the sources left."""
    lib.index([str(photo_dir)])
    (photo_dir / "goldfish").rename(photo_dir / "carp")
    report = lib.index([str(photo_dir)], prune=True)
    assert report.pruned == 0 and len(report.vanished) == 4 and lib.catalog.count() == 12
    assert lib.catalog.labels() == {"carp": 4, "tiger_cat": 4, "bullet_train": 4}
    assert [h.label for h in lib.search(str(photo("goldfish", 0)), k=4, label="carp").hits] == ["carp"] * 4
    assert lib.search(str(photo("goldfish", 0)), k=4, label="goldfish").hits == []
    consistent(lib)


def test_a_photo_losing_a_path_to_new_bytes_takes_the_label_of_its_other_paths(lib: Library, tmp_path: Path) -> None:
    """The same photo as cats/a.jpg and dogs/b.jpg is labelled cats (its oldest path's); new bytes written over
    cats/a.jpg move that path to a new photo, and the photo, whose only file is now dogs/b.jpg, kept "cats" (review)."""
    root = tmp_path / "pets"
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    shutil.copy(photo("goldfish", 0), root / "cats" / "a.jpg")
    lib.index([str(root)])
    shutil.copy(photo("goldfish", 0), root / "dogs" / "b.jpg")
    lib.index([str(root)])
    shared = lib.catalog.id_for_sha(hashlib.sha256(photo("goldfish", 0).read_bytes()).hexdigest())
    assert lib.catalog.get(shared).label == "cats"
    shutil.copy(photo("tiger_cat", 0), root / "cats" / "a.jpg")
    report = lib.index([str(root)])
    assert report.updated == 1 and lib.catalog.get(shared).label == "dogs"
    assert lib.catalog.labels() == {"cats": 1, "dogs": 1}
    assert [h.id for h in lib.search(str(photo("goldfish", 0)), k=1, label="dogs").hits] == [shared]
    consistent(lib)


def test_a_file_listed_twice_with_other_records_is_reported(lib: Library, photo_dir: Path, tmp_path: Path) -> None:
    """A CSV naming one file twice, with another label or record, silently used the first row: the second is now
    a rejected item saying so (the same row twice says nothing)."""
    one = sorted((photo_dir / "goldfish").iterdir())[0]
    sheet = tmp_path / "records.csv"
    sheet.write_text(f"path,label,price\n{one},fish,1\n{one},fish,1\n{one},carp,2\n")
    report = lib.index([str(sheet)])
    assert len(report.added) == 1 and [(r.source, r.reason) for r in report.rejected] == [(str(one), TWICE)]
    rec = lib.catalog.get(report.added[0])
    assert rec.label == "fish" and rec.fields == {"price": 1}


def test_a_folder_named_inside_another_is_not_a_file_listed_twice(lib: Library, photo_dir: Path) -> None:
    """Two walks give a file two labels (its folder's, none): not a record listed twice (a review)."""
    report = lib.index([str(photo_dir), str(photo_dir / "goldfish")])
    assert len(report.added) == 12 and report.rejected == []


def test_a_folder_that_lists_nothing_is_never_pruned(lib: Library, photo_dir: Path) -> None:
    """An unmounted disk leaves its mount point empty: `index DISK --prune` emptied the library of it (fields set by
    hand and all) and said only "nothing to index". A folder that lists no file at all is reported instead, its
    photos kept, and so is a sub-folder that lists nothing (a disk mounted there); one deleted is pruned as before,
    and `--prune-empty` prunes an emptied one."""
    lib.index([str(photo_dir)])
    moved = photo_dir.with_name("photos.unmounted")
    photo_dir.rename(moved)
    photo_dir.mkdir()
    report = lib.index([str(photo_dir)], prune=True)
    assert report.pruned == 0 and lib.catalog.count() == 12
    assert len(report.vanished) == 12 and sorted(report.kept) == sorted(report.vanished)
    assert [(r.source, r.reason) for r in report.rejected] == [(str(photo_dir) + os.sep, EMPTY_ROOT.format(n=12))]
    photo_dir.rmdir()
    moved.rename(photo_dir)
    assert lib.index([str(photo_dir)]).unchanged == 12
    # a disk mounted at a sub-folder, unplugged: its mount point lists nothing; that sub-folder was pruned (probe)
    mounted = photo_dir / "tiger_cat"
    mounted.rename(moved)
    mounted.mkdir()
    report = lib.index([str(photo_dir)], prune=True)
    assert report.pruned == 0 and lib.catalog.count() == 12 and len(report.kept) == 4
    assert [(r.source, r.reason) for r in report.rejected] == [(str(mounted) + os.sep, EMPTY_ROOT.format(n=4))]
    mounted.rmdir()
    moved.rename(mounted)
    shutil.rmtree(photo_dir / "goldfish")  # a part of a folder that lists photos: gone for good
    report = lib.index([str(photo_dir)], prune=True)
    assert report.pruned == 4 and report.kept == [] and report.rejected == [] and lib.catalog.count() == 8
    (photo_dir / "bullet_train").rename(moved)
    (photo_dir / "bullet_train").mkdir()  # emptied on purpose, said so
    report = lib.index([str(photo_dir)], prune=True, prune_empty=True)
    assert report.pruned == 4 and report.rejected == [] and lib.catalog.count() == 4
    consistent(lib)


def test_a_folder_holding_only_a_removed_file_is_not_said_to_list_nothing(lib: Library, photo_dir: Path) -> None:
    """Files removed with `lookalike remove` are left out of a run's listing, but they are there: a folder holding
    one of them and photos since deleted was said to "list no files", and its deleted photos were kept (review)."""
    lib.index([str(photo_dir)])
    files = sorted((photo_dir / "goldfish").iterdir())
    lib.remove([lib.catalog.id_for_sha(hashlib.sha256(files[0].read_bytes()).hexdigest())])
    for f in files[1:]:
        f.unlink()
    report = lib.index([str(photo_dir)], prune=True)
    assert report.excluded == [str(files[0])] and report.rejected == [] and report.pruned == 3
    assert lib.catalog.count() == 8
    consistent(lib)


def test_a_file_name_that_is_not_utf8_is_rejected_alone(lib: Library, photo_dir: Path) -> None:
    """A name of bytes that are not UTF-8 (Python keeps them as lone surrogates, which no database takes) is a
    rejected item with its name escaped; the other photos of the run and of its batch are indexed."""
    bad = os.fsencode(photo_dir / "goldfish") + b"/bad\xffname.jpg"
    shutil.copy(photo("goldfish", 3), os.fsdecode(bad))
    report = lib.index([str(photo_dir)])
    assert len(report.added) == 12
    assert [(r.source, r.reason) for r in report.rejected] == [
        (str(photo_dir / "goldfish") + "/bad\\xffname.jpg", "the file's name is not valid UTF-8")
    ]
    assert lib.index([str(photo_dir)]).unchanged == 12
    consistent(lib)


def test_a_folder_or_argument_that_is_not_utf8_is_rejected_not_a_crash(lib: Library, photo_dir: Path) -> None:
    """A sub-folder whose name is not UTF-8 is one rejected item (its photos cannot be stored under that path), and
    nothing below it is vanished; the same folder or one of its photos named on the command line is a clear
    error. Both crashed the run at the catalog's first write."""
    from lookalike.ingest.sources import NOT_UTF8_FOLDER, SourceError

    bad = os.fsdecode(os.fsencode(photo_dir) + b"/bad\xffshelf")
    os.mkdir(bad)
    shutil.copy(photo("goldfish", 3), os.path.join(bad, "fish.jpg"))
    report = lib.index([str(photo_dir)], prune=True)
    assert len(report.added) == 12 and report.vanished == []
    assert [(r.source, r.reason) for r in report.rejected] == [(str(photo_dir) + "/bad\\xffshelf/", NOT_UTF8_FOLDER)]
    for arg in (bad, os.path.join(bad, "fish.jpg")):
        with pytest.raises(SourceError, match="the path is not valid UTF-8"):
            lib.index([arg])
    assert lib.index([str(photo_dir)]).unchanged == 12
    consistent(lib)


def test_a_path_too_long_is_a_clear_error(lib: Library, tmp_path: Path) -> None:
    from lookalike.ingest.sources import SourceError

    with pytest.raises(SourceError, match="cannot be read: File name too long"):
        lib.index([str(tmp_path / ("a" * 300))])


def test_salted_folder_rejects_each_bad_file_with_a_reason(lib: Library, photo_dir: Path) -> None:
    expected = salt(photo_dir / "junk")
    report = lib.index([str(photo_dir)])
    assert len(report.added) == 12
    reasons = {Path(r.source).name: r.reason for r in report.rejected}
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons[name])
    assert report.as_dict()["rejected"][0]["reason"]
    consistent(lib)
    # bad files stay rejected on the next run and good ones stay unchanged
    again = lib.index([str(photo_dir)])
    assert again.unchanged == 12 and len(again.rejected) == len(expected)


def test_oversized_file_is_rejected(settings: Settings, embedder, photo_dir: Path) -> None:
    small = settings.model_copy(update={"max_file_bytes": 20_000})
    with Library(small, embedder=embedder) as lib:
        report = lib.index([str(photo_dir)])
    assert report.rejected and all("max_file_bytes" in r.reason for r in report.rejected)
    assert len(report.added) + len(report.rejected) == 12


def test_urls_are_fetched_kept_and_failures_reported(
    lib: Library, http_server: str, http_root: Path, tmp_path: Path
) -> None:
    shutil.copy(photo("goldfish", 0), http_root / "fish.jpg")
    shutil.copy(photo("tiger_cat", 0), http_root / "cat.jpg")
    (http_root / "notes.txt").write_text("hello")
    urls = tmp_path / "urls.txt"
    urls.write_text(
        "\n".join(
            [
                f"{http_server}/fish.jpg",
                f"{http_server}/redirect/cat.jpg",
                f"{http_server}/missing.jpg",
                f"{http_server}/notes.txt",
                f"{http_server}/loop",
            ]
        )
    )
    report = lib.index([str(urls)], label="web")
    assert len(report.added) == 2
    reasons = sorted(r.reason for r in report.rejected)
    assert any("404" in r for r in reasons) and any("not an image" in r for r in reasons)
    assert any("redirects" in r for r in reasons)
    for image_id in report.added:
        rec = lib.catalog.get(image_id)
        assert rec.has_original and lib.images.get("original", rec.sha256) is not None and rec.label == "web"
    consistent(lib)


def test_interrupt_keeps_committed_batches_and_resume_completes(settings, embedder, photo_dir: Path) -> None:
    small_batches = settings.model_copy(update={"batch_size": 4, "workers": 1})
    with Library(small_batches, embedder=embedder) as lib:

        def stop_after_first_batch(done, total, report):
            if len(report.added) >= 4:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            lib.index([str(photo_dir)], on_progress=stop_after_first_batch)
        assert 4 <= lib.catalog.count() < 12
        consistent(lib)
    with Library(small_batches, embedder=embedder) as lib:
        report = lib.index([str(photo_dir)])
        assert lib.catalog.count() == 12 and report.unchanged + len(report.added) == 12
        consistent(lib)


def _cli(home: Path, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "LOOKALIKE_HOME": str(home), "LOOKALIKE_MODELS_DIR": str(MODELS), "LOOKALIKE_BATCH_SIZE": "16"}
    return subprocess.Popen(
        [sys.executable, "-m", "lookalike", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw
    )


def test_kill_9_during_indexing_then_rerun_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    train = str(TOWHEE / "train")
    proc = _cli(home, "index", train)
    db = home / "catalog.sqlite"
    deadline = time.time() + 120
    count = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as c:
                    count = c.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if count >= 100:
                break
    assert proc.poll() is None, "indexing finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 100 <= count < 1000
    rerun = _cli(home, "index", train, "--json")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["unchanged"] >= count and report["added"] + report["unchanged"] == 1000
    assert not report["duplicates"] and not report["rejected"]
    with Library(Settings(home=home, models_dir=MODELS)) as lib:
        assert lib.catalog.count() == 1000
        assert lib.catalog.counts()["sources"] == 1000
        assert len(lib.vectors) == 1000
        consistent(lib)


@pytest.mark.skipif(shutil.which("setpriv") is None and os.geteuid() == 0, reason="needs setpriv to drop root")
def test_unreadable_file_is_reported(tmp_path: Path, photo_dir: Path) -> None:
    locked = photo_dir / "goldfish" / "locked.jpg"
    shutil.copy(photo("goldfish", 5), locked)
    locked.chmod(0)
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    env = {**os.environ, "LOOKALIKE_HOME": str(tmp_path / "home"), "LOOKALIKE_MODELS_DIR": str(MODELS)}
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "lookalike", "index", str(photo_dir), "--json"],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert report["added"] == 12
    assert report["rejected"] == [{"source": str(locked), "reason": "permission denied"}]


@pytest.mark.skipif(shutil.which("setpriv") is None and os.geteuid() == 0, reason="needs setpriv to drop root")
def test_a_folder_of_mode_0_is_reported_and_pruned_of_nothing(tmp_path: Path, photo_dir: Path) -> None:
    """Without root's override, a sub-folder of mode 000 ended `lookalike index` with a traceback (looking for a
    library's marker inside it raised PermissionError), whatever else the folder held (hostile probe)."""
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    env = {**os.environ, "LOOKALIKE_HOME": str(tmp_path / "home"), "LOOKALIKE_MODELS_DIR": str(MODELS)}

    def index(*more: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, sys.executable, "-m", "lookalike", "index", str(photo_dir), "--json", *more],
                              env=env, capture_output=True, timeout=300)  # fmt: skip

    assert index().returncode == 0
    locked = photo_dir / "tiger_cat"
    locked.chmod(0)
    try:
        done = index("--prune")
    finally:
        locked.chmod(0o755)
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    reason = "cannot list the folder: Permission denied"
    assert report["rejected"] == [{"source": str(locked) + os.sep, "reason": reason}]
    assert report["pruned"] == 0 and report["unchanged"] == 8


def test_reindex_rebuilds_identical_results(lib: Library, photo_dir: Path) -> None:
    lib.index([str(photo_dir)])
    query = str(photo("tiger_cat", 0, "test"))
    before = [(h.id, round(h.score, 5)) for h in lib.search(query, k=12).hits]
    info = lib.reindex()
    assert info["vectors"] == 12
    assert [(h.id, round(h.score, 5)) for h in lib.search(query, k=12).hits] == before


def test_vector_index_lost_is_rebuilt_from_catalog(settings, embedder, photo_dir: Path) -> None:
    with Library(settings, embedder=embedder) as lib:
        lib.index([str(photo_dir)])
    shutil.rmtree(settings.home / "vectors")
    with Library(settings, embedder=embedder) as lib:
        assert len(lib.vectors) == 12
        assert np.isclose(lib.search(str(photo("goldfish", 0)), k=1).hits[0].similarity, 1.0, atol=1e-4)


def test_an_existing_flat_folder_loses_its_meaningless_label_on_the_next_run(settings, embedder, tmp_path) -> None:
    """Libraries indexed under the old rule (every photo of a flat folder labelled with the folder's name) are
    put right by indexing the folder again; nothing is re-read or re-embedded for that."""
    flat = tmp_path / "photos"
    flat.mkdir()
    for i in range(3):
        shutil.copy(photo("goldfish", i), flat / f"{i}.jpg")
    with Library(settings, embedder=embedder) as lib:
        report = lib.index([str(flat)], label="photos")  # what the old rule gave
        assert lib.catalog.labels() == {"photos": 3} and len(report.added) == 3
        rerun = lib.index([str(flat)])
        assert rerun.unchanged == 3 and not rerun.added
        assert lib.catalog.labels() == {} and lib.search(str(photo("goldfish", 0)), k=3, label="photos").hits == []
        assert all(p["label"] == "" for p in lib.vectors.payloads(lib.catalog.ids()))


def test_a_catalog_outage_mid_run_rejects_no_photo(settings: Settings, embedder, photo_dir: Path, own_pg) -> None:
    """The database stops after the run began: the photos' catalog look-ups fail, and that is not their fault
    (it made 74 photos "rejected: unexpected error: OperationalError" in issue 25). The run raises instead; run
    again once the database is back, it indexes every photo."""
    from lookalike.ingest.pipeline import Pipeline
    from lookalike.ingest.sources import SourceSet, expand
    from lookalike.store.catalog.database import CatalogUnavailable

    stopped: list[bool] = []

    def stop_once(done: int, total: int, report) -> None:  # called once before the first photo is read
        if not stopped:
            own_pg.pause()
            stopped.append(True)

    s = settings.model_copy(update={"database_url": own_pg.create_database()})
    chunk = SourceSet(expand(str(photo_dir)).items)  # as a worker runs a chunk: no folder to look for vanished files
    with Library(s, embedder=embedder, role="worker") as lib:  # a worker's reads do not wait (it runs it again)
        try:
            with pytest.raises(CatalogUnavailable):
                Pipeline(lib.indexing_parts(), stop_once).run([chunk])
        finally:
            own_pg.resume()
        report = Pipeline(lib.indexing_parts()).run([chunk])
        assert len(report.added) == 12 and report.rejected == [] and lib.catalog.count() == 12


def test_a_command_rides_out_a_catalog_restart_mid_run(settings: Settings, embedder, photo_dir: Path, own_pg) -> None:
    """`lookalike index` on a shared catalog: the database stops for a second half-way through the run (a failover).
    The run's reads wait for it as its writes do, and every photo is indexed: a 0.2 s `pg_ctl restart` used to end a
    1,000-photo run with "the catalog database is unreachable" (its copy check read a record meanwhile)."""
    back = threading.Timer(1.0, own_pg.resume)

    def blink_once(done: int, total: int, report) -> None:
        if done >= 4 and back.ident is None:
            own_pg.pause()
            back.start()

    s = settings.model_copy(update={"database_url": own_pg.create_database()})
    try:
        with Library(s, embedder=embedder) as lib:
            report = lib.index([str(photo_dir)], on_progress=blink_once)
            assert back.ident is not None  # the database did stop mid-run
            assert len(report.added) == 12 and report.rejected == [] and lib.catalog.count() == 12
            assert len(lib.vectors) == 12
    finally:
        if back.ident is not None:
            back.join()


def test_a_file_whose_twin_is_removed_mid_run_is_reported_then_indexed(settings: Settings, embedder, tmp_path: Path,
                                                                      monkeypatch) -> None:  # fmt: skip
    """A run reads a new file whose bytes an indexed photo has (so it is not decoded: a duplicate), then `lookalike
    remove` deletes that photo before the run's commit: the file was neither indexed nor reported, the run said
    "total 1" and nothing else (hostile probe). It is rejected with the reason now, and the next run adds it."""
    from lookalike.ingest.pipeline import Pipeline

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    shutil.copy(photo("pizza", 0), a / "one.jpg")
    shutil.copy(photo("pizza", 0), b / "copy-of-one.jpg")
    with Library(settings, embedder=embedder) as lib:
        twin = lib.index([str(a)]).added[0]
        real = Pipeline._commit

        def removed_first(self, *args, **kwargs):  # a `lookalike remove` lands right before the commit
            lib.remove([twin])
            monkeypatch.setattr(Pipeline, "_commit", real)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Pipeline, "_commit", removed_first)
        report = lib.index([str(b)])
        assert report.rejected and [(r.source, r.reason) for r in report.rejected] == [
            (str(b / "copy-of-one.jpg"), TWIN_REMOVED)]  # fmt: skip
        again = lib.index([str(b)])
        assert len(again.added) == 1 and lib.catalog.count() == 1
