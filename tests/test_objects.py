"""Indexing and searching by detected subjects, end to end on real photos."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike.cli import app
from lookalike.library import Library, LibraryError
from lookalike.store.catalog import object_vector_id
from tests.conftest import copy_photos, photo

SUBJECTS = ("Afghan_hound", "ambulance", "traffic_light", "bicycle-built-for-two", "tiger_cat", "goldfish")


@pytest.fixture
def subject_dir(tmp_path: Path) -> Path:
    return copy_photos(tmp_path / "subjects", SUBJECTS, 3)


@pytest.fixture
def lib(settings, embedder, subject_dir: Path):
    with Library(settings, embedder=embedder) as library:
        library.index([str(subject_dir)], objects=True)
        yield library


def crop_bytes(path: Path, box) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").crop(tuple(round(v) for v in box)).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def test_objects_are_stored_with_boxes_labels_and_scores(lib: Library) -> None:
    n_images = lib.catalog.count()
    assert n_images == 18
    detected = lib.catalog.counts()["detected"]
    assert detected == 18  # every photo went through the detector, with or without findings
    labels = lib.catalog.object_labels()
    assert {"dog", "traffic light", "bicycle", "cat"} <= set(labels)
    dog_photo = lib.catalog.source_state(
        str(next(iter(sorted(p for p in lib.catalog.sources_under("/") if "Afghan_hound" in p))))
    )[0]
    obj = lib.catalog.objects(dog_photo)[0]
    rec = lib.catalog.get(dog_photo)
    assert obj.idx == 1 and 0 <= obj.box[0] < obj.box[2] <= rec.width and 0 <= obj.box[1] < obj.box[3] <= rec.height
    assert len(lib.object_vectors) == sum(labels.values())


def test_rerun_keeps_ids_and_does_not_detect_again(lib: Library, subject_dir: Path, monkeypatch) -> None:
    before = lib.catalog.object_vector_ids().tolist()

    def detected(*_):
        raise AssertionError("detected")

    monkeypatch.setattr(type(lib.models), "detect_decoded", detected)
    report = lib.index([str(subject_dir)], objects=True)
    assert report.unchanged == 18 and lib.catalog.object_vector_ids().tolist() == before
    lib.reindex()
    assert lib.catalog.object_vector_ids().tolist() == before


def test_objects_added_later_to_an_indexed_folder(settings, embedder, subject_dir: Path) -> None:
    with Library(settings, embedder=embedder) as lib:
        lib.index([str(subject_dir)])
        assert len(lib.object_vectors) == 0
        report = lib.index([str(subject_dir)], objects=True)
        assert not report.added and not report.rejected
        assert lib.catalog.counts()["detected"] == 18
        assert len(lib.object_vectors) > 0 and lib.catalog.count() == 18
        # the report says what happened: 18 photos got their subjects; none is a duplicate of itself
        assert report.detected == 18 and report.subjects == len(lib.object_vectors) and not report.duplicates


def test_a_crop_of_an_object_finds_the_photo_that_holds_it(lib: Library) -> None:
    """The smallest indexed subject, cropped out of its photo, finds that photo through the object entry."""
    records = lib.catalog.get_many(lib.catalog.ids())
    fraction, image_id, idx = min(
        ((o.box[2] - o.box[0]) * (o.box[3] - o.box[1]) / (rec.width * rec.height), i, o.idx)
        for i, rec in records.items()
        for o in lib.catalog.objects(i)
    )
    assert fraction < 0.3  # a real part of the photo, not the whole of it
    obj = next(o for o in lib.catalog.objects(image_id) if o.idx == idx)
    source = Path(lib.catalog.get(image_id).sources[0])
    query = crop_bytes(source, obj.box)
    hit = lib.search(query, k=3, match="both").hits[0]
    assert hit.id == image_id and hit.box == pytest.approx(obj.box) and hit.detected_label == obj.label
    assert hit.similarity > 0.8


def test_detected_label_filter_and_grouping(lib: Library) -> None:
    hits = lib.search(str(photo("Afghan_hound", 0, "test")), k=10, detected_label="dog").hits
    assert hits and all(h.detected_label == "dog" and h.box for h in hits)
    assert len({h.id for h in hits}) == len(hits)  # one hit per photo
    both = lib.search(str(photo("traffic_light", 0, "test")), k=18, match="both").hits
    assert len({h.id for h in both}) == len(both) == 18
    with pytest.raises(LibraryError, match="match must be"):
        lib.search(str(photo("goldfish", 0)), match="nope")


def test_search_by_each_query_object(lib: Library) -> None:
    groups = lib.search_objects(str(photo("ambulance", 0, "test")), k=3)
    assert [det.label for det, _ in groups][0] == "bus"
    assert groups[0][1][0].label == "ambulance"
    assert lib.search_objects(str(photo("goldfish", 0, "test"))) == []  # no subject: no groups


def test_removing_a_photo_removes_its_objects(lib: Library) -> None:
    image_id = int(lib.catalog.object_vector_ids()[0] >> 10)
    object_ids = [object_vector_id(image_id, o.idx) for o in lib.catalog.objects(image_id)]
    lib.remove([image_id])
    assert not set(object_ids) & set(lib.object_vectors.ids().tolist())
    assert lib.catalog.objects(image_id) == []


def test_many_detections_per_photo(settings, embedder, subject_dir: Path) -> None:
    busy = settings.model_copy(update={"detect_threshold": 0.02, "max_objects": 100, "min_object_side": 1})
    with Library(busy, embedder=embedder) as lib:
        lib.index([str(subject_dir / "traffic_light")], objects=True)
        counts = [len(lib.catalog.objects(int(i))) for i in lib.catalog.ids()]
        assert max(counts) == 100  # capped at max_objects, and a photo with 100 objects indexes fine
        assert len(lib.object_vectors) == sum(counts)


def test_bad_files_are_still_rejected_with_objects(lib: Library, subject_dir: Path) -> None:
    from tests.badfiles import salt

    expected = salt(subject_dir / "junk")
    report = lib.index([str(subject_dir)], objects=True)
    assert {Path(r.source).name for r in report.rejected} == set(expected) and report.unchanged == 18


def test_detect_command_prints_and_draws(tmp_path: Path) -> None:
    out = tmp_path / "boxes.jpg"
    result = CliRunner().invoke(
        app, ["--home", str(tmp_path / "h"), "detect", str(photo("ambulance", 0, "test")), "--draw", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["objects"][0]["label"] == "bus" and body["width"] == 500
    drawn = np.asarray(Image.open(out).convert("RGB"), dtype=np.int32)
    plain = np.asarray(Image.open(photo("ambulance", 0, "test")).convert("RGB"), dtype=np.int32)
    assert drawn.shape == plain.shape and np.abs(drawn - plain).mean() > 1  # boxes were drawn


def test_cli_index_objects_and_search_per_object(tmp_path: Path, subject_dir: Path) -> None:
    runner = CliRunner()
    home = ["--home", str(tmp_path / "cli")]
    assert runner.invoke(app, [*home, "index", str(subject_dir), "--objects"]).exit_code == 0
    r = runner.invoke(app, [*home, "search", str(photo("ambulance", 0, "test")), "--objects", "--json", "-k", "2"])
    assert r.exit_code == 0, r.output
    groups = json.loads(r.output)["objects"]
    assert groups[0]["object"]["label"] == "bus" and len(groups[0]["hits"]) == 2
    r = runner.invoke(app, [*home, "search", str(photo("Afghan_hound", 0, "test")), "--detected-label", "dog"])
    assert r.exit_code == 0 and "subject (dog?, " in r.output  # the detector's guess, said as one (how sure: next)
    r = runner.invoke(app, [*home, "search", str(photo("Afghan_hound", 0, "test")), "--box", "0,20,470,370"])
    assert r.exit_code == 0 and "Afghan_hound" in r.output
