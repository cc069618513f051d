"""The Elasticsearch backend's request bodies, checked without a server (none installs here)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from lookalike.store.elastic import ElasticsearchIndex, bulk_body, cosine_from_score, index_body, knn_body
from lookalike.store.milvus import filter_expression


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
                          "box": [0.0, 0.0, 0.0, 0.0], "score": 0.0,
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
