"""Sources: folders (recursive, labels from folder names), CSVs, URL lists, single files."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike.ingest.sources import SourceError, expand
from tests.conftest import TOWHEE


def test_folder_is_recursive_sorted_and_labelled(photo_dir: Path) -> None:
    (photo_dir / ".hidden").mkdir()
    (photo_dir / ".hidden" / "x.jpg").write_bytes(b"x")
    s = expand(str(photo_dir))
    assert len(s.items) == 12 and s.root == str(photo_dir) + "/"
    assert {i.label for i in s.items} == {"goldfish", "tiger_cat", "bullet_train"}
    assert all(i.size and i.mtime_ns for i in s.items)
    assert [i.source for i in s.items] == sorted(i.source for i in s.items)


def test_a_flat_folder_gives_no_label_and_subfolders_give_theirs(photo_dir: Path) -> None:
    """The label rule: the photo's folder below the folder named, never the named folder itself."""
    (photo_dir / "loose.jpg").write_bytes(b"x")
    (photo_dir / "goldfish" / "deep").mkdir()
    (photo_dir / "goldfish" / "deep" / "d.jpg").write_bytes(b"x")
    labels = {Path(i.source).name: i.label for i in expand(str(photo_dir)).items}
    assert labels["loose.jpg"] is None and labels["d.jpg"] == "deep"
    assert {i.label for i in expand(str(photo_dir / "goldfish")).items} == {None, "deep"}


def test_label_option_overrides_folder_names(photo_dir: Path) -> None:
    assert {i.label for i in expand(str(photo_dir), label="mine").items} == {"mine"}


def test_seed_csv_paths_are_relative_to_the_csv() -> None:
    s = expand(str(TOWHEE / "reverse_image_search.csv"))
    assert len(s.items) == 1000 and s.root is None
    first = s.items[0]
    assert first.label == "brain_coral" and Path(first.source).is_file() and Path(first.source).is_absolute()


def test_csv_without_path_column_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,file\n1,a.jpg\n")
    with pytest.raises(SourceError, match="'path' column"):
        expand(str(bad))


def test_csv_missing_file_becomes_an_item_error(tmp_path: Path) -> None:
    f = tmp_path / "l.csv"
    f.write_text("id,path,label\n1,nothere.jpg,x\n")
    (item,) = expand(str(f)).items
    assert item.error == "no such file"


def test_url_list(tmp_path: Path) -> None:
    f = tmp_path / "urls.txt"
    f.write_text("# my photos\nhttps://example.org/a.jpg\n\nhttp://example.org/b.png\nftp://nope\n")
    items = expand(str(f)).items
    assert [i.source for i in items] == ["https://example.org/a.jpg", "http://example.org/b.png", "ftp://nope"]
    assert items[2].error == "not an http(s) URL"


def test_single_file_and_url(photo_dir: Path) -> None:
    one = next((photo_dir / "goldfish").iterdir())
    (item,) = expand(str(one)).items
    assert item.label is None and item.source == str(one.resolve())  # a single file: no label unless asked
    assert expand(str(one), label="fish").items[0].label == "fish"
    (url,) = expand("https://example.org/x.jpg").items
    assert url.is_url


def test_missing_path_is_an_error() -> None:
    with pytest.raises(SourceError, match="no such file"):
        expand("/definitely/not/here")
