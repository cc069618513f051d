"""The duplicates report on a folder with known duplicates: exact copies, edited copies, and look-alikes that
are not copies."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFilter
from typer.testing import CliRunner

from lookalike.cli import app
from lookalike.copyedits import edited
from tests.conftest import copy_photos, photo


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """18 distinct photos (6 classes x 3: look-alikes within a class), plus: 2 photos with 2 edited copies each,
    and one exact copy under another name."""
    root = copy_photos(tmp_path / "photos", ("goldfish", "tiger_cat", "bullet_train", "pizza", "castle", "flamingo"),
                       3)  # fmt: skip
    for n, (label, edits) in enumerate([("pizza", ("text overlay", "resized 30 % + JPEG 40")),
                                        ("castle", ("grayscale", "centre crop (50 % of the area)"))]):  # fmt: skip
        for e, edit in enumerate(edits):
            edited(Image.open(photo(label, 1)).convert("RGB"), edit).save(root / f"repost_{n}_{e}.jpg", quality=85)
    shutil.copy(photo("goldfish", 0), root / "goldfish" / "same_bytes.jpg")
    return root


def test_duplicates_groups_the_copies_and_nothing_else(folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path / "lib"))
    assert CliRunner().invoke(app, ["index", str(folder)]).exit_code == 0
    result = CliRunner().invoke(app, ["duplicates", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    groups = [sorted(Path(p["source"]).name for p in g["photos"]) for g in report["near_duplicates"]]
    assert sorted(groups) == sorted([
        sorted([photo("pizza", 1).name, "repost_0_0.jpg", "repost_0_1.jpg"]),
        sorted([photo("castle", 1).name, "repost_1_0.jpg", "repost_1_1.jpg"]),
    ])  # fmt: skip
    for g in report["near_duplicates"]:  # the original (largest) is kept
        keep = next(p for p in g["photos"] if p["id"] == g["keep"])
        assert not Path(keep["source"]).name.startswith("repost") or keep["width"] == max(
            p["width"] for p in g["photos"]
        )
    assert [Path(s).name for s in report["exact"][0]["sources"]] == sorted(
        [photo("goldfish", 0).name, "same_bytes.jpg"]
    )
    assert report["removed"] == [] and report["would_remove"] == []

    dry = CliRunner().invoke(app, ["duplicates", "--remove"], terminal_width=200)
    doomed = [str(i) for g in report["near_duplicates"] for i in g["remove"]]
    assert "dry run" in dry.output and f"would remove 4 photos (the rows marked remove): {', '.join(doomed)}" in (
        dry.output
    )
    # what a user acts on is in the table itself: which photo goes, how sure, and the paths of exact copies
    rows = [line for line in dry.output.splitlines() if line.startswith("│")]
    assert sum(" remove " in r for r in rows) == 4 and sum(" keep " in r for r in rows) == 2
    assert "the same bytes under several paths" in dry.output and "same_bytes.jpg" in dry.output
    confidences = [int(w.rstrip("%")) for line in rows if " remove " in line for w in line.split() if w.endswith("%")]
    assert len(confidences) == 4 and all(c > 0 for c in confidences)  # "97% sure", as the page says it
    csv_out = CliRunner().invoke(app, ["duplicates", "--csv"]).output.splitlines()
    assert csv_out[0] == "group,id,keep,source,width,height" and len(csv_out) == 1 + 6 + 2
    assert sorted(Path(line.split(",")[3]).name for line in csv_out if line.startswith("exact,")) == sorted(
        [photo("goldfish", 0).name, "same_bytes.jpg"]
    )

    done = json.loads(CliRunner().invoke(app, ["duplicates", "--remove", "--yes", "--json"]).output)
    assert len(done["removed"]) == 4
    again = json.loads(CliRunner().invoke(app, ["duplicates", "--json"]).output)
    assert again["near_duplicates"] == []
    stats = json.loads(CliRunner().invoke(app, ["stats", "--json"]).output)
    assert stats["images"] == 18


def test_indexing_and_uploads_report_near_duplicates_of_indexed_photos(settings, embedder, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from lookalike.api.app import create_app
    from lookalike.library import Library

    first = copy_photos(tmp_path / "first", ("pizza", "castle", "goldfish"), 3)
    later = tmp_path / "later"
    later.mkdir()
    edited(Image.open(photo("castle", 2)).convert("RGB"), "text overlay").save(later / "castle_caption.jpg")
    shutil.copy(photo("pizza", 5), later / "another_pizza.jpg")  # a look-alike, not a copy
    with Library(settings, embedder=embedder) as lib:
        lib.index([str(first)])
        report = lib.index([str(later)])
        castle = lib.catalog.id_for_sha(hashlib.sha256(photo("castle", 2).read_bytes()).hexdigest())
        assert [(Path(d.source).name, d.of) for d in report.near_duplicates] == [("castle_caption.jpg", castle)]
        assert report.as_dict()["near_duplicates"][0]["confidence"] > 0.5
        # a photo edited in place is not a near-duplicate of its old version, which the same run removes (probe)
        edited(Image.open(photo("pizza", 5)).convert("RGB"), "text overlay").save(later / "another_pizza.jpg")
        again = lib.index([str(later)])
        assert again.updated == 1 and again.near_duplicates == [], again.near_duplicates
        with TestClient(create_app(settings, library=lib)) as client:
            buf = io.BytesIO()
            edited(Image.open(photo("goldfish", 1)).convert("RGB"), "grayscale").save(buf, "JPEG")
            files = [("images", ("gray.jpg", buf.getvalue(), "image/jpeg")),
                     ("images", ("new.jpg", photo("goldfish", 6).read_bytes(), "image/jpeg"))]  # fmt: skip
            body = client.post("/api/v1/images", files=files).json()
            near = {item["name"]: item["near_duplicate_of"] for item in body["added"]}
            goldfish = lib.catalog.id_for_sha(hashlib.sha256(photo("goldfish", 1).read_bytes()).hexdigest())
            assert near == {"gray.jpg": goldfish, "new.jpg": None}


def test_a_mirrored_cropped_scaled_captioned_copy_is_grouped_with_its_original(tmp_path: Path, monkeypatch) -> None:
    """Issue #28, item 3: in a library of look-alikes (10 goldfish among 60 photos), a copy that is mirrored, cropped
    to 80 %, scaled to 0.4x and captioned is grouped with its original, and a plain mirror of the original finds
    both as the same photo (the original was left 'copy: false' when copies came from a per-process keypoint index)."""
    from PIL import ImageDraw, ImageOps

    root = copy_photos(tmp_path / "photos", ("goldfish", "tiger_cat", "bullet_train", "pizza", "castle", "flamingo"),
                       10)  # fmt: skip
    original = Image.open(photo("goldfish", 2)).convert("RGB")
    w, h = original.size
    copy = ImageOps.mirror(original).crop((w // 10, h // 10, w - w // 10, h - h // 10))
    copy = copy.resize((int(copy.width * 0.4), int(copy.height * 0.4)))
    ImageDraw.Draw(copy).text((5, 5), "REPOST caption text", fill=(255, 255, 255))
    (root / "reposts").mkdir()
    copy.save(root / "reposts" / "copy.jpg", quality=85)
    mirror = tmp_path / "mirror.jpg"
    ImageOps.mirror(original).save(mirror, quality=90)
    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path / "lib"))
    assert CliRunner().invoke(app, ["index", str(root)]).exit_code == 0
    report = json.loads(CliRunner().invoke(app, ["duplicates", "--json"]).output)
    groups = [sorted(Path(p["source"]).name for p in g["photos"]) for g in report["near_duplicates"]]
    assert groups == [sorted([photo("goldfish", 2).name, "copy.jpg"])]
    hits = json.loads(CliRunner().invoke(app, ["search", str(mirror), "-k", "5", "--json"]).output)["hits"]
    copies = sorted(Path(h["sources"][0]).name for h in hits if h["copy"])
    assert copies == sorted([photo("goldfish", 2).name, "copy.jpg"])
    assert Path(hits[0]["sources"][0]).name == photo("goldfish", 2).name


def test_hide_copies_shows_each_picture_once(folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A library that holds a picture three times (the photo and two edited reposts): a search with the photo shows
    all three, one with --hide-copies shows it once (the best of them) and fills the rest with other photos."""
    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path / "lib"))
    assert CliRunner().invoke(app, ["index", str(folder)]).exit_code == 0
    query = io.BytesIO()
    Image.open(photo("pizza", 1)).convert("RGB").save(query, "JPEG", quality=80)
    (tmp_path / "q.jpg").write_bytes(query.getvalue())

    def names(*extra: str) -> list[str]:
        out = CliRunner().invoke(app, ["search", str(tmp_path / "q.jpg"), "-k", "6", "--json", *extra]).output
        return [Path(h["sources"][0]).name for h in json.loads(out)["hits"]]

    pizza = {photo("pizza", 1).name, "repost_0_0.jpg", "repost_0_1.jpg"}
    every = names()
    assert pizza <= set(every[:3]), every
    once = names("--hide-copies")
    assert len(once) == 6 and len(pizza & set(once)) == 1 and once[0] in pizza, once
    assert set(once[1:]) - pizza == set(once[1:]) and len(set(once) - pizza) == 5


def test_photos_of_different_covers_on_one_page_are_never_grouped(tmp_path: Path, monkeypatch) -> None:
    """Phone photos of six DVD covers laid on the same printed page, two covers' scans, and two edited copies of
    each scan: a group holds one cover only (geometry and the pixels all around call the phone photos of different
    covers copies of each other, and one such pair used to merge the two scans' groups, proposing to remove a scan
    and its copies for the other's sake)."""
    from tests.search.test_instances import DVD

    root = tmp_path / "photos"
    for cover in ("001", "002", "020", "027", "028", "030"):
        (root / cover).mkdir(parents=True)
        shutil.copy(DVD / cover / f"{cover}_Droid.jpg", root / cover)
    for cover in ("001", "002"):
        scan = Image.open(DVD / cover / f"{cover}_Reference.jpg").convert("RGB")
        scan.save(root / cover / "scan.jpg", quality=90)
        for e, edit in enumerate(("crop + text + JPEG 50", "resized 30 % + JPEG 40")):
            edited(scan, edit).save(root / cover / f"repost_{e}.jpg", quality=85)
    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path / "lib"))
    assert CliRunner().invoke(app, ["index", str(root)]).exit_code == 0
    report = json.loads(CliRunner().invoke(app, ["duplicates", "--json"]).output)
    groups = [{Path(p["source"]).parent.name for p in g["photos"]} for g in report["near_duplicates"]]
    assert groups and all(len(covers) == 1 for covers in groups), groups
    names = [sorted(Path(p["source"]).name for p in g["photos"]) for g in report["near_duplicates"]]
    for cover in ("001", "002"):  # each scan with its copies (its cover's phone photo may join: the same cover)
        assert any({"scan.jpg", "repost_0.jpg", "repost_1.jpg"} <= set(n) for n, c in zip(names, groups, strict=True)
                   if c == {cover}), names  # fmt: skip


def test_screenshots_in_one_frame_are_grouped_with_their_originals(tmp_path: Path, monkeypatch) -> None:
    """30 Corel-1k photos and a screenshot of each in the same app frame: every screenshot is grouped with its
    original and nothing else. By their whole descriptors the screenshots lie nearer each other than their originals
    (the frame is most of what they share, and these photos are small), so each photo's centre is searched too, as a
    search's views are."""
    from tests.conftest import SHARED

    corel = SHARED / "datasets" / "corel1k_wang"
    root = tmp_path / "photos"
    (root / "shots").mkdir(parents=True)
    for folder in sorted(p for p in corel.iterdir() if p.is_dir())[:3]:
        (root / folder.name).mkdir()
        for original in sorted(folder.glob("*.jpg"))[:10]:
            shutil.copy(original, root / folder.name)
            picture = Image.open(original).convert("RGB")
            edited(picture, "in a screenshot frame").save(root / "shots" / original.name, quality=90)
    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path / "lib"))
    assert CliRunner().invoke(app, ["index", str(root)]).exit_code == 0
    report = json.loads(CliRunner().invoke(app, ["duplicates", "--json"]).output)
    names = [sorted(Path(p["source"]).name for p in g["photos"]) for g in report["near_duplicates"]]
    assert all(len(set(n)) == 1 for n in names), [n for n in names if len(set(n)) > 1]  # one picture per group
    assert len(names) >= 28, names  # 30 pairs (19 with whole descriptors alone, on Corel-1k: bench/dupquality.py)


def test_resized_copies_of_blurred_or_plain_pictures_are_grouped(tmp_path: Path, monkeypatch) -> None:
    """A copy the descriptor is sure of is also checked by geometry before the report joins it, but a heavily
    blurred photo or a line of text on a plain ground has too few features for geometry to find anything
    (copies.LOOKABLE): its "no" says nothing there, and these copies were left out of every group."""
    root = tmp_path / "photos"
    root.mkdir()
    pictures = {f"blurred_{label}": Image.open(photo(label, 1)).convert("RGB").filter(ImageFilter.GaussianBlur(15))
                for label in ("tiger_cat", "castle", "goldfish")}  # fmt: skip
    text = Image.new("RGB", (600, 400), (240, 240, 240))
    ImageDraw.Draw(text).text((250, 190), "Hello", fill=(0, 0, 0))
    pictures["text"] = text
    for name, picture in pictures.items():
        picture.save(root / f"{name}.jpg", quality=92)
        small = picture.resize((picture.width * 2 // 3, picture.height * 2 // 3), Image.Resampling.LANCZOS)
        small.save(root / f"{name}_copy.jpg", quality=70)
    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path / "lib"))
    assert CliRunner().invoke(app, ["index", str(root)]).exit_code == 0
    report = json.loads(CliRunner().invoke(app, ["duplicates", "--json"]).output)
    groups = sorted(sorted(Path(p["source"]).stem for p in g["photos"]) for g in report["near_duplicates"])
    assert groups == sorted([name, f"{name}_copy"] for name in pictures)


@pytest.mark.parametrize("enlarged", [False, True])
def test_only_photos_lying_whole_in_the_kept_one_are_removed(tmp_path: Path, monkeypatch, enlarged: bool) -> None:
    """Groups are chains: a photo's left and right halves are one group with it. With the halves enlarged (larger
    than the photo) the report kept the left half and removed the photo and the right half, losing the right of the
    picture. A photo is removed only when it lies whole in the kept one: the halves of the photo kept, never the
    photo for a half (an enlarged half shows the shared part with more pixels, so it may be the one kept: then
    nothing else lies in it)."""
    root = tmp_path / "photos"
    root.mkdir()
    for n, label in enumerate(("castle", "pizza", "tiger_cat")):
        whole = Image.open(photo(label, 1)).convert("RGB")
        w, h = whole.size
        whole.save(root / f"whole_{n}.jpg", quality=92)
        for side, box, scale in (("left", (0, 0, int(0.55 * w), h), 2.5), ("right", (w - int(0.55 * w), 0, w, h), 2.4)):
            half = whole.crop(box)
            half = half.resize((int(half.width * scale), int(half.height * scale))) if enlarged else half
            half.save(root / f"{side}_{n}.jpg", quality=92)
    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path / "lib"))
    assert CliRunner().invoke(app, ["index", str(root)]).exit_code == 0
    report = json.loads(CliRunner().invoke(app, ["duplicates", "--json"]).output)
    name = {p["id"]: Path(p["source"]).stem for g in report["near_duplicates"] for p in g["photos"]}
    found = sorted((name[g["keep"]], sorted(name[i] for i in g["remove"])) for g in report["near_duplicates"])
    assert len(found) == 3
    for keep, removed in found:
        n = keep[-1]
        if enlarged:
            assert (keep, removed) in [(f"whole_{n}", [f"left_{n}", f"right_{n}"]), (f"left_{n}", []),
                                       (f"right_{n}", [])], found  # fmt: skip
        else:
            assert (keep, removed) == (f"whole_{n}", [f"left_{n}", f"right_{n}"]), found
    for g in report["near_duplicates"]:
        assert {p["id"] for p in g["photos"] if not p["keep"]} == set(g["remove"])


def test_a_group_with_a_file_changed_since_indexed_proposes_no_removal(tmp_path: Path, monkeypatch) -> None:
    """The report judges photos as indexed. A file replaced on disk by another picture since then made it keep
    the stale record and remove the last copy of the first picture; now the group is shown with nothing to
    remove until the file is indexed again."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    flower = Image.open(photo("castle", 1)).convert("RGB")
    flower.save(tmp_path / "a" / "big.jpg", quality=92)
    flower.resize((flower.width // 2, flower.height // 2)).save(tmp_path / "b" / "small.jpg", quality=80)
    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path / "lib"))
    assert CliRunner().invoke(app, ["index", str(tmp_path / "a"), str(tmp_path / "b")]).exit_code == 0
    shutil.copy(photo("pizza", 0), tmp_path / "a" / "big.jpg")  # another picture under the kept one's name
    result = CliRunner().invoke(app, ["duplicates", "--remove", "--yes", "--json"])
    report = json.loads(result.output)
    [group] = report["near_duplicates"]
    assert group["remove"] == [] and group["changed"] == [group["keep"]] and report["removed"] == []
    assert json.loads(CliRunner().invoke(app, ["stats", "--json"]).output)["images"] == 2
    text = CliRunner().invoke(app, ["duplicates"], terminal_width=200).output
    assert f"nothing proposed: the file(s) of {group['keep']} changed or vanished since indexed" in text


# (7_753 and 7_756, a mare and her foal a step apart, agree at 0.80, as edited copies can: still grouped)
SHOTS_OF_ONE_SCENE = [("2_buildings", "2_263", "2_264"), ("4_dinosaurs", "4_411", "4_459"),
                      ("5_elephants", "5_510", "5_529"), ("7_horses", "7_750", "7_793")]  # fmt: skip


def test_two_shots_of_one_scene_are_not_grouped_but_their_copies_are(tmp_path: Path, monkeypatch) -> None:
    """Corel-1k's shots of one scene a moment apart (St Peter's from two spots, a horse moving, an elephant
    turning, two dinosaur models on one set) were grouped, and `--remove --yes` removed one of each pair: geometry
    fits the scene, and the pixels agree in most cells, less than a copy's (copies.SAME_PICTURE). A resized copy of
    each photo still joins it."""
    from tests.conftest import SHARED

    corel = SHARED / "datasets" / "corel1k_wang"
    root = tmp_path / "photos"
    root.mkdir()
    for folder, *names in SHOTS_OF_ONE_SCENE:
        for name in names:
            picture = Image.open(corel / folder / f"{name}.jpg").convert("RGB")
            picture.save(root / f"{name}.jpg", quality=95)
            smaller = picture.resize((picture.width * 3 // 4, picture.height * 3 // 4))
            smaller.save(root / f"{name}_copy.jpg", quality=80)
    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path / "lib"))
    assert CliRunner().invoke(app, ["index", str(root)]).exit_code == 0
    report = json.loads(CliRunner().invoke(app, ["duplicates", "--json"]).output)
    groups = sorted(sorted(Path(p["source"]).stem for p in g["photos"]) for g in report["near_duplicates"])
    assert groups == sorted([name, f"{name}_copy"] for _, *names in SHOTS_OF_ONE_SCENE for name in names)


BURSTS = [("5_elephants", "5_596", "5_585"), ("5_elephants", "5_503", "5_567"), ("7_horses", "7_761", "7_776"),
          ("7_horses", "7_727", "7_748")]  # fmt: skip


def test_two_shots_of_one_scene_still_grouped_are_never_proposed_for_removal(tmp_path: Path, monkeypatch) -> None:
    """Corel-1k's bursts (an elephant's trunk up then down, a foal that moved) reach copies.SAME_PICTURE and are
    grouped, and `--remove --yes` removed one of each (a hostile probe); a photo is proposed for removal only by a
    pair whose pixels agree at duplicates.REMOVABLE, which these do not reach. A resized copy is still removed."""
    from tests.conftest import SHARED

    corel = SHARED / "datasets" / "corel1k_wang"
    root = tmp_path / "photos"
    root.mkdir()
    for folder, *names in BURSTS:
        for name in names:
            Image.open(corel / folder / f"{name}.jpg").convert("RGB").save(root / f"{name}.jpg", quality=95)
    picture = Image.open(corel / "5_elephants" / "5_596.jpg").convert("RGB")
    picture.resize((picture.width * 3 // 4, picture.height * 3 // 4)).save(root / "5_596_copy.jpg", quality=80)
    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path / "lib"))
    assert CliRunner().invoke(app, ["index", str(root)]).exit_code == 0
    report = json.loads(CliRunner().invoke(app, ["duplicates", "--json"]).output)
    removed = sorted(Path(p["source"]).stem for g in report["near_duplicates"] for p in g["photos"] if not p["keep"])
    grouped = {Path(p["source"]).stem for g in report["near_duplicates"] for p in g["photos"]}
    assert removed == ["5_596_copy"], report
    assert len(grouped) >= 5  # bursts still shown together: only their removal is not proposed
