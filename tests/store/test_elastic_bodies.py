"""The Elasticsearch backend's request bodies, checked without a server (none installs here)."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.store.elastic import bulk_body, cosine_from_score, index_body, knn_body


def test_mapping_follows_the_first_design_with_fast_refresh() -> None:
    body = index_body(1280)
    vector = body["mappings"]["properties"]["vector"]
    assert vector == {
        "type": "dense_vector", "dims": 1280, "index": True, "similarity": "dot_product",
        "index_options": {"type": "hnsw", "m": 16, "ef_construction": 256},
    }  # fmt: skip
    assert body["mappings"]["properties"]["photo_id"] == {"type": "long"}
    assert body["settings"]["refresh_interval"] == "1s"  # not the design's 180 s


def test_bulk_body_pairs_actions_with_documents() -> None:
    actions = bulk_body("photos", np.array([7, 9]), np.array([[0.6, 0.8], [1.0, 0.0]], dtype=np.float32))
    first = {"photo_id": 7, "vector": [pytest.approx(0.6), pytest.approx(0.8)]}
    assert actions == [
        {"index": {"_index": "photos", "_id": "7"}}, first,
        {"index": {"_index": "photos", "_id": "9"}}, {"photo_id": 9, "vector": [1.0, 0.0]},
    ]  # fmt: skip


def test_knn_body_with_and_without_filter() -> None:
    body = knn_body(np.array([1.0, 0.0], dtype=np.float32), 10, None)
    assert body["knn"] == {"field": "vector", "query_vector": [1.0, 0.0], "k": 10, "num_candidates": 100}
    assert body["size"] == 10 and body["_source"] is False
    filtered = knn_body(np.array([1.0, 0.0]), 5, np.array([3, 4]), num_candidates=192)
    assert filtered["knn"]["filter"] == {"terms": {"photo_id": [3, 4]}} and filtered["knn"]["num_candidates"] == 192


def test_scores_map_back_to_cosine() -> None:
    assert cosine_from_score(1.0) == 1.0 and cosine_from_score(0.5) == 0.0 and cosine_from_score(0.0) == -1.0
