"""The filter language: read from text and JSON, checked, hostile input refused; the embedded engine's columns
answer exactly as the reference evaluation does, on records made from a real product catalogue."""

from __future__ import annotations

import random

import numpy as np
import pytest

from lookalike import filters
from lookalike.filters import And, Compare, FilterError, Not, Or
from lookalike.store.fieldcolumns import FieldColumns
from lookalike.store.payload import PayloadTable, UnsupportedFilter, check_where, whole_photo


def test_text_and_json_say_the_same_filter() -> None:
    text = filters.parse('brand = "Arla" and (price < 20 or tags contains "sale") and not organic = true')
    same = filters.from_json({"and": [{"field": "brand", "op": "=", "value": "Arla"},
                                      {"or": [{"field": "price", "op": "<", "value": 20},
                                              {"field": "tags", "op": "contains", "value": "sale"}]},
                                      {"not": {"field": "organic", "op": "=", "value": True}}]})  # fmt: skip
    assert text == same
    assert filters.parse("a in [1, 'x', true] or b exists OR c != 2.5e1") == Or((
        Compare("a", "in", (1, "x", True)), Compare("b", "exists"), Compare("c", "!=", 25.0)))  # fmt: skip
    assert filters.parse('order = 1') == Compare("order", "=", 1)  # keywords inside names are names
    assert filters.parse('title = "say \\"hi\\" \\\\ now"') == Compare("title", "=", 'say "hi" \\ now')


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"), ("price <", "column"), ("price < cheap", "column"), ("a = 1 b = 2", "column"),
    ("x < true", "no order"), ("1x = 2", "column"), ("a = 99999999999999999999", "out of range"),
    ("a = 9007199254740993", "integers up to"),
    ("(" * 9 + "a = 1" + ")" * 9, "nests"), ("not " * 2000 + "a = 1", "at most 4096 characters"),
    ("not " * 900 + "a = 1", "nests"), (" or ".join(f"a = {i}" for i in range(70)), "at most 64"),
    ("a in [" + ",".join(["1"] * 101) + "]", "1 to 100"), ('a = "' + "x" * 2001 + '"', "at most 2000"),
    ("a = 1; DROP TABLE images", "column"), ('brand = "x" || true', "column"), ("__import__('os') = 1", "column"),
])  # fmt: skip
def test_bad_and_hostile_filters_are_refused_with_the_reason(text: str, fragment: str) -> None:
    with pytest.raises(FilterError, match=fragment):
        filters.parse(text)


def test_bad_json_filters_are_refused() -> None:
    deep: dict = {"field": "a", "op": "=", "value": 1}
    for _ in range(20):
        deep = {"not": deep}
    for bad, fragment in (([], "object"), ({"field": "a"}, "comparison"), ({"field": "a", "op": "~", "value": 1}, "op"),
                          ({"and": []}, "1 to 64"), ({"and": "x"}, "1 to 64"), (deep, "nests"),
                          ({"field": "a b", "op": "=", "value": 1}, "field name"),
                          ({"field": "a", "op": "=", "value": {"$gt": 1}}, "string, a number"),
                          ({"field": "a", "op": "in", "value": 1}, "list"),
                          ({"field": "a", "op": "=", "value": float("nan")}, "finite"),
                          ({"field": "a", "op": "contains", "value": 1}, "string")):  # fmt: skip
        with pytest.raises(FilterError, match=fragment):
            filters.from_json(bad)


def test_strings_that_look_like_query_languages_are_plain_values() -> None:
    """What an engine's query language would read as code is a value here: it only ever equals itself."""
    nasty = ['" or 1=1 --', "') OR ('1'='1", 'label == "x" || id > 0', '{"$ne": null}', "*:*", "\\", "ü😀"]
    columns = FieldColumns()
    columns.grow(len(nasty) + 1)
    for row, text in enumerate(nasty):
        columns.put(row, {"title": text})
    live = np.ones(columns.size, dtype=bool)
    for row, text in enumerate(nasty):
        f = filters.from_json({"field": "title", "op": "=", "value": text})
        assert np.flatnonzero(columns.mask(f, live)).tolist() == [row]


def records() -> list[dict]:
    """Records of a real product catalogue (tests/shop.py: the shared grocery photos), varied a little so every
    kind of value and a missing field occur."""
    from tests.shop import product_rows

    out = []
    rng = random.Random(0)
    for row in product_rows(skus=31, per_sku=3):
        rec: dict = {"title": row["title"], "brand": row["brand"], "price": float(row["price"]), "id": int(row["id"]),
                     "organic": row["organic"] == "true", "tags": row["tags"].split("|")}  # fmt: skip
        if rng.random() < 0.2:
            del rec["price"]
        if rng.random() < 0.1:
            rec["price"] = "n/a"  # text where the others have numbers
        out.append(rec)
    return out


def random_filter(rng: random.Random, recs: list[dict], depth: int = 0) -> filters.Filter:
    if depth < 2 and rng.random() < 0.4:
        parts = tuple(random_filter(rng, recs, depth + 1) for _ in range(rng.randint(1, 3)))
        return And(parts) if rng.random() < 0.5 else Or(parts)
    if depth < 2 and rng.random() < 0.15:
        return Not(random_filter(rng, recs, depth + 1))
    rec = rng.choice(recs)
    name = rng.choice(["title", "brand", "price", "id", "organic", "tags", "nothing"])
    value = rec.get(name, 1)
    if isinstance(value, list):
        return Compare(name, "contains", rng.choice(value))
    op = rng.choice(["=", "!=", "<", "<=", ">", ">=", "in", "exists"])
    if op == "exists":
        return Compare(name, "exists")
    if op == "in":
        other = rng.choice(recs).get(name, "x")
        return Compare(name, "in", (value, "x" if isinstance(other, list) else other))
    if isinstance(value, bool) and op not in ("=", "!="):
        op = "="
    return Compare(name, op, value)


def test_the_engines_columns_answer_as_the_reference_does() -> None:
    recs = records()
    table = PayloadTable()
    ids = np.arange(1, len(recs) + 1, dtype=np.int64)
    table.put(ids, [whole_photo(int(i), "x", r) for i, r in zip(ids, recs, strict=True)])
    table.remove(ids[:5])  # removed rows match nothing
    table.put(ids[5:8], [whole_photo(int(i), "x", {"title": "changed"}) for i in ids[5:8]])  # replaced records
    truth = {int(i): r for i, r in zip(ids, recs, strict=True) if i > 5}
    truth |= {int(i): {"title": "changed"} for i in ids[5:8]}
    rng = random.Random(1)
    for _ in range(300):
        f = filters.checked(random_filter(rng, recs))
        want = sorted(i for i, r in truth.items() if filters.matches(f, r))
        assert table.select({"fields": f}).tolist() == want, f
        assert table.select({"label": "x", "fields": f}).tolist() == want


def test_only_the_embedded_index_takes_a_fields_filter() -> None:
    f = filters.parse("price < 3")
    assert check_where({"fields": f})["fields"] == f
    with pytest.raises(UnsupportedFilter, match="Milvus cannot filter on fields"):
        check_where({"fields": f}, "Milvus")
