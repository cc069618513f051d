"""Tencent Cloud VectorDB: what the adapter asks the official SDK for, captured at the SDK's HTTP layer.

No instance is reachable from CI, so these check the requests the SDK sends for the adapter (schema,
filters, batches, ids) and how answers become ids, scores and payloads; the shared conformance suite
(tests/store/test_vectors.py, kind "tcvectordb") runs against a real instance when
LOOKALIKE_TEST_TCVECTORDB_URL (and LOOKALIKE_TEST_TCVECTORDB_KEY) are set. `responses` stands in for the
network only: every request body below is built by the real SDK from the adapter's calls.
"""

from __future__ import annotations

import json
import math
import operator
import random
import re
import socket
import struct

import numpy as np
import pytest

pytest.importorskip("tcvectordb")
responses = pytest.importorskip("responses")

from lookalike import filters  # noqa: E402
from lookalike.config import Settings  # noqa: E402
from lookalike.filters import And, Compare, Not, Or  # noqa: E402
from lookalike.store.errors import EngineError  # noqa: E402
from lookalike.store.payload import UnsupportedFilter  # noqa: E402
from lookalike.store.tencent import (  # noqa: E402
    TencentVectorIndex,
    batches,
    document_fields,
    fields_expression,
    filter_expression,
    number_key,
)
from lookalike.vectorspace import open_engine  # noqa: E402
from tests.store.test_elastic_bodies import HOSTILE, es_records, random_es_filter  # noqa: E402

URL = "http://vdb.test:8100"
OK = {"code": 0, "msg": "operation success"}


def reply(path: str, body: dict | None = None, method: str = "POST", status: int = 200) -> None:
    responses.add(getattr(responses, method), URL + path, json={**OK, **(body or {})}, status=status)


def bodies(path: str) -> list[dict]:
    return [json.loads(c.request.body) for c in responses.calls if c.request.url == URL + path]


FIELDS_INDEXES = [{"fieldName": "fields", "fieldType": "json", "indexType": "filter"},
                  {"fieldName": "field_keys", "fieldType": "array", "indexType": "filter"}]  # fmt: skip


def open_index(exists: bool = True, dim: int = 4, fields: bool = False, **kw) -> TencentVectorIndex:
    """An index on a collection that exists (made before fields were stored, or with their indexes: ``fields``) or
    is made now."""
    reply("/database/list", {"databases": ["lookalike"]}, method="GET")
    if exists:
        indexes = [{"fieldName": "id", "fieldType": "string", "indexType": "primaryKey"}]
        described = {"database": "lookalike", "collection": "photos_v1",
                     "indexes": indexes + (FIELDS_INDEXES if fields else [])}  # fmt: skip
        reply("/collection/describe", {"collection": described})
    else:
        reply("/collection/describe", {"code": 15302, "msg": "collection not exist"})
        reply("/collection/create")
    return TencentVectorIndex(URL, "photos_v1", dim, "root", "secret", **kw)


@responses.activate
def test_a_new_collection_gets_the_schema() -> None:
    open_index(exists=False, m=24, ef_construction=300)
    (created,) = bodies("/collection/create")
    assert created["database"] == "lookalike" and created["collection"] == "photos_v1"
    indexes = {i["fieldName"]: i for i in created["indexes"]}
    assert indexes["id"]["indexType"] == "primaryKey" and indexes["id"]["fieldType"] == "string"
    vector = indexes["vector"]
    assert vector["indexType"] == "HNSW" and vector["metricType"] == "COSINE" and vector["dimension"] == 4
    assert vector["params"] == {"M": 24, "efConstruction": 300}
    assert {k: (v["fieldType"], v["indexType"]) for k, v in indexes.items() if k not in ("id", "vector")} == {
        "photo_id": ("uint64", "filter"), "object": ("uint64", "filter"),
        "label": ("string", "filter"), "detected_label": ("string", "filter"),
        "fields": ("json", "filter"), "field_keys": ("array", "filter")}  # fmt: skip
    auth = responses.calls[0].request.headers["Authorization"]
    assert auth == "Bearer account=root&api_key=secret"


@responses.activate
def test_an_existing_collection_is_left_as_it_is() -> None:
    open_index(exists=True)
    assert bodies("/collection/create") == [] and bodies("/collection/drop") == []


@pytest.mark.parametrize(
    ("where", "allowed", "expected"),
    [
        (None, None, None),
        ({"label": "cats"}, None, 'label = "cats"'),
        ({"label": 'a "quoted" label'}, None, 'label = "a \\"quoted\\" label"'),
        ({"detected_label": "dog", "label": "castle"}, None, 'detected_label = "dog" and label = "castle"'),
        ({"photo_id": 510}, None, "photo_id = 510"),
        ({"object": 0}, None, "object = 0"),
        (None, np.array([3, 5]), 'id in ("3","5")'),
        ({"label": "x"}, np.array([7]), 'label = "x" and id in ("7")'),
    ],
)
def test_filter_expressions(where, allowed, expected) -> None:
    assert filter_expression(where, allowed) == expected


def test_filters_refuse_unknown_fields() -> None:
    with pytest.raises(ValueError, match="cannot filter"):
        filter_expression({"box": 1})


@responses.activate
def test_writes_go_in_bounded_batches_with_deterministic_ids() -> None:
    index = open_index(dim=4)
    reply("/document/upsert", {"affectedCount": 1000})
    ids = np.arange(1, 2501, dtype=np.int64)
    vecs = np.ones((2500, 4), dtype=np.float32) / 2
    payloads = [{"photo_id": int(i), "label": "cats", "box": (1, 2, 3, 4), "score": 0.5} for i in ids]
    index.add(ids, vecs, payloads)
    sent = bodies("/document/upsert")
    assert [len(b["documents"]) for b in sent] == [1000, 1000, 500] and all(b["buildIndex"] for b in sent)
    first = sent[0]["documents"][0]
    assert first["id"] == "1" and first["vector"] == [0.5] * 4 and first["photo_id"] == 1
    assert first["label"] == "cats" and json.loads(first["box"]) == [1, 2, 3, 4] and first["score"] == 0.5
    index.add(ids[:1], vecs[:1], payloads[:1])  # the same id again: the same document id, an upsert
    assert bodies("/document/upsert")[-1]["documents"][0]["id"] == "1"


@responses.activate
def test_large_vectors_keep_requests_small() -> None:
    index = open_index(dim=1280)
    reply("/document/upsert")
    index.add(np.arange(600), np.ones((600, 1280), dtype=np.float32))
    assert max(len(b["documents"]) for b in bodies("/document/upsert")) <= 260


@responses.activate
def test_search_sends_the_filter_ef_and_min_score_and_maps_answers_back() -> None:
    index = open_index(dim=4, ef_search=64)
    reply("/document/search", {"documents": [[{"id": "42", "score": 0.93}, {"id": "7", "score": 0.61}],
                                             [{"id": "8", "score": 0.88}]]})  # fmt: skip
    q = np.ones((2, 4), dtype=np.float32) / 2
    ids, scores = index.search(q, 3, where={"label": "cats"}, min_score=0.6)
    (sent,) = bodies("/document/search")
    search = sent["search"]
    assert search["filter"] == 'label = "cats"' and search["limit"] == 3 and search["params"] == {"ef": 64}
    assert search["radius"] == 0.6 and search["retrieveVector"] is False and len(search["vectors"]) == 2
    assert ids.tolist() == [[42, 7, -1], [8, -1, -1]] and scores[0, 0] == pytest.approx(0.93)
    assert np.isinf(scores[0, 2])


@responses.activate
def test_payloads_vectors_and_removal() -> None:
    index = open_index(dim=4)
    reply("/document/query", {"documents": [
        {"id": "5", "photo_id": 2, "object": 1, "label": "street", "detected_label": "dog",
         "box": "[1.5, 2, 30, 40]", "score": 0.9}]})  # fmt: skip
    got = index.payloads(np.array([5, 6]))
    assert got[1] is None and got[0] == {"photo_id": 2, "object": 1, "label": "street", "detected_label": "dog",
                                         "box": (1.5, 2.0, 30.0, 40.0), "score": 0.9}  # fmt: skip
    assert bodies("/document/query")[0]["query"]["documentIds"] == ["5", "6"]
    reply("/document/delete", {"affectedCount": 2})
    index.remove(np.array([5, 6]))
    index.remove_photos(np.array([2, 3]))
    deletes = [b["query"] for b in bodies("/document/delete")]
    assert deletes[0]["documentIds"] == ["5", "6"] and deletes[1]["filter"] == "photo_id in (2,3)"


def test_an_unreachable_server_names_the_backend_and_the_setting() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    expected = r"Tencent VectorDB at http://127.0.0.1:\d+ .*LOOKALIKE_VECTOR_BACKEND.*unreachable"
    with pytest.raises(EngineError, match=expected):
        TencentVectorIndex(f"http://127.0.0.1:{port}", "photos_v1", 4, "root", "secret")


@responses.activate
def test_a_wrong_key_and_a_missing_collection_are_clear_messages() -> None:
    refusal = {"code": 1, "msg": "authentication failed: wrong api_key"}
    responses.add(responses.GET, URL + "/database/list", json=refusal)
    with pytest.raises(EngineError, match="LOOKALIKE_TCVECTORDB_USERNAME and LOOKALIKE_TCVECTORDB_KEY"):
        TencentVectorIndex(URL, "photos_v1", 4, "root", "wrong")
    with pytest.raises(EngineError, match="LOOKALIKE_TCVECTORDB_KEY"):
        TencentVectorIndex(URL, "photos_v1", 4, "root", None)
    responses.reset()
    index = open_index()
    reply("/document/count", {"code": 15302, "msg": "collection not exist"})
    with pytest.raises(EngineError, match="collection lookalike.photos_v1 is missing"):
        len(index)


def test_the_backend_setting_selects_it(tmp_path) -> None:
    settings = Settings(home=tmp_path, tcvectordb_key="secret", hnsw_m=20)
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, URL + "/database/list", json={**OK, "databases": []})
        mock.add(responses.POST, URL + "/database/create", json=OK)
        mock.add(responses.POST, URL + "/collection/describe", json={"code": 15302, "msg": "no"})
        mock.add(responses.POST, URL + "/collection/create", json=OK)
        index = open_engine(f"tcvectordb+{URL}", "lk_x_photos_v3", 8, settings, tmp_path)
        created = json.loads(mock.calls[-1].request.body)
    assert isinstance(index, TencentVectorIndex) and created["collection"] == "lk_x_photos_v3"
    assert {i["fieldName"]: i for i in created["indexes"]}["vector"]["params"]["M"] == 20


# --- filters on fields ------------------------------------------------------------------------------------------
# No instance runs here, so the expressions tencent.py emits are run by a small interpreter of the subset it uses
# (and/or, parentheses, = != < <= > >= on uint64 and strings, in / not in, include / exclude on arrays) over the
# documents the SDK sends, and compared with lookalike.filters.matches. What the engine does with a JSON key a
# document lacks is not documented: the interpreter answers such a comparison first with False, then with True,
# and the expressions must give the reference's answers either way. Anything outside the subset fails the test.

TOKEN = re.compile(r'\s*(?:(?P<num>\d+)|(?P<str>"[^"\\]*")|(?P<op>!=|<=|>=|=|<|>|\(|\)|,)|(?P<word>[A-Za-z_][\w.]*))')
ABSENT = object()


def tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text.rstrip()):
        m = TOKEN.match(text, pos)
        assert m and m.end() > pos, f"outside the subset at {text[pos : pos + 30]!r}"
        out.append(m.group(m.lastgroup))
        pos = m.end()
    return out


class Expression:
    """An emitted filter expression, parsed once (and binds tighter than or, as Tencent documents), then run on
    documents as the SDK sent them."""

    def __init__(self, text: str) -> None:
        self.toks, self.at = tokens(text), 0
        self.tree = self._or()
        assert self.at == len(self.toks), self.toks[self.at :]

    def _peek(self) -> str | None:
        return self.toks[self.at] if self.at < len(self.toks) else None

    def _take(self, want: str | None = None) -> str:
        tok = self.toks[self.at]
        assert want is None or tok == want, (tok, want)
        self.at += 1
        return tok

    def _or(self):
        parts = [self._and()]
        while self._peek() == "or":
            self._take()
            parts.append(self._and())
        return ("or", parts) if len(parts) > 1 else parts[0]

    def _and(self):
        parts = [self._atom()]
        while self._peek() == "and":
            self._take()
            parts.append(self._atom())
        return ("and", parts) if len(parts) > 1 else parts[0]

    def _atom(self):
        if self._peek() == "(":
            self._take("(")
            inner = self._or()
            self._take(")")
            return inner
        path = self._take()
        assert re.fullmatch(r"fields\.(s|l|b|nh|nl)_[A-Za-z_]\w*|field_keys|label|detected_label|photo_id|object|id",
                            path), path  # fmt: skip
        op = self._take()
        if op in ("not", "include", "exclude", "in"):
            if op == "not":
                self._take("in")
                op = "not in"
            self._take("(")
            values = [self._value()]
            while self._peek() == ",":
                self._take(",")
                values.append(self._value())
            self._take(")")
            return (op, path, values)
        assert op in ("=", "!=", "<", "<=", ">", ">="), op
        return (op, path, self._value())

    def _value(self) -> int | str:
        tok = self._take()
        if tok.isdigit():
            assert int(tok) < 2**32, "numbers in expressions stay below 2^32"
            return int(tok)
        assert tok[0] == '"', tok
        return tok[1:-1]

    def run(self, doc: dict, missing: bool) -> bool:
        return self._run(self.tree, doc, missing)

    def _run(self, node, doc: dict, missing: bool) -> bool:
        op, *args = node
        if op in ("and", "or"):
            results = [self._run(p, doc, missing) for p in args[0]]
            return all(results) if op == "and" else any(results)
        path, arg = args
        if path.startswith("fields."):
            have = doc.get("fields", {}).get(path.split(".", 1)[1], ABSENT)
        else:
            have = doc.get(path, ABSENT)
        if have is ABSENT:
            return missing
        if op in ("include", "exclude"):
            assert isinstance(have, list) and all(isinstance(v, str) for v in arg), (path, arg)
            if op == "exclude":
                assert len(arg) == 1, "exclude of one value only: its meaning for several is not documented"
                return arg[0] not in have
            return any(v in have for v in arg)
        assert not isinstance(have, list), path
        values = arg if isinstance(arg, list) else [arg]
        assert all(type(v) is type(have) for v in values), ("compared across types", path, have, arg)
        if op in ("in", "not in"):
            return (have in values) == (op == "in")
        if isinstance(have, str):
            assert op in ("=", "!="), "strings are compared with = and != only"
        return {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
                ">=": operator.ge}[op](have, arg)  # fmt: skip


def sent_documents(recs: list[dict]) -> list[dict]:
    """The documents of these records as the SDK sends them to a collection that keeps fields."""
    index = open_index(fields=True)
    reply("/document/upsert")
    ids = np.arange(1, len(recs) + 1)
    index.add(ids, np.ones((len(recs), 4), dtype=np.float32) / 2, [{"fields": r} for r in recs])
    docs = [d for b in bodies("/document/upsert") for d in b["documents"]]
    assert [d["id"] for d in docs] == [str(i) for i in ids]
    return docs


def text_ordered(f: filters.Filter) -> bool:
    """Whether a filter compares text by order (what Tencent VectorDB refuses)."""
    if isinstance(f, (And, Or)):
        return any(text_ordered(p) for p in f.parts)
    if isinstance(f, Not):
        return text_ordered(f.part)
    return f.op in ("<", "<=", ">", ">=") and isinstance(f.value, str)


def answers(f: filters.Filter, docs: list[dict]) -> tuple[list[bool], list[bool]]:
    """What the emitted expression selects, with missing keys answered False and True."""
    expression = Expression(fields_expression(f))
    return [expression.run(d, False) for d in docs], [expression.run(d, True) for d in docs]


@responses.activate
def test_fields_filters_answer_as_the_reference_does() -> None:
    """Random filters on awkward records (every kind, missing fields, one name holding each kind in different photos,
    hostile text, -0.0, 2^53): the expression selects exactly what lookalike.filters.matches selects, whatever the
    engine does with missing keys; a filter that orders text is refused, and only such a filter."""
    recs = es_records()
    docs = sent_documents(recs)
    rng = random.Random(2)
    seen, refused = set(), 0
    for _ in range(600):
        f = filters.checked(random_es_filter(rng, recs))
        if text_ordered(f):
            with pytest.raises(UnsupportedFilter, match="cannot order text"):
                fields_expression(f)
            refused += 1
            continue
        want = [filters.matches(f, r) for r in recs]
        assert answers(f, docs) == (want, want), f
        seen.add(0 < sum(want) < len(recs))
    assert seen == {True, False} and 0 < refused < 300


@responses.activate
def test_every_single_comparison_answers_as_the_reference_does() -> None:
    """Each op on each field with each awkward value (zeros of both signs, 2^53, text that reads like a number, every
    kind against every kind), alone and negated."""
    recs = es_records()
    docs = sent_documents(recs)
    values = [*HOSTILE[:6], "7", "", 0, -0.0, 0.0, 2**53, -(2**53), 7, 7.0, 1.5, -1e-300, True, False]
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
                elif isinstance(value, str) and op in ("<", "<=", ">", ">="):
                    continue  # refused (test_text_order_and_old_collections_are_refused)
                else:
                    f = Compare(name, op, value)
                for g in (f, Not(f)):
                    want = [filters.matches(g, r) for r in recs]
                    assert answers(g, docs) == (want, want), g
    for g in (Compare("b", "in", (True, False)), Not(Compare("b", "in", (True, False, 1)))):  # both booleans
        bools = [{"b": True}, {"b": False}, {"b": 1}, {"b": "true"}, {}]
        want = [filters.matches(g, r) for r in bools]
        assert answers(g, [document_fields(r) for r in bools]) == (want, want), g


def test_each_operator_as_an_expression() -> None:
    """What each node becomes: guarded by the key of the value's kind, strings as hex, numbers as two halves of their
    order-preserving key, ``not`` pushed down to the comparisons."""
    acme, red = b"acme".hex(), b"red".hex()
    assert acme == "61636d65"
    h3, l3 = number_key(3) >> 32, number_key(3) & 0xFFFF_FFFF
    n3 = f"(fields.nh_p = {h3} and fields.nl_p = {l3})"
    lt3 = f"(fields.nh_p < {h3} or (fields.nh_p = {h3} and fields.nl_p < {l3}))"
    gt3 = f"(fields.nh_p > {h3} or (fields.nh_p = {h3} and fields.nl_p > {l3}))"
    has_p, lacks_p = 'field_keys include ("n_p")', 'field_keys exclude ("n_p")'
    cases = {
        'b = "acme"': f'(field_keys include ("s_b") and fields.s_b = "{acme}")',
        'b != "acme"': f'(field_keys include ("s_b") and fields.s_b != "{acme}")',
        'not b = "acme"': f'(field_keys exclude ("s_b") or fields.s_b != "{acme}")',
        'b in ["acme", "red"]': f'(field_keys include ("s_b") and fields.s_b in ("{acme}", "{red}"))',
        'not b in ["acme"]': f'(field_keys exclude ("s_b") or fields.s_b not in ("{acme}"))',
        "p = 3": f"({has_p} and {n3})",
        "p = 3.0": f"({has_p} and {n3})",
        "p != 3": f"({has_p} and ({lt3} or {gt3}))",
        "p < 3": f"({has_p} and {lt3})",
        "p <= 3": f"({has_p} and (fields.nh_p < {h3} or (fields.nh_p = {h3} and fields.nl_p <= {l3})))",
        "p > 3": f"({has_p} and {gt3})",
        "p >= 3": f"({has_p} and (fields.nh_p > {h3} or (fields.nh_p = {h3} and fields.nl_p >= {l3})))",
        "not p < 3": f"({lacks_p} or (fields.nh_p > {h3} or (fields.nh_p = {h3} and fields.nl_p >= {l3})))",
        "not p != 3": f"({lacks_p} or {n3})",
        "p in [3, 3.0]": f"({has_p} and ({n3}))",
        'p in [3, "acme", true]': f'(({has_p} and ({n3})) or (field_keys include ("s_p") and fields.s_p in ("{acme}"))'
        ' or (field_keys include ("b_p") and fields.b_p = 1))',
        "o = true": '(field_keys include ("b_o") and fields.b_o = 1)',
        "o != true": '(field_keys include ("b_o") and fields.b_o = 0)',
        "not o = false": '(field_keys exclude ("b_o") or fields.b_o = 1)',
        "o in [true, false]": '(field_keys include ("b_o") and fields.b_o in (0, 1))',
        "not o in [true, false]": 'field_keys exclude ("b_o")',
        't contains "red"': f'(field_keys include ("l_t") and fields.l_t include ("{red}"))',
        'not t contains "red"': f'(field_keys exclude ("l_t") or fields.l_t exclude ("{red}"))',
        "u exists": 'field_keys include ("b_u", "l_u", "n_u", "s_u")',
        "not u exists": '(field_keys exclude ("b_u") and field_keys exclude ("l_u") and field_keys exclude ("n_u")'
        ' and field_keys exclude ("s_u"))',
        'o = true and (p < 3 or not b = "acme")': f'((field_keys include ("b_o") and fields.b_o = 1) and '
        f'(({has_p} and {lt3}) or (field_keys exclude ("s_b") or fields.s_b != "{acme}")))',
        'not (o = true or b = "acme")': f'((field_keys exclude ("b_o") or fields.b_o = 0) and '
        f'(field_keys exclude ("s_b") or fields.s_b != "{acme}"))',
        "not not p < 3": f"({has_p} and {lt3})",
    }  # fmt: skip
    for text, expected in cases.items():
        assert fields_expression(filters.parse(text)) == expected, text
    assert filter_expression({"label": "x", "fields": filters.parse("u exists")}, np.array([4])) == (
        'label = "x" and field_keys include ("b_u", "l_u", "n_u", "s_u") and id in ("4")')  # fmt: skip


def test_number_keys_keep_order_and_equality() -> None:
    """The order-preserving key: numbers compare as their keys do (ints and floats alike, 0 and -0.0 one key, the
    integers at 2^53 apart, subnormals and the largest doubles in place)."""
    rng = random.Random(7)
    special = [0, -0.0, 0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308,
               2**53, 2**53 - 1, -(2**53), 1, 1.0, -1, 0.1, 0.30000000000000004, 0.3]  # fmt: skip
    values = special + [rng.uniform(-1e6, 1e6) for _ in range(300)] + [rng.randint(-(2**53), 2**53) for _ in range(300)]
    values += [struct.unpack(">d", struct.pack(">Q", rng.getrandbits(64)))[0] for _ in range(300)]
    values = [v for v in values if math.isfinite(v)]
    for a in values[:120]:
        for b in values:
            assert (number_key(a) < number_key(b)) == (a < b) and (number_key(a) == number_key(b)) == (a == b), (a, b)
    assert all(0 <= number_key(v) < 2**64 for v in values)


AWKWARD = ['" or 1=1', 'a"b', "\\\\", "\\", "\u2028", "\x7f", "日本", "fields.s_title"]


@pytest.mark.parametrize("text", HOSTILE + AWKWARD)
def test_hostile_strings_match_only_themselves(text: str) -> None:
    """Quotes, backslashes, expression text, any script: the expression holds only hex digits between its quotes
    (nothing for the engine's undocumented escapes to read), and the value matches only itself."""
    f = filters.from_json({"or": [{"field": "title", "op": "=", "value": text},
                                  {"field": "tags", "op": "contains", "value": text},
                                  {"field": "title", "op": "in", "value": [text, "z"]}]})  # fmt: skip
    expression = fields_expression(f)
    assert all(re.fullmatch(r"[0-9a-f]*|[sblnh]{1,2}_\w+", q) for q in re.findall(r'"([^"]*)"', expression))
    recs = [{"title": t, "tags": [t, "z"]} for t in HOSTILE + [text, text + " ", " " + text, text.upper()]]
    docs = [document_fields(r) for r in recs]
    run = Expression(expression)
    assert [r for r, d in zip(recs, docs, strict=True) if run.run(d, False)] == [
        r for r in recs if r["title"] in (text, "z") or text in r["tags"]]  # fmt: skip


@responses.activate
def test_documents_with_fields_as_the_sdk_sends_them_and_read_back() -> None:
    """A collection with the fields' indexes gets each photo's fields (typed JSON keys, the keys it has, the record)
    and reads them back as they were; a filtered search sends the expression beside the label filter."""
    index = open_index(fields=True)
    reply("/document/upsert")
    rec = {"brand": 'Ärla "x"', "price": 12.5, "count": 3, "organic": True, "tags": ["red", "日本"], "z": -0.0}
    index.add(np.array([5, 6]), np.ones((2, 4), dtype=np.float32) / 2, [{"photo_id": 5, "fields": rec}, None])
    first, second = bodies("/document/upsert")[0]["documents"]
    key = number_key(12.5)
    assert first["fields"] == {"s_brand": 'Ärla "x"'.encode().hex(), "nh_price": key >> 32,
                               "nl_price": key & 0xFFFF_FFFF, "nh_count": number_key(3) >> 32,
                               "nl_count": number_key(3) & 0xFFFF_FFFF, "b_organic": 1,
                               "l_tags": ["726564", "日本".encode().hex()], "nh_z": 1 << 31, "nl_z": 0}  # fmt: skip
    assert first["field_keys"] == ["_", "s_brand", "n_count", "b_organic", "n_price", "l_tags", "n_z"]
    assert json.loads(first["record"]) == rec and first["photo_id"] == 5 and first["label"] == ""
    assert second["fields"] == {} and second["field_keys"] == ["_"] and second["record"] == "{}"
    reply("/document/query", {"documents": [{**first, "box": "[0, 0, 0, 0]"}]})
    (got,) = index.payloads(np.array([5]))
    assert got is not None and got["fields"] == rec and isinstance(got["fields"]["count"], int)
    assert "record" in bodies("/document/query")[0]["query"]["outputFields"]
    reply("/document/search", {"documents": [[{"id": "5", "score": 0.9}]]})
    f = filters.parse('price < 20 and tags contains "red" and not brand = "bolt"')
    ids, _ = index.search(np.ones((1, 4), dtype=np.float32), 3, where={"label": "", "fields": f})
    (sent,) = bodies("/document/search")
    assert sent["search"]["filter"] == 'label = "" and ' + fields_expression(f) and ids[0, 0] == 5
    assert Expression(sent["search"]["filter"]).run(first, False) and filters.matches(f, rec)


@responses.activate
def test_writes_with_large_fields_stay_small() -> None:
    """Upserts stay near 4 MB with the fields' size counted (a record of 16 kB is ~64 kB of JSON in a document)."""
    index = open_index(fields=True)
    reply("/document/upsert")
    big = {f"t{i}": "x" * 1900 for i in range(8)}
    index.add(np.arange(300), np.ones((300, 4), dtype=np.float32) / 2, [{"fields": big}] * 300)
    sizes = [len(json.dumps(b)) for b in bodies("/document/upsert")]
    assert len(sizes) > 1 and max(sizes) < 4_500_000
    assert [len(b) for b in batches([{"id": "1"}] * 2500, 4)] == [1000, 1000, 500]


@responses.activate
def test_text_order_and_old_collections_are_refused() -> None:
    """Text is not ordered by Tencent's filter language: such a filter is refused, naming it. A collection made
    before fields were stored (no JSON index) serves everything else, writes no fields, and says to reindex when
    asked to filter on them."""
    for text in ('brand < "b"', 'brand >= "b"', 'not (p = 1 or brand > "a")'):
        with pytest.raises(UnsupportedFilter, match="cannot order text"):
            fields_expression(filters.parse(text))
    index = open_index(fields=False)
    assert not index.has_fields
    reply("/document/upsert")
    index.add(np.array([1]), np.ones((1, 4), dtype=np.float32), [{"fields": {"price": 2}}])
    (doc,) = bodies("/document/upsert")[0]["documents"]
    assert not {"fields", "field_keys", "record"} & set(doc)
    with pytest.raises(UnsupportedFilter, match="made before photos' fields were stored.*lookalike reindex"):
        index.search(np.ones((1, 4), dtype=np.float32), 3, where={"fields": filters.parse("price < 3")})
    reply("/document/search", {"documents": [[]]})
    index.search(np.ones((1, 4), dtype=np.float32), 3, where={"label": "a"})
    assert bodies("/document/search")[0]["search"]["filter"] == 'label = "a"'
    reply("/document/query", {"documents": [{**doc, "box": "[0, 0, 0, 0]"}]})
    (got,) = index.payloads(np.array([1]))
    assert got is not None and "fields" not in got
    assert "record" not in bodies("/document/query")[0]["query"]["outputFields"]
    assert open_index(fields=True).has_fields
