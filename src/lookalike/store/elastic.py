"""Elasticsearch 8 vector index (the first design's engine), via the official client.

Selected with ``LOOKALIKE_VECTOR_BACKEND=elasticsearch+http(s)://host:9200`` (``LOOKALIKE_ES_API_KEY``
optional). The mapping follows that design (dense_vector, indexed, dot_product similarity, HNSW m=16,
ef_construction=256; photo id, box, score and label beside the vector, filtered inside the kNN search)
but refreshes after each bulk write instead of its 180 s
refresh interval, which hid new photos from search for three minutes. The request bodies are built by
pure functions so they are unit-tested without a server; the conformance suite runs against a real
server when ``LOOKALIKE_TEST_ELASTICSEARCH_URL`` is set (none can be installed on the CI machine).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from lookalike.store.errors import engine_outage
from lookalike.store.payload import check_where, payload_list
from lookalike.store.vectors import as_ids, as_matrix, cut_below, no_hits, sync_index

PAYLOAD_MAPPING = {
    "photo_id": {"type": "long"},
    "object": {"type": "integer"},
    "label": {"type": "keyword"},
    "detected_label": {"type": "keyword"},
    "box": {"type": "float", "index": False},  # x1, y1, x2, y2 in original pixels
    "score": {"type": "float"},
}


def index_body(dim: int, m: int = 16, ef_construction: int = 256) -> dict:
    """Settings and mapping of a Lookalike vector index."""
    return {
        "settings": {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                **PAYLOAD_MAPPING,
                "vector": {
                    "type": "dense_vector",
                    "dims": dim,
                    "index": True,
                    "similarity": "dot_product",  # vectors are unit length
                    "index_options": {"type": "hnsw", "m": m, "ef_construction": ef_construction},
                },
            },
        },
    }


def bulk_body(index: str, ids: np.ndarray, vectors: np.ndarray, payloads: list[dict] | None = None) -> list[dict]:
    """Bulk upsert actions: the document id is the vector id, so re-adding replaces."""
    ids = as_ids(ids)
    actions: list[dict] = []
    for i, v, p in zip(ids.tolist(), np.asarray(vectors, dtype=np.float32), payload_list(payloads, ids), strict=True):
        actions.append({"index": {"_index": index, "_id": str(i)}})
        # the photo's fields stay out until this engine filters on them (lookalike.store.payload.check_where)
        document = {k: value for k, value in p.items() if k != "fields"}
        actions.append({**document, "box": list(p["box"]), "vector": [float(x) for x in v]})
    return actions


def knn_body(
    query: np.ndarray,
    k: int,
    allowed: np.ndarray | None = None,
    num_candidates: int | None = None,
    where: dict | None = None,
    min_score: float | None = None,
) -> dict:
    """A top-k kNN search with payload filters and an id set applied inside the graph walk.

    Scores come back as (1 + cos) / 2, so ``min_score`` (a cosine) becomes the top-level min_score.
    """
    knn: dict = {
        "field": "vector",
        "query_vector": [float(x) for x in np.asarray(query, dtype=np.float32)],
        "k": k,
        "num_candidates": max(num_candidates or 10 * k, k),
    }
    filters: list[dict] = [{"term": {key: value}} for key, value in check_where(where, "Elasticsearch").items()]
    if allowed is not None:
        filters.append({"ids": {"values": [str(i) for i in as_ids(allowed).tolist()]}})
    if filters:
        knn["filter"] = filters[0] if len(filters) == 1 else {"bool": {"filter": filters}}
    body = {"knn": knn, "size": k, "_source": False}
    if min_score is not None:
        body["min_score"] = (1.0 + float(min_score)) / 2.0
    return body


def cosine_from_score(score: float) -> float:
    """Elasticsearch's dot_product score for unit vectors is (1 + dot) / 2."""
    return 2.0 * score - 1.0


F = TypeVar("F", bound=Callable)


def is_unreachable(exc: BaseException) -> bool:
    """Whether an error of the client means the cluster cannot serve right now (refused, timed out, 5xx such as a
    failover's 503), rather than a bad request."""
    from elastic_transport import ConnectionError as TransportConnectionError
    from elastic_transport import ConnectionTimeout
    from elasticsearch import ApiError

    if isinstance(exc, TransportConnectionError | ConnectionTimeout | ConnectionError | TimeoutError):
        return True
    return isinstance(exc, ApiError) and int(getattr(exc.meta, "status", 0) or 0) >= 500


def guarded(method: F) -> F:
    """The one place an unreachable cluster becomes ``EngineUnavailable`` (retried, 503), for every call."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with engine_outage(is_unreachable, f"Elasticsearch is unreachable ({method.__name__})"):
            return method(self, *args, **kwargs)

    return call  # type: ignore[return-value]


class ElasticsearchIndex:
    kind = "elasticsearch"

    @guarded
    def __init__(
        self,
        url: str,
        index: str,
        dim: int,
        api_key: str | None = None,
        m: int = 16,
        ef_construction: int = 256,
        ef_search: int = 192,
    ) -> None:
        from elasticsearch import Elasticsearch

        self.es = Elasticsearch(url, api_key=api_key, request_timeout=30, max_retries=2, retry_on_timeout=True)
        self.index, self.dim, self.ef_search = index, dim, ef_search
        self.dirty = False
        if self.es.indices.exists(index=index):
            properties = self.es.indices.get_mapping(index=index)[index]["mappings"].get("properties", {})
            if not set(PAYLOAD_MAPPING) <= set(properties):
                raise ValueError(
                    f"Elasticsearch index {index} exists without Lookalike's payload fields: "
                    "not ours to change (delete it, or point LOOKALIKE_VECTOR_BACKEND elsewhere)"
                )
        if not self.es.indices.exists(index=index):
            body = index_body(dim, m, ef_construction)
            self.es.indices.create(index=index, settings=body["settings"], mappings=body["mappings"])

    def load(self) -> bool:
        return True

    @guarded
    def save(self) -> None:
        self.es.indices.refresh(index=self.index)
        self.dirty = False

    def wait(self) -> None:
        """Nothing runs in the background here: the engine builds its own index."""

    def refresh_reads(self) -> None:
        """Nothing to do: every write is searchable once acknowledged."""

    @guarded
    def disk_bytes(self) -> int:
        stats = self.es.indices.stats(index=self.index, metric="store")
        return int(stats["_all"]["primaries"]["store"]["size_in_bytes"])

    def sync(self, catalog_ids: np.ndarray, fetch, fetch_payloads=None) -> tuple[int, int]:
        return sync_index(self, catalog_ids, fetch, fetch_payloads, 2048)

    @guarded
    def __len__(self) -> int:
        return int(self.es.count(index=self.index)["count"])

    @guarded
    def ids(self) -> np.ndarray:
        from elasticsearch.helpers import scan

        rows = scan(self.es, index=self.index, query={"query": {"match_all": {}}}, _source=False)
        return np.asarray(sorted(int(r["_id"]) for r in rows), dtype=np.int64)

    @guarded
    def vectors(self, ids: np.ndarray) -> np.ndarray:
        ids = as_ids(ids)
        if len(ids) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        docs = self.es.mget(index=self.index, ids=[str(i) for i in ids.tolist()])["docs"]
        return np.asarray([d["_source"]["vector"] for d in docs], dtype=np.float32)

    @guarded
    def payloads(self, ids: np.ndarray) -> list[dict | None]:
        ids = as_ids(ids)
        if len(ids) == 0:
            return []
        docs = self.es.mget(index=self.index, ids=[str(i) for i in ids.tolist()], source_excludes=["vector"])["docs"]
        return [{**d["_source"], "box": tuple(d["_source"]["box"])} if d.get("found") else None for d in docs]

    @guarded
    def add(self, ids, vectors, payloads=None) -> None:
        from elasticsearch.helpers import bulk

        ids, vecs = as_ids(ids), as_matrix(vectors, self.dim)
        if len(ids) != len(vecs):
            raise ValueError("ids and vectors differ in length")
        if len(ids):
            actions = bulk_body(self.index, ids, vecs, payloads)
            ops = [{"_op_type": "index", "_index": a["index"]["_index"], "_id": a["index"]["_id"], **d}
                   for a, d in zip(actions[::2], actions[1::2], strict=True)]  # fmt: skip
            bulk(self.es, ops, refresh="wait_for")  # searchable when this returns
            self.dirty = True

    @guarded
    def remove(self, ids) -> None:
        from elasticsearch.helpers import bulk

        ids = as_ids(ids)
        if len(ids):
            ops = [{"_op_type": "delete", "_index": self.index, "_id": str(i)} for i in ids.tolist()]
            bulk(self.es, ops, refresh="wait_for", raise_on_error=False)
            self.dirty = True

    @guarded
    def remove_photos(self, photo_ids) -> None:
        photo_ids = as_ids(photo_ids)
        if len(photo_ids):
            self.es.delete_by_query(index=self.index, query={"terms": {"photo_id": photo_ids.tolist()}},
                                    refresh=True, conflicts="proceed")  # fmt: skip
            self.dirty = True

    @guarded
    def search(self, queries, k, allowed=None, where=None, min_score=None):
        q = as_matrix(queries, self.dim)
        keys, scores = no_hits(len(q), k)
        if allowed is not None and len(as_ids(allowed)) == 0:
            return keys, scores
        for row, vec in enumerate(q):
            body = knn_body(vec, k, allowed, self.ef_search, where, min_score)
            hits = self.es.search(index=self.index, **body)["hits"]["hits"]
            for col, hit in enumerate(hits[:k]):
                keys[row, col] = int(hit["_id"])
                scores[row, col] = cosine_from_score(float(hit["_score"]))
        return cut_below(keys, scores, min_score)

    @guarded
    def drop(self) -> None:
        self.es.indices.delete(index=self.index, ignore_unavailable=True)
