"""Filters on fields as Milvus expressions: written as the filter language means them, values only ever values
(checked against a real Milvus Lite: strings that read like expressions match only themselves)."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.filters import parse
from lookalike.store.milvus import fields_expression, filter_expression
from lookalike.store.payload import UnsupportedFilter, whole_photo

NASTY = ['" or id >= 0 or "', '"] or fields["x', "\\", 'a\\"b', "ünï 😀", "') or 1=1 --", "${x}", ""]


def test_the_language_as_milvus_expressions() -> None:
    assert fields_expression(parse('brand = "Arla" and price < 20.5')) == (
        '(fields["brand"] == "Arla" and fields["price"] < 20.5)')  # fmt: skip
    assert fields_expression(parse('tags contains "red" or code in [1, "x", 2]')) == (
        '(json_contains(fields["tags"], "red") or (fields["code"] in [1, 2] or fields["code"] in ["x"]))')  # fmt: skip
    assert fields_expression(parse("price != 3")) == '(fields["price"] < 3 or fields["price"] > 3)'
    assert fields_expression(parse("organic != true")) == 'fields["organic"] == false'
    assert fields_expression(parse('title = "ünï"')) == 'fields["title"] == "ünï"'  # UTF-8, not \\u escapes
    for refused in ("not price < 3", "url exists"):
        with pytest.raises(UnsupportedFilter):
            fields_expression(parse(refused))
    with pytest.raises(UnsupportedFilter, match="reindex"):  # a collection made before fields were stored
        filter_expression({"fields": parse("a = 1")}, None, fields=False)


def test_strings_that_read_like_expressions_match_only_themselves(tmp_path) -> None:
    pytest.importorskip("pymilvus")
    from lookalike.store.milvus import MilvusIndex

    index = MilvusIndex(f"milvus-lite://{tmp_path}/m.db", "nasty", 4)
    vecs = np.eye(4, dtype=np.float32)[np.arange(len(NASTY)) % 4]
    ids = np.arange(1, len(NASTY) + 1, dtype=np.int64)
    index.add(ids, vecs, [whole_photo(int(i), "", {"title": t}) for i, t in zip(ids, NASTY, strict=True)])
    for i, text in zip(ids.tolist(), NASTY, strict=True):
        f = parse("title = " + '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
        hits, _ = index.search(np.ones((1, 4), np.float32), 20, where={"fields": f})
        assert hits[0][hits[0] >= 0].tolist() == [i], text
    # a list mixing kinds (Milvus fails on booleans beside other values): one list per kind
    f = parse('title in ["' + NASTY[4] + '", true, 3]')
    hits, _ = index.search(np.ones((1, 4), np.float32), 20, where={"fields": f})
    assert hits[0][hits[0] >= 0].tolist() == [5]
    index.client.close()
