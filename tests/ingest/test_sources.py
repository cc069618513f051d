"""Sources: folders (recursive, labels from folder names), CSVs, URL lists, single files."""

from __future__ import annotations

import json
import os
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


def test_a_csvs_extra_columns_are_the_photos_fields_typed_per_column(tmp_path: Path) -> None:
    from tests.shop import price, product_rows, write_csv

    rows = product_rows(skus=2, per_sku=3)
    items = expand(str(write_csv(tmp_path / "shop.csv", rows))).items
    assert len(items) == 6 and not any(i.error for i in items)
    first = items[0]
    sku = rows[0]["label"]
    assert first.label == sku
    assert first.fields == {"id": 1, "title": sku.replace("-", " "), "brand": sku.split("-")[0],
                            "category": rows[0]["category"], "price": price(sku), "url": rows[0]["url"],
                            "organic": False, "tags": "dairy|shelf0"}  # fmt: skip
    # types given: the id as text, the tags as a list
    typed = expand(str(tmp_path / "shop.csv"), kinds={"id": "str", "tags": "list"}).items[0].fields
    assert typed is not None and typed["id"] == "1" and typed["tags"] == ["dairy", "shelf0"]
    with pytest.raises(SourceError, match="does not have: colour"):
        expand(str(tmp_path / "shop.csv"), kinds={"colour": "str"})


def test_a_cell_that_does_not_fit_its_type_rejects_its_row_only(tmp_path: Path) -> None:
    from tests.shop import product_rows, write_csv

    rows = product_rows(skus=1, per_sku=3)
    rows[1]["price"] = "cheap"
    items = expand(str(write_csv(tmp_path / "shop.csv", rows)), kinds={"price": "float"}).items
    assert [i.error for i in items] == [None, "field 'price': 'cheap' is not a float", None]
    # inferred instead: the column is text, every row kept
    assert {type(i.fields["price"]) for i in expand(str(tmp_path / "shop.csv")).items if i.fields} == {str}
    # a spreadsheet's export: an unnamed index column, names with spaces and dashes: fields under usable names
    (tmp_path / "export.csv").write_text(",path,label,Product Name,image-url,1st,path_\n0,x.jpg,a,Mug,http://x,7,q\n")
    item = expand(str(tmp_path / "export.csv")).items[0]
    assert item.fields == {"Product_Name": "Mug", "image_url": "http://x", "_1st": 7, "path_": "q"}


def test_a_json_lines_manifest_gives_paths_labels_and_fields(tmp_path: Path) -> None:
    goldfish = TOWHEE / "train" / "goldfish"
    photos = sorted(goldfish.iterdir())[:2]
    lines = [json.dumps({"path": str(photos[0]), "label": "fish", "fields": {"title": "Goldfish", "price": 3}}),
             "", json.dumps({"path": os.path.relpath(photos[1], tmp_path), "fields": {"tags": ["orange"]}}),
             "{not json", json.dumps({"label": "no path"}), json.dumps({"path": "x.jpg", "fields": {"a b": 1}}),
             json.dumps(["a", "list"]), "[" * 30000 + "]" * 30000]  # fmt: skip
    (tmp_path / "photos.jsonl").write_text("\n".join(lines) + "\n")
    items = expand(str(tmp_path / "photos.jsonl")).items
    assert [(Path(i.source).name, i.label, i.fields, i.error) for i in items[:2]] == [
        (photos[0].name, "fish", {"title": "Goldfish", "price": 3}, None),
        (photos[1].name, None, {"tags": ["orange"]}, None)]  # fmt: skip
    errors = [(i.source.rsplit(":", 1)[-1] if ".jsonl:" in i.source else Path(i.source).name, i.error)
              for i in items[2:]]  # fmt: skip
    assert errors[0][0] == "4" and "not a JSON object" in errors[0][1]
    assert errors[1] == ("5", 'a manifest line needs "path": a file or URL')
    assert errors[2][0] == "x.jpg" and "letters, digits" in errors[2][1]
    assert errors[3] == ("7", 'a manifest line needs "path": a file or URL')
    assert errors[4][0] == "8" and "not a JSON object" in errors[4][1]  # nested past the parser's depth: skipped
