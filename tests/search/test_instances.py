"""The same object in another photo: a phone photo of a DVD cover (perspective, glare, clutter) finds the cover's
scan first and says it is the same object, with where it is in both photos; photos that merely look alike are never
called so. Real photos (the shared smvs_dvd_covers and Towhee sets), real copy descriptors, real features."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike.api.app import create_app
from lookalike.config import Settings
from lookalike.library import Library
from lookalike.search import copies
from tests.conftest import MODELS, SHARED, TOWHEE, copy_photos, photo

DVD = SHARED / "datasets" / "smvs_dvd_covers"
COVERS = sorted(p for p in DVD.iterdir() if p.is_dir())[:24]
PHONES = ("E63", "Palm", "Droid", "Canon")
DISTRACTORS = ("goldfish", "tiger_cat", "bullet_train", "pizza", "castle", "flamingo")


@pytest.fixture(scope="module")
def library_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scans of 24 covers (labelled by cover) and 24 unrelated photos."""
    root = copy_photos(tmp_path_factory.mktemp("photos"), DISTRACTORS, 4)
    for cover in COVERS:
        (root / cover.name).mkdir()
        shutil.copy(cover / f"{cover.name}_Reference.jpg", root / cover.name)
    return root


def open_library(home: Path, root: Path, embedder, **settings) -> Library:
    lib = Library(Settings(home=home, models_dir=MODELS, allow_download=False, **settings), embedder=embedder)
    lib.index([str(root)])
    return lib


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, library_root: Path, embedder):
    lib = open_library(tmp_path_factory.mktemp("lib"), library_root, embedder)
    yield lib
    lib.close()


# phone photos that show a second cover of the set beside (or under) their own, whose scan is then the same object
# too: Garfield beside Finding Nemo, Indiana Jones under The Incredibles (seen)
ALSO_SHOWN = {("017", "Palm"): "018", ("023", "Palm"): "024"}


def scan_first(lib: Library, cover: Path, phone: str) -> tuple[bool, bool, bool]:
    """(the cover's scan is the first hit, it is called the same object or a copy, a wrong photo is called so)."""
    hits = lib.search(cover / f"{cover.name}_{phone}.jpg", k=5).hits
    first = hits[0].label == cover.name
    also = ALSO_SHOWN.get((cover.name, phone))  # its scan may be the same object, never a copy
    wrong = any((h.same_object or h.copy) and h.label != cover.name and not (h.label == also and not h.copy)
                for h in hits)  # fmt: skip
    return first, first and (hits[0].same_object or hits[0].copy), wrong


def test_phone_photos_find_their_cover_first_as_the_same_object(library: Library, library_root: Path, tmp_path,
                                                                embedder) -> None:  # fmt: skip
    """The copy collection's candidates with a copy descriptor close enough to be worth it are checked by geometry
    (search.verification): a phone photo's cover is verified when the descriptor proposes it, and no other cover is
    ever called the same object (but the second cover a few of them show, ALSO_SHOWN) nor a copy. Measured here
    (copy descriptor at 160 px): first 0.45, verified 0.18, against 0.42 for the global embedding alone;
    bench/instance.py measures the 500 photos (the per-process keypoint index of earlier versions reached top-1
    0.90, mAP@10 0.70 below 100,000 photos, at 10.8 KB a photo and half the throughput)."""
    found = [scan_first(library, cover, phone) for cover in COVERS for phone in PHONES]
    first = sum(f for f, _, _ in found) / len(found)
    called = sum(c for _, c, _ in found) / len(found)
    assert not any(w for _, _, w in found)
    # the global embedding alone (no copy stage): the same library searched without the checks
    plain = open_library(tmp_path / "plain", library_root, embedder, copy_candidates=0)
    alone = sum(scan_first(plain, cover, phone)[0] for cover in COVERS for phone in PHONES) / len(found)
    plain.close()
    assert called >= 0.12 and first >= called and first >= alone, (first, called, alone)


def test_look_alikes_are_never_called_the_same_object(library: Library) -> None:
    """Photos that are not in the library (Towhee test photos: its classes and 24 others): similar photos come back,
    none is called the same object (nor a copy)."""
    others = sorted(p.name for p in (TOWHEE / "test").iterdir())[:24]
    for label in (*DISTRACTORS, *others):
        hits = library.search(photo(label, 0, "test"), k=10).hits
        assert hits and not any(h.same_object or h.copy for h in hits), label


def test_more_like_this_from_a_stored_photo_uses_its_stored_features(library: Library, library_root: Path,
                                                                    tmp_path, embedder) -> None:  # fmt: skip
    """A phone photo added to the library, searched by its id: its cover's scan first, the same object (a photo taken
    square-on is even the same picture: a similarity transform fits it)."""
    cover = COVERS[5]
    extra = tmp_path / "phone"
    extra.mkdir()
    shutil.copy(cover / f"{cover.name}_Canon.jpg", extra)
    library.index([str(extra)])
    image_id = next(i for i in library.catalog.ids().tolist() if library.get(i).sources[0].startswith(str(extra)))
    first = library.search(image_id, k=3).hits[0]
    assert first.label == cover.name and (first.same_object or first.copy) and first.id != image_id
    library.remove([image_id])


def test_a_photo_of_a_cover_seen_at_an_angle_is_the_same_object_not_a_copy() -> None:
    """A similarity fits part of a perspective view; a copy's similarity explains almost all the points a planar
    view agrees on (copies.COPY_SHARE). Checked pair by pair: phone photos against their cover's scan."""
    verdicts = []
    for cover in COVERS[:12]:
        with Image.open(cover / f"{cover.name}_Reference.jpg") as im:
            scan = copies.extract(im.convert("RGB"))
        for p in PHONES:
            with Image.open(cover / f"{cover.name}_{p}.jpg") as im:
                verdicts.append(copies.verify_many(copies.Query(im.convert("RGB")).features, {0: scan})[0])
    same, copy = sum(v.same_object for v in verdicts), sum(v.copy for v in verdicts)
    # measured: 25 of 48 the same object, 17 copies (near-frontal ones); 8 and 34 without the rule
    assert same >= 18 and copy <= 24 and same + copy >= 34, (same, copy)
    # a strong perspective on an edited copy's original makes it the same object too, never a copy
    with Image.open(COVERS[0] / f"{COVERS[0].name}_Reference.jpg") as im:
        scan = im.convert("RGB")
    w, h = scan.size
    quad = np.float32([[0.15 * w, 0.05 * h], [0.85 * w, 0.2 * h], [0.85 * w, 0.8 * h], [0.15 * w, 0.95 * h]])
    tilt = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), quad)
    tilted = Image.fromarray(cv2.warpPerspective(np.asarray(scan), tilt, (w, h), borderValue=(255, 255, 255)))
    verdict = copies.verify_many(copies.Query(tilted).features, {0: copies.extract(scan)})[0]
    assert verdict.same_object and not verdict.copy, verdict


def test_the_api_reports_the_object_and_its_region(library: Library) -> None:
    client = TestClient(create_app(library.settings, library=library))

    def first_hit(path: Path, **form) -> dict:
        return client.post("/api/v1/search", files={"image": ("q.jpg", path.read_bytes(), "image/jpeg")},
                           data={"k": "3", **form}).json()["hits"][0]  # fmt: skip

    # the first phone photo (in a fixed order) that the check calls the same object: most are (a near-frontal one
    # can be a copy)
    found = ((cover, photo, first_hit(photo)) for cover in COVERS for photo in (cover / f"{cover.name}_{p}.jpg"
                                                                                 for p in PHONES))  # fmt: skip
    cover, query, hit = next((c, q, h) for c, q, h in found if h["same_object"])
    assert hit["label"] == cover.name and not hit["copy"]
    assert 0.5 < hit["object_confidence"] <= 1 and hit["copy_region"] is None
    x1, y1, x2, y2 = hit["object_region"]["match"]
    assert 0 <= x1 < x2 <= hit["width"] and 0 <= y1 < y2 <= hit["height"]
    assert min(x2 - x1, y2 - y1) >= 0.1 * min(hit["width"], hit["height"])  # a region where the points agree
    qx1, qy1, qx2, qy2 = hit["object_region"]["query"]
    assert 0 <= qx1 < qx2 and 0 <= qy1 < qy2
    # another photo of the object is not the same picture: copies mode does not return it
    copies = client.post("/api/v1/search", files={"image": ("q.jpg", query.read_bytes(), "image/jpeg")},
                         data={"k": "3", "mode": "copies"}).json()["hits"]  # fmt: skip
    assert all(h["copy"] for h in copies) and hit["id"] not in [h["id"] for h in copies]


def test_a_scan_finds_the_phone_photos_of_its_cover(tmp_path: Path, embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other way round: phone photos in the library, a cover's clean scan as the query. The scan reaches a phone
    photo of its cover only at 0.35-0.40 (the cover is a part of a cluttered scene): first among its candidates, so
    geometry must run from there (verification.VIEW_FLOOR) to find it the same object. These covers' scans all failed
    top-1 with the floor at 0.40 (bench/RESULTS.md, "The floor again, with stored features")."""
    from lookalike.search import verification

    wanted = ("058", "062", "065", "068", "069", "076", "087", "090")
    root = copy_photos(tmp_path / "photos", DISTRACTORS, 2)
    for cover in [DVD / name for name in wanted] + COVERS[:8]:
        (root / cover.name).mkdir()
        for phone in PHONES:
            shutil.copy(cover / f"{cover.name}_{phone}.jpg", root / cover.name)
    lib = open_library(tmp_path / "lib", root, embedder)

    def found() -> int:
        firsts = [lib.search(DVD / name / f"{name}_Reference.jpg", k=5).hits[0] for name in wanted]
        assert not any((h.same_object or h.copy) and h.label != name for h, name in zip(firsts, wanted, strict=True))
        return sum(h.label == name and h.same_object for h, name in zip(firsts, wanted, strict=True))

    try:
        now = found()
        monkeypatch.setattr(verification, "VIEW_FLOOR", 0.40)
        before = found()
    finally:
        lib.close()
    assert now >= 4 and before <= now - 3, (now, before)  # measured: 5 and 0 of 8
