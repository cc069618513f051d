"""Tencent Cloud VectorDB: what the adapter asks the official SDK for, captured at the SDK's HTTP layer.

No instance is reachable from CI, so these check the requests the SDK sends for the adapter (schema,
filters, batches, ids) and how answers become ids, scores and payloads; the shared conformance suite
(tests/store/test_vectors.py, kind "tcvectordb") runs against a real instance when
LOOKALIKE_TEST_TCVECTORDB_URL (and LOOKALIKE_TEST_TCVECTORDB_KEY) are set. `responses` stands in for the
network only: every request body below is built by the real SDK from the adapter's calls.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

pytest.importorskip("tcvectordb")
responses = pytest.importorskip("responses")

from lookalike.config import Settings  # noqa: E402
from lookalike.store.errors import EngineError  # noqa: E402
from lookalike.store.tencent import TencentVectorIndex, filter_expression  # noqa: E402
from lookalike.vectorspace import open_engine  # noqa: E402

URL = "http://vdb.test:8100"
OK = {"code": 0, "msg": "operation success"}


def reply(path: str, body: dict | None = None, method: str = "POST", status: int = 200) -> None:
    responses.add(getattr(responses, method), URL + path, json={**OK, **(body or {})}, status=status)


def bodies(path: str) -> list[dict]:
    return [json.loads(c.request.body) for c in responses.calls if c.request.url == URL + path]


def open_index(exists: bool = True, dim: int = 4, **kw) -> TencentVectorIndex:
    reply("/database/list", {"databases": ["lookalike"]}, method="GET")
    if exists:
        reply("/collection/describe", {"collection": {"database": "lookalike", "collection": "photos_v1"}})
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
        "label": ("string", "filter"), "detected_label": ("string", "filter")}  # fmt: skip
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
