"""`lookalike doctor` on what a crash leaves: photos no file points at any more."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PIL import Image

from lookalike.config import Settings
from lookalike.doctor import UNUSED_AFTER
from lookalike.ingest.pipeline import Pipeline
from lookalike.library import Library


def test_a_run_killed_before_its_end_leaves_photos_doctor_removes_and_duplicates_never_keeps(
    settings: Settings, embedder, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file saved again points at its new photo at once; its old photo is removed at the end of the run. A run
    killed before its end left the old one for good: searched (with no source), never pruned, not seen by doctor,
    and kept by `duplicates --remove` against the real photo. Doctor finds it now, --fix removes it, and the
    duplicates report proposes nothing for its group."""
    with Library(settings, embedder=embedder) as lib:
        lib.index([str(photo_dir)])
        changed = sorted((photo_dir / "goldfish").iterdir())[0]
        Image.open(changed).convert("RGB").save(changed, format="JPEG", quality=60)  # other bytes, same picture
        monkeypatch.setattr(Pipeline, "_remove_orphans", lambda self, candidates: set())  # killed right before it
        assert lib.index([str(photo_dir)]).updated == 1
        monkeypatch.undo()
        sourceless = lib.catalog.orphans()
        assert len(sourceless) == 1 and lib.catalog.count() == 13
        found = lib.check()
        assert found.photos_without_source == sourceless and found.problems == 1
        groups = [g for g in lib.duplicates()["groups"] if sourceless[0] in {p["id"] for p in g["photos"]}]
        assert groups and all(g["remove"] == [] and sourceless[0] in g["changed"] for g in groups)
        fixed = lib.repair(found)
        assert fixed.fixed["photos_removed"] == 1
        assert lib.check().problems == 0 and lib.catalog.count() == 12 and lib.catalog.orphans() == []
        assert sorted(lib.vectors.ids().tolist()) == lib.catalog.ids().tolist()


def test_a_store_two_libraries_use_is_not_judged_by_either(s3_settings: Settings, embedder, photo_dir: Path,
                                                           tmp_path: Path, monkeypatch) -> None:  # fmt: skip
    """Two libraries given one bucket prefix (as `lookalike eval` did with LOOKALIKE_IMAGE_STORE=s3://...): each
    library's files are unknown to the other's catalog, so the main library's `doctor --fix` deleted every
    thumbnail of the other once an hour old (found by a review). Each library now notes itself in the store, and
    doctor leaves the files of a store another library uses alone, and says so."""
    from lookalike import doctor

    monkeypatch.setattr(doctor, "UNUSED_AFTER", 0.0)  # every file old enough: S3 keeps its own times
    main_s = s3_settings.model_copy(update={"home": tmp_path / "main"})
    other_s = s3_settings.model_copy(update={"home": tmp_path / "other"})
    with Library(main_s, embedder=embedder) as main, Library(other_s, embedder=embedder) as other:
        other.index([str(photo_dir)])
        assert main.images.libraries() == {main.library_id, other.library_id}
        found = main.check()
        assert found.files_unused == [] and found.problems == 0
        assert len(found.notes) == 1 and "used by 1 other library" in found.notes[0]
        assert other.check().thumbnails_missing == [] and other.catalog.count() == 12


def test_files_no_photo_has_are_found_once_old_and_deleted(settings: Settings, embedder, photo_dir: Path) -> None:
    """A process killed while removing photos, after the catalog's commit, left their thumbnails and features in the
    store for good: doctor said 0 differences and --fix left them. Those written over doctor.UNUSED_AFTER ago are
    found and deleted now; a fresh one (a batch's thumbnail a moment before its commit) is left alone."""
    with Library(settings, embedder=embedder) as lib:
        lib.index([str(photo_dir)])
        gone = lib.catalog.remove_images(lib.catalog.ids().tolist()[:3])  # the catalog's part of a remove only
        lib.after_write()
        old = time.time() - 2 * UNUSED_AFTER
        for rec in gone:
            os.utime(lib.images.path("thumbnail", rec.sha256), (old, old))
        fresh = "ab" * 32
        lib.images.put("thumbnail", fresh, b"a batch's thumbnail, not committed yet")
        found = lib.check()
        assert sorted(found.files_unused) == sorted(f"thumbnail/{rec.sha256}" for rec in gone)
        again = gone[0].sha256  # written again after the check (a run about to commit the same bytes): kept
        lib.images.put("thumbnail", again, b"the same bytes' thumbnail")
        fixed = lib.repair(found)
        assert fixed.fixed["files_deleted"] == 2 and lib.check().problems == 0
        assert [rec.sha256 for rec in gone if lib.images.exists("thumbnail", rec.sha256)] == [again]
        assert lib.images.exists("thumbnail", fresh) and lib.catalog.count() == 9
