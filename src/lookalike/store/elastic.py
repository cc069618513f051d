"""Elasticsearch 8 vector index (the first design's engine), via the official client.

Selected with ``LOOKALIKE_VECTOR_BACKEND=elasticsearch+http(s)://host:9200`` (``LOOKALIKE_ES_API_KEY``
optional). The mapping follows that design (dense_vector, indexed, dot_product similarity, HNSW m=16,
ef_construction=256; photo id, box, score and label beside the vector, filtered inside the kNN search)
but refreshes after each bulk write instead of its 180 s
refresh interval, which hid new photos from search for three minutes. The request bodies are built by
pure functions so they are unit-tested without a server; the conformance suite runs against a real
server when ``LOOKALIKE_TEST_ELASTICSEARCH_URL`` is set (none can be installed on the CI machine).

A photo's fields (lookalike.fields) are kept so that the strict mapping never meets a type conflict between photos:
each field is an object under ``fields`` whose one key says the value's kind, ``fields.<name>.s`` (keyword) for a
string, ``.l`` (keyword, many values) for a list of strings, ``.n`` (double: integers are exact up to 2^53, as
lookalike.fields allows) for a number, ``.b`` (boolean) for true/false, typed by dynamic templates under ``fields``
only; ``field_names`` (keyword) lists the names a photo has, for ``exists`` (an empty list indexes no value).
``fields_query`` translates a filter into the kNN search's filter with the answers of lookalike.filters.matches.
That translation is checked at the body level only (tests/store/test_elastic_bodies.py evaluates the emitted
queries with a small interpreter of the query subset on random records and filters); no server runs here.
An index made before fields were stored serves everything but filters on fields, which it refuses (reindex).
Order comparisons on text are range queries on keyword fields: a cluster with ``search.allow_expensive_queries``
off refuses those (a 400 from the cluster, not a wrong answer).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from lookalike.fields import FieldValue
from lookalike.filters import And, Compare, Filter, Not, Or, kind
from lookalike.store.errors import engine_outage
from lookalike.store.payload import UnsupportedFilter, check_where, payload_list
from lookalike.store.vectors import as_ids, as_matrix, cut_below, no_hits, sync_index

PAYLOAD_MAPPING = {
    "photo_id": {"type": "long"},
    "object": {"type": "integer"},
    "label": {"type": "keyword"},
    "detected_label": {"type": "keyword"},
    "box": {"type": "float", "index": False},  # x1, y1, x2, y2 in original pixels
    "score": {"type": "float"},
}
# a photo's fields, one object per field keyed by the value's kind (see the module's docstring)
FIELDS_MAPPING = {"fields": {"type": "object", "dynamic": True}, "field_names": {"type": "keyword"}}
SUBFIELD = {"text": "s", "list": "l", "num": "n", "flag": "b"}  # lookalike.filters.kind -> the key under a field
FIELD_TEMPLATES = [
    {f"field_{key}": {"path_match": f"fields.*.{key}", "mapping": {"type": es_type}}}
    for key, es_type in (("s", "keyword"), ("l", "keyword"), ("n", "double"), ("b", "boolean"))
]
MAX_MAPPED_FIELDS = 20_000  # index.mapping.total_fields.limit: a library's distinct field names, 2 mappings each


def document_fields(fields: dict[str, FieldValue]) -> dict:
    """A photo's fields as the document keeps them: ``{"fields": {name: {kind key: value}}, "field_names": [...]}``.
    -0.0 is written as 0.0: the index orders -0.0 below 0.0, the filter language does not."""
    typed: dict[str, dict] = {}
    for name, value in fields.items():
        key = SUBFIELD[kind(value)]
        typed[name] = {key: value + 0.0 if isinstance(value, float) else value}
    return {"fields": typed, "field_names": sorted(fields)}


def fields_of_document(source: dict) -> dict[str, FieldValue]:
    """The photo's fields back from a document (``document_fields`` read backwards)."""
    out: dict[str, FieldValue] = {}
    for name, typed in (source.get("fields") or {}).items():
        ((key, value),) = typed.items()
        out[name] = list(value) if key == "l" else value
    return out


def _term(name: str, value: object) -> dict:
    key = SUBFIELD[kind(value)]
    if isinstance(value, float):
        value = value + 0.0  # -0.0 as the documents keep it
    return {"term": {f"fields.{name}.{key}": value}}


def fields_query(f: Filter) -> dict:
    """A filter on the photos' fields (lookalike.filters) as an Elasticsearch query with the same answers as
    ``lookalike.filters.matches``: a comparison reads only the field's object of the value's kind, so a photo
    without the field, or with a value of another kind, matches no comparison; ``!=`` needs a value of the kind
    (exists) that is not the value; ``not`` is must_not of the exact query, so it matches photos without the field.
    Values stay JSON values in the body, never query text. Checked at the body level only (see the module)."""
    if isinstance(f, And):
        return {"bool": {"filter": [fields_query(p) for p in f.parts]}}
    if isinstance(f, Or):
        return {"bool": {"should": [fields_query(p) for p in f.parts], "minimum_should_match": 1}}
    if isinstance(f, Not):
        return {"bool": {"must_not": [fields_query(f.part)]}}
    assert isinstance(f, Compare)
    if f.op == "exists":
        return {"term": {"field_names": f.field}}
    if f.op == "contains":
        return {"term": {f"fields.{f.field}.l": f.value}}
    if f.op == "in":  # one terms query per kind of value: a list matches none of them (it holds, never equals)
        assert isinstance(f.value, tuple)
        by_kind: dict[str, list] = {}
        for v in f.value:
            by_kind.setdefault(SUBFIELD[kind(v)], []).append(v + 0.0 if isinstance(v, float) else v)
        queries = [{"terms": {f"fields.{f.field}.{key}": vs}} for key, vs in by_kind.items()]
        return queries[0] if len(queries) == 1 else {"bool": {"should": queries, "minimum_should_match": 1}}
    term = _term(f.field, f.value)
    if f.op == "=":
        return term
    (path,) = term["term"]
    if f.op == "!=":
        return {"bool": {"filter": [{"exists": {"field": path}}], "must_not": [term]}}
    bound = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}[f.op]
    return {"range": {path: {bound: term["term"][path]}}}


def index_body(dim: int, m: int = 16, ef_construction: int = 256) -> dict:
    """Settings and mapping of a Lookalike vector index: strict, but for the typed objects under ``fields``."""
    return {
        "settings": {
            "number_of_shards": 1,
            "number_of_replicas": 0,
            "refresh_interval": "1s",
            "mapping": {"total_fields": {"limit": MAX_MAPPED_FIELDS}},
        },
        "mappings": {
            "dynamic": "strict",
            "dynamic_templates": FIELD_TEMPLATES,
            "properties": {
                **PAYLOAD_MAPPING,
                **FIELDS_MAPPING,
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


def bulk_body(index: str, ids: np.ndarray, vectors: np.ndarray, payloads: list[dict] | None = None,
              fields: bool = True) -> list[dict]:  # fmt: skip
    """Bulk upsert actions: the document id is the vector id, so re-adding replaces. The photo's fields go in typed
    (``document_fields``) when the index has their mapping (``fields``; an older index would refuse them)."""
    ids = as_ids(ids)
    actions: list[dict] = []
    for i, v, p in zip(ids.tolist(), np.asarray(vectors, dtype=np.float32), payload_list(payloads, ids), strict=True):
        actions.append({"index": {"_index": index, "_id": str(i)}})
        document = {k: value for k, value in p.items() if k != "fields"}
        if fields:
            document.update(document_fields(p["fields"]))
        actions.append({**document, "box": list(p["box"]), "vector": [float(x) for x in v]})
    return actions


def knn_body(
    query: np.ndarray,
    k: int,
    allowed: np.ndarray | None = None,
    num_candidates: int | None = None,
    where: dict | None = None,
    min_score: float | None = None,
    fields: bool = True,
) -> dict:
    """A top-k kNN search with payload filters, a filter on fields (``where["fields"]``; ``fields``: the index has
    their mapping) and an id set applied inside the graph walk.

    Scores come back as (1 + cos) / 2, so ``min_score`` (a cosine) becomes the top-level min_score.
    """
    knn: dict = {
        "field": "vector",
        "query_vector": [float(x) for x in np.asarray(query, dtype=np.float32)],
        "k": k,
        "num_candidates": max(num_candidates or 10 * k, k),
    }
    plain = check_where({k: v for k, v in (where or {}).items() if k != "fields"}, "Elasticsearch")
    filters: list[dict] = [{"term": {key: value}} for key, value in plain.items()]
    if where and "fields" in where:
        if not fields:
            raise UnsupportedFilter("this Elasticsearch index was made before photos' fields were stored: "
                                    "`lookalike reindex` into a new one to filter on them")  # fmt: skip
        filters.append(fields_query(check_where({"fields": where["fields"]})["fields"]))
    if allowed is not None:
        filters.append({"ids": {"values": [str(i) for i in as_ids(allowed).tolist()]}})
    if filters:
        knn["filter"] = filters[0] if len(filters) == 1 else {"bool": {"filter": filters}}
    body = {"knn": knn, "size": k, "_source": False}
    if min_score is not None:
        body["min_score"] = (1.0 + float(min_score)) / 2.0
    return body


def payload_of(source: dict, fields: bool = True) -> dict:
    """A document's payload (its fields read back when the index keeps them)."""
    payload = {k: v for k, v in source.items() if k not in FIELDS_MAPPING}
    payload["box"] = tuple(source["box"])
    if fields:
        payload["fields"] = fields_of_document(source)
    return payload


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
        self.has_fields = True
        if self.es.indices.exists(index=index):
            properties = self.es.indices.get_mapping(index=index)[index]["mappings"].get("properties", {})
            if not set(PAYLOAD_MAPPING) <= set(properties):
                raise ValueError(
                    f"Elasticsearch index {index} exists without Lookalike's payload fields: "
                    "not ours to change (delete it, or point LOOKALIKE_VECTOR_BACKEND elsewhere)"
                )
            # an index made before records were stored has no "fields": it serves everything but filters on them
            self.has_fields = set(FIELDS_MAPPING) <= set(properties)
        if not self.es.indices.exists(index=index):
            body = index_body(dim, m, ef_construction)
            self.es.indices.create(index=index, settings=body["settings"], mappings=body["mappings"])

    @staticmethod
    def drop_named(url: str, index: str, api_key: str | None = None) -> None:
        """Delete an index by its name where it exists, without opening (and so making) it first."""
        from elasticsearch import Elasticsearch

        es = Elasticsearch(url, api_key=api_key, request_timeout=30)
        try:
            es.indices.delete(index=index, ignore_unavailable=True)
        finally:
            es.close()  # a client per call (tidy): its connections go with it

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
        return [payload_of(d["_source"], self.has_fields) if d.get("found") else None for d in docs]

    @guarded
    def add(self, ids, vectors, payloads=None) -> None:
        from elasticsearch.helpers import bulk

        ids, vecs = as_ids(ids), as_matrix(vectors, self.dim)
        if len(ids) != len(vecs):
            raise ValueError("ids and vectors differ in length")
        if len(ids):
            actions = bulk_body(self.index, ids, vecs, payloads, self.has_fields)
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
            body = knn_body(vec, k, allowed, self.ef_search, where, min_score, self.has_fields)
            hits = self.es.search(index=self.index, **body)["hits"]["hits"]
            for col, hit in enumerate(hits[:k]):
                keys[row, col] = int(hit["_id"])
                scores[row, col] = cosine_from_score(float(hit["_score"]))
        return cut_below(keys, scores, min_score)

    @guarded
    def drop(self) -> None:
        self.es.indices.delete(index=self.index, ignore_unavailable=True)
