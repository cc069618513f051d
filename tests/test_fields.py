"""A photo's fields: names, values and limits checked, CSV cells typed, command-line assignments read."""

from __future__ import annotations

import pytest

from lookalike import fields
from lookalike.fields import FieldError


def test_values_of_every_kind_are_kept_and_others_refused() -> None:
    record = {"title": "Blue mug", "price": 12.5, "stock": 3, "organic": False, "tags": ["red", "sale"]}
    assert fields.check_fields(record) == record
    for bad, named in (({"price": float("nan")}, "finite"), ({"size": {"w": 1}}, "not dict"),
                       ({"tags": ["a", 1]}, "strings only"), ({"big": 2**70}, "integers up to"),
                       ({"1st": "x"}, "letters"), ({"path": "x"}, "reserved"), ({"a b": 1}, "letters"),
                       ({"t": "x\x00y"}, "NUL"), ({"t": "x" * (fields.MAX_TEXT + 1)}, "at most")):  # fmt: skip
        with pytest.raises(FieldError, match=named):
            fields.check_fields(bad)
    with pytest.raises(FieldError, match="at most 64 fields"):
        fields.check_fields({f"f{i}": i for i in range(fields.MAX_FIELDS + 1)})
    with pytest.raises(FieldError, match="bytes as JSON"):  # under every per-value limit, over the record's
        fields.check_fields({f"f{i}": "é" * 1500 for i in range(10)})
    with pytest.raises(FieldError, match="object"):
        fields.check_fields(["not", "an", "object"])


def test_changes_merge_key_by_key_and_null_removes() -> None:
    assert fields.merged({"a": 1, "b": "x"}, {"b": None, "c": True}) == {"a": 1, "c": True}
    with pytest.raises(FieldError):
        fields.merged({}, {"bad key": 1})


def test_a_columns_kind_is_the_narrowest_that_reads_every_cell() -> None:
    assert fields.infer_kind(["1", "2", ""]) == "int"
    assert fields.infer_kind(["1", "2.5"]) == "float"
    assert fields.infer_kind(["true", "False", "yes"]) == "bool"
    assert fields.infer_kind(["12", "n/a"]) == "str"
    assert fields.infer_kind(["nan"]) == "str"  # not a finite number: text
    # codes that only look like numbers stay text: a leading zero (a zip code, an EAN), a sign, a separator
    for code in ("02134", "0012345678905", "+4412345", "1_000", "12345678901234567890"):
        assert fields.kind_of(code) == "str", code
    assert [fields.kind_of(c) for c in ("0", "-7", "3.25", ".5", "1e3", "-0.5")] == ["int", "int"] + ["float"] * 4
    assert fields.parse_cell("tags", "red| sale |", "list") == ["red", "sale"]
    assert fields.parse_cell("price", " 7 ", "float") == 7.0
    with pytest.raises(FieldError, match="'price': 'cheap' is not a float"):
        fields.parse_cell("price", "cheap", "float")
    assert fields.parse_kinds(["price:float", "tags:list"]) == {"price": "float", "tags": "list"}
    with pytest.raises(FieldError, match="NAME:TYPE"):
        fields.parse_kinds(["price:money"])


def test_command_line_assignments() -> None:
    assert fields.parse_assignment("price=12.5") == ("price", 12.5)
    assert fields.parse_assignment('tags=["a","b"]') == ("tags", ["a", "b"])
    assert fields.parse_assignment("title=Blue mug") == ("title", "Blue mug")
    assert fields.parse_assignment("sku=007") == ("sku", "007")  # not JSON (a leading zero): kept as written
    assert fields.parse_assignment("on=true") == ("on", True)
    assert fields.parse_assignment("url=") == ("url", None)
    with pytest.raises(FieldError, match="NAME=VALUE"):
        fields.parse_assignment("price")


def test_a_shops_csv_puts_its_records_on_every_hit(settings, embedder, tmp_path) -> None:
    """Index a product CSV of real photos: hits carry their records; a corrected row updates the record on the next
    run without reading a photo again; a hand edit stays until its source's row changes."""
    from lookalike.library import Library
    from tests.shop import price, product_rows, write_csv

    rows = product_rows(skus=3, per_sku=4)
    csv_path = write_csv(tmp_path / "shop.csv", rows)
    with Library(settings, embedder=embedder) as lib:
        report = lib.index([str(csv_path)], kinds={"tags": "list"})
        assert len(report.added) + len(report.duplicates) == 12 and not report.rejected
        hit = lib.search(rows[0]["path"], k=3).hits[0]
        assert hit.fields["title"] == rows[0]["title"] and hit.fields["price"] == price(rows[0]["label"])
        assert hit.fields["tags"] == ["dairy", "shelf0"] and hit.as_dict()["fields"]["url"] == rows[0]["url"]
        image_id = hit.id
        lib.set_fields(image_id, {"on_sale": True})
        # the shop changes a price: the next run updates the record, reads no photo
        rows[0]["price"] = "1.99"
        write_csv(csv_path, rows)
        again = lib.index([str(csv_path)], kinds={"tags": "list"})
        assert again.unchanged == 12 and not again.added
        record = lib.get(image_id).fields
        assert record["price"] == 1.99 and record["on_sale"] is True  # the hand edit stays
        assert lib.search(rows[0]["path"], k=1).hits[0].fields["price"] == 1.99  # the search's cache follows
        with pytest.raises(FieldError):
            lib.set_fields(image_id, {"price": float("inf")})


def test_a_filter_on_fields_returns_every_match_and_nothing_else(settings, embedder, tmp_path) -> None:
    """Filters run inside the engine before it ranks: a filter matching a few photos of 60 returns all of them
    (no post-filtering that would leave fewer), the query's own copy included only if it passes, and the engine
    keeps the records across a restart."""
    from lookalike.filters import matches, parse
    from lookalike.library import Library
    from tests.shop import product_rows, write_csv

    rows = product_rows(skus=6, per_sku=10)
    csv_path = write_csv(tmp_path / "shop.csv", rows)
    query = rows[0]["path"]
    with Library(settings, embedder=embedder) as lib:
        lib.index([str(csv_path)], kinds={"tags": "list"})
        records = lib.catalog.get_many(lib.catalog.ids().tolist())
        for text in (f'brand = "{rows[-1]["brand"]}" and price > 0', "id in [3, 47] or id = 60",
                     'tags contains "shelf2"', f'not title = "{rows[0]["title"]}" and id <= 20', "organic = true",
                     'price >= 20 and not brand = "Arla"'):  # fmt: skip
            f = parse(text)
            exact = {i for i, rec in records.items() if matches(f, rec.fields)}
            found = {h.id for h in lib.search(query, k=60, where=f).hits}
            assert found == exact, text
            top = lib.search(query, k=3, where=f).hits
            assert len(top) == min(3, len(exact)) and all(matches(f, h.fields) for h in top), text
        own = lib.search(query, k=1).hits[0]
        assert own.copy and own.fields["id"] == 1
        assert 1 not in {h.fields["id"] for h in lib.search(query, k=5, where=parse("id > 1")).hits}
    with Library(settings, embedder=embedder) as lib:  # the engine's columns were saved with it
        assert {h.fields["id"] for h in lib.search(query, k=60, where=parse("id in [3, 47]")).hits} == {3, 47}
