"""The Elasticsearch backend's request bodies, checked without a server (none installs here)."""

from __future__ import annotations

import inspect
import json
import math
import operator
import random

import numpy as np
import pytest

from lookalike import filters
from lookalike.filters import And, Compare, Not, Or
from lookalike.store.elastic import (
    ElasticsearchIndex,
    bulk_body,
    cosine_from_score,
    document_fields,
    fields_of_document,
    index_body,
    knn_body,
    payload_of,
)
from lookalike.store.milvus import filter_expression
from lookalike.store.payload import UnsupportedFilter


def test_mapping_follows_the_first_design_with_fast_refresh() -> None:
    body = index_body(1280)
    props = body["mappings"]["properties"]
    assert props["vector"] == {
        "type": "dense_vector", "dims": 1280, "index": True, "similarity": "dot_product",
        "index_options": {"type": "hnsw", "m": 16, "ef_construction": 256},
    }  # fmt: skip
    assert props["photo_id"] == {"type": "long"} and props["label"] == {"type": "keyword"}
    assert props["detected_label"] == {"type": "keyword"} and props["score"] == {"type": "float"}
    assert props["box"]["type"] == "float" and props["object"] == {"type": "integer"}
    assert body["settings"]["refresh_interval"] == "1s"  # not the design's 180 s
    assert body["mappings"]["dynamic"] == "strict"


def test_bulk_body_pairs_actions_with_documents_and_payloads() -> None:
    vecs = np.array([[0.6, 0.8], [1.0, 0.0]], dtype=np.float32)
    box = {"photo_id": 9, "object": 2, "label": "street", "detected_label": "dog", "box": (1, 2, 30, 40),
           "score": 0.75}  # fmt: skip
    actions = bulk_body("photos", np.array([7, 9 << 10 | 2]), vecs, [{"photo_id": 7, "label": "goldfish"}, box])
    assert actions[0] == {"index": {"_index": "photos", "_id": "7"}}
    assert actions[1] == {"photo_id": 7, "object": 0, "label": "goldfish", "detected_label": "",
                          "box": [0.0, 0.0, 0.0, 0.0], "score": 0.0, "fields": {}, "field_names": [],
                          "vector": [pytest.approx(0.6), pytest.approx(0.8)]}  # fmt: skip
    assert actions[2] == {"index": {"_index": "photos", "_id": str(9 << 10 | 2)}}
    assert actions[3]["box"] == [1.0, 2.0, 30.0, 40.0] and actions[3]["detected_label"] == "dog"
    plain = bulk_body("photos", np.array([5]), vecs[:1])  # no payload: the id is the photo
    assert plain[1]["photo_id"] == 5 and plain[1]["object"] == 0


def test_knn_body_with_and_without_filters() -> None:
    body = knn_body(np.array([1.0, 0.0], dtype=np.float32), 10, None)
    assert body["knn"] == {"field": "vector", "query_vector": [1.0, 0.0], "k": 10, "num_candidates": 100}
    assert body["size"] == 10 and body["_source"] is False and "min_score" not in body
    by_ids = knn_body(np.array([1.0, 0.0]), 5, np.array([3, 4]), num_candidates=192)
    assert by_ids["knn"]["filter"] == {"ids": {"values": ["3", "4"]}} and by_ids["knn"]["num_candidates"] == 192
    by_label = knn_body(np.array([1.0, 0.0]), 5, where={"label": "pizza"}, min_score=0.5)
    assert by_label["knn"]["filter"] == {"term": {"label": "pizza"}}
    assert by_label["min_score"] == pytest.approx(0.75)  # (1 + cosine) / 2
    both = knn_body(np.array([1.0, 0.0]), 5, np.array([3]), where={"label": "a", "detected_label": "dog"})
    assert both["knn"]["filter"] == {"bool": {"filter": [
        {"term": {"label": "a"}}, {"term": {"detected_label": "dog"}}, {"ids": {"values": ["3"]}}]}}  # fmt: skip
    with pytest.raises(ValueError, match="cannot filter"):
        knn_body(np.array([1.0, 0.0]), 5, where={"box": 1})
    with pytest.raises(ValueError, match="lookalike.filters filter"):
        knn_body(np.array([1.0, 0.0]), 5, where={"fields": "price < 3"})


def test_milvus_filter_expression_quotes_strings() -> None:
    assert filter_expression(None, None) == ""
    assert filter_expression({"label": 'say "hi"', "object": 0}, np.array([1, 2])) == (
        'label == "say \\"hi\\"" and object == 0 and id in [1,2]'
    )


def test_scores_map_back_to_cosine() -> None:
    assert cosine_from_score(1.0) == 1.0 and cosine_from_score(0.5) == 0.0 and cosine_from_score(0.0) == -1.0


def test_every_method_that_calls_the_cluster_is_guarded() -> None:
    """An unreachable cluster must become EngineUnavailable (503) in every call, never a 500: each method whose body
    talks to the cluster goes through ``guarded`` (disk_bytes once lost it when a method was inserted above it)."""
    talking = [name for name, fn in vars(ElasticsearchIndex).items()
               if inspect.isfunction(fn) and name != "__init__" and "self.es." in inspect.getsource(fn)]  # fmt: skip
    assert "disk_bytes" in talking and "search" in talking
    unguarded = [name for name in talking if not hasattr(vars(ElasticsearchIndex)[name], "__wrapped__")]
    assert not unguarded, unguarded


# --- filters on fields, checked at the body level ---------------------------------------------------------------
# No Elasticsearch server installs here, so the emitted queries are evaluated by a small interpreter of exactly the
# query subset elastic.py emits (bool filter/should/must_not, term, terms, range, exists) over documents indexed as
# the mapping says (the dynamic templates' types; keyword ordered by UTF-8 bytes, double with -0.0 below 0.0 as
# Lucene's points do), and compared with lookalike.filters.matches. Anything outside the subset fails the test.


def _indexed(document: dict, mapping: dict) -> dict[str, list]:
    """The values a document indexes per field path, typed as the mapping and its templates say."""
    templates = {t["path_match"].rsplit(".", 1)[1]: t["mapping"]["type"]
                 for entry in mapping["dynamic_templates"] for t in entry.values()}  # fmt: skip
    assert set(templates) == {"s", "l", "n", "b"}
    out: dict[str, list] = {"field_names": [_typed("keyword", v) for v in document.get("field_names", [])]}
    assert set(document) <= set(mapping["properties"]), "a strict mapping refuses this document"
    for name, typed in document.get("fields", {}).items():
        assert filters_key(name) and len(typed) == 1, typed
        for key, value in typed.items():
            values = value if isinstance(value, list) else [value]
            assert key == "l" or not isinstance(value, list), "only lists are many-valued"
            out[f"fields.{name}.{key}"] = [_typed(templates[key], v) for v in values]
    return out


def filters_key(name: str) -> bool:
    from lookalike.fields import KEY

    return bool(KEY.fullmatch(name))


def _typed(es_type: str, value: object) -> tuple:
    """A value as the index orders it: (type, sort key); a value the field's type cannot take fails (as ES would)."""
    if es_type == "keyword":
        assert isinstance(value, str), value
        return ("keyword", value.encode())
    if es_type == "double":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), value
        x = float(value)
        return ("double", (x, math.copysign(1.0, x)) if x == 0 else (x, 0.0))  # Lucene: -0.0 < 0.0, unequal
    assert es_type == "boolean" and isinstance(value, bool), value
    return ("boolean", value)


def _type_of(path: str) -> str:
    if path == "field_names":
        return "keyword"
    prefix, name, key = path.split(".")
    assert prefix == "fields" and filters_key(name), path
    return {"s": "keyword", "l": "keyword", "n": "double", "b": "boolean"}[key]


def run(query: dict, doc: dict[str, list]) -> bool:
    """Whether an indexed document matches a query of the emitted subset."""
    ((clause, body),) = query.items()
    if clause == "bool":
        assert set(body) <= {"filter", "should", "must_not", "minimum_should_match"}, body
        assert "should" not in body or body.get("minimum_should_match") == 1
        ok = all(run(q, doc) for q in body.get("filter", []))
        ok = ok and not any(run(q, doc) for q in body.get("must_not", []))
        return ok and ("should" not in body or any(run(q, doc) for q in body["should"]))
    if clause == "exists":
        assert set(body) == {"field"}
        return bool(doc.get(body["field"]))
    ((path, arg),) = body.items()
    have = doc.get(path, [])
    if clause == "term":
        return _typed(_type_of(path), arg) in have
    if clause == "terms":
        assert isinstance(arg, list)
        return any(_typed(_type_of(path), v) in have for v in arg)
    assert clause == "range" and len(arg) == 1, query
    ((bound, value),) = arg.items()
    _, limit = _typed(_type_of(path), value)
    test = {"lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge}[bound]
    return any(test(v, limit) for _, v in have)


HOSTILE = ['" or 1=1 --', "') OR ('1'='1", '{"match_all": {}}', '{"query": {"exists": {"field": "x"}}}', "*:*",
           "\\", '\\"', "a\\u0022b", "ü😀", "Ärla", "z", "", " ", "fields.price.n", "<script>"]  # fmt: skip


def es_records() -> list[dict]:
    """The shop's records (tests/test_filters.py: every kind, missing fields, text where others have numbers) and
    records made to be awkward: hostile and non-ASCII text, -0.0 and 0, integers at 2^53, empty lists, one name
    holding each kind in different photos."""
    from tests.test_filters import records

    rng = random.Random(5)
    out = records()
    for n in range(60):
        rec: dict = {"title": rng.choice(HOSTILE), "price": rng.choice([0, -0.0, 0.0, 2**53, -(2**53), 1.5, -3, 7])}
        rec["odd"] = rng.choice(["7", 7, 7.0, True, False, ["7", "a"], [], rng.choice(HOSTILE), [rng.choice(HOSTILE)]])
        if n % 4:
            rec["tags"] = rng.sample(HOSTILE, rng.randint(0, 3))
        out.append(rec)
    return out


def random_es_filter(rng: random.Random, recs: list[dict], depth: int = 0) -> filters.Filter:
    """Random filters over the records' own values (tests/test_filters.py) and the awkward ones."""
    from tests.test_filters import random_filter

    if depth < 2 and rng.random() < 0.3:
        parts = tuple(random_es_filter(rng, recs, depth + 1) for _ in range(rng.randint(1, 3)))
        return And(parts) if rng.random() < 0.5 else Or(parts)
    if depth < 2 and rng.random() < 0.15:
        return Not(random_es_filter(rng, recs, depth + 1))
    if rng.random() < 0.4:
        return random_filter(rng, [r for r in recs if all(v != [] for v in r.values())], 2)
    name = rng.choice(["title", "price", "odd", "tags", "nothing"])
    value = rng.choice([*HOSTILE, 0, -0.0, 0.0, 2**53, 7, 7.0, 1.25, -3, True, False])
    op = rng.choice(["=", "!=", "<", "<=", ">", ">=", "in", "contains", "exists"])
    if op == "exists":
        return Compare(name, op)
    if op == "in":
        return Compare(name, op, tuple(rng.sample([*HOSTILE[:4], 0, -0.0, 7, 7.0, True, False, "7"], 3)))
    if op == "contains":
        return Compare(name, op, rng.choice([*HOSTILE, "7", "a", "dairy", "shelf1"]))
    if isinstance(value, bool) and op not in ("=", "!="):
        op = "="
    return Compare(name, op, value)


def test_fields_filters_answer_as_the_reference_does() -> None:
    """Random filters on random records: the kNN filter elastic.py emits, run by the interpreter above over the
    documents bulk_body writes, selects exactly the photos lookalike.filters.matches selects."""
    mapping = index_body(4)["mappings"]
    recs = es_records()
    ids = np.arange(1, len(recs) + 1)
    payloads = [{"photo_id": int(i), "fields": r} for i, r in zip(ids, recs, strict=True)]
    actions = json.loads(json.dumps(bulk_body("photos", ids, np.zeros((len(ids), 4)), payloads)))
    docs = {int(a["index"]["_id"]): _indexed(d, mapping) for a, d in zip(actions[::2], actions[1::2], strict=True)}
    rng = random.Random(2)
    seen = set()
    for _ in range(600):
        f = filters.checked(random_es_filter(rng, recs))
        body = json.loads(json.dumps(knn_body(np.zeros(4), 5, where={"fields": f, "label": "x"})))
        assert body["knn"]["filter"]["bool"]["filter"][0] == {"term": {"label": "x"}}
        query = body["knn"]["filter"]["bool"]["filter"][1]
        want = [i for i, r in zip(ids.tolist(), recs, strict=True) if filters.matches(f, r)]
        assert [i for i in ids.tolist() if run(query, docs[i])] == want, f
        seen.add(0 < len(want) < len(recs))
    assert seen == {True, False}  # some filters select some photos, some all or none


def test_every_single_comparison_answers_as_the_reference_does() -> None:
    """Each op on each field with each awkward value (zeros of both signs, 2^53, text that reads like a number, every
    kind against every kind), alone and negated."""
    mapping = index_body(4)["mappings"]
    recs = es_records()
    docs = [_indexed(json.loads(json.dumps(document_fields(r))), mapping) for r in recs]
    values = [*HOSTILE[:6], "7", "", 0, -0.0, 0.0, 2**53, -(2**53), 7, 7.0, 1.5, True, False]
    for name in ("title", "price", "odd", "tags", "nothing"):
        for op in filters.OPS:
            for value in values:
                if op == "exists":
                    f = Compare(name, op)
                elif op == "in":
                    f = Compare(name, op, (value, values[(values.index(value) + 7) % len(values)]))
                elif op == "contains":
                    if not isinstance(value, str):
                        continue
                    f = Compare(name, op, value)
                elif isinstance(value, bool) and op not in ("=", "!="):
                    continue
                else:
                    f = Compare(name, op, value)
                for g in (f, Not(f)):
                    query = json.loads(json.dumps(knn_body(np.zeros(4), 5, where={"fields": g})))["knn"]["filter"]
                    got = [run(query, d) for d in docs]
                    assert got == [filters.matches(g, r) for r in recs], g


def test_fields_round_trip_through_documents_with_hostile_values_as_plain_json() -> None:
    """A record comes back from its document as it went in; every string reaches the body as a JSON value equal to
    itself (never spliced into query text), so a hostile one only ever matches itself."""
    recs = es_records()
    for rec in recs:
        doc = json.loads(json.dumps(document_fields(rec)))
        assert fields_of_document(doc) == rec and doc["field_names"] == sorted(rec)
    for text in HOSTILE:
        f = filters.from_json({"and": [{"field": "title", "op": "=", "value": text},
                                       {"field": "tags", "op": "contains", "value": text}]})  # fmt: skip
        query = knn_body(np.zeros(2), 3, where={"fields": f})["knn"]["filter"]
        assert query == {"bool": {"filter": [{"term": {"fields.title.s": text}}, {"term": {"fields.tags.l": text}}]}}
        matched = [r for r in recs if run(query, _indexed(document_fields(r), index_body(2)["mappings"]))]
        assert all(r["title"] == text and text in r["tags"] for r in matched)


def test_old_indexes_refuse_fields_filters_and_write_no_fields() -> None:
    """An index made before the fields mapping would reject documents with fields (strict) and has nothing to filter
    on: its writes leave them out and a filter on them says to reindex."""
    f = filters.parse("price < 3")
    with pytest.raises(UnsupportedFilter, match="reindex"):
        knn_body(np.zeros(2), 3, where={"fields": f}, fields=False)
    assert knn_body(np.zeros(2), 3, where={"label": "a"}, fields=False)["knn"]["filter"] == {"term": {"label": "a"}}
    old = bulk_body("photos", np.array([1]), np.zeros((1, 2)), [{"fields": {"price": 2}}], fields=False)[1]
    assert "fields" not in old and "field_names" not in old
    assert payload_of({**old}, fields=False).get("fields") is None
    new = bulk_body("photos", np.array([1]), np.zeros((1, 2)), [{"fields": {"price": 2}}])[1]
    assert new["fields"] == {"price": {"n": 2}} and new["field_names"] == ["price"]
    assert payload_of(new)["fields"] == {"price": 2}
    assert index_body(2)["mappings"]["properties"]["fields"] == {"type": "object", "dynamic": True}
