"""Tencent Cloud VectorDB as a vector engine, through the official ``tcvectordb`` SDK (HTTP client).

Selected with ``LOOKALIKE_VECTOR_BACKEND=tcvectordb+http(s)://host:port`` (``LOOKALIKE_TCVECTORDB_USERNAME``,
default root, and ``LOOKALIKE_TCVECTORDB_KEY``), or ``lookalike reindex --to tcvectordb+https://...``. The
design this project grew from stored photos there; its two bugs are not repeated: the document id is the
vector id (deterministic: indexing again upserts in place, never duplicates), and writes go in batches.

Collection (one per space, in database ``lookalike``, named like the other engines' collections): ``id``
string primary key; ``vector`` HNSW with COSINE (on unit vectors equal to the inner product), M and
efConstruction from ``LOOKALIKE_HNSW_M`` / ``LOOKALIKE_HNSW_EF_CONSTRUCTION``; filter indexes on
``photo_id`` and ``object`` (uint64) and ``label`` and ``detected_label`` (string); the box and detection
score stored beside them, unindexed. Label filters run inside the engine as filter expressions.

The service's rules this follows, as documented by Tencent Cloud and the SDK (tcvectordb 2.1.1):
- at most 1,000 documents per upsert (https://cloud.tencent.com/document/product/1709/95094, and the
  SDK's ``upsert`` docstring); requests here also stay under ~4 MB;
- string values in filter expressions are in double quotes; ``=``, ``in (...)``, ``and``
  (https://cloud.tencent.com/document/product/1709/112947). How a double quote inside a value is escaped
  is not documented there: it is written with a backslash (JSON string rules);
- delete and query take at most 16,384 documents per request (the SDK's ``delete`` docstring), and a
  search's limit is kept to that too;
- read consistency: the client reads with STRONG consistency (``ReadConsistency``), so a vector is found
  as soon as its upsert returned; the SDK's default is eventual;
- a missing collection answers code 15302 (the SDK's ``exists_collection``).

Tested against a live instance only when ``LOOKALIKE_TEST_TCVECTORDB_URL`` is set (none is reachable from
CI); the requests it makes are unit-tested at the SDK's HTTP layer (tests/store/test_tencent.py).
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np

from lookalike.store.errors import EngineError
from lookalike.store.payload import check_where, payload_list
from lookalike.store.vectors import as_ids, as_matrix, cut_below, no_hits

DATABASE = "lookalike"
MAX_UPSERT = 1000
MAX_PER_REQUEST = 16384
MISSING_COLLECTION = 15302
FIELDS = ("photo_id", "object", "label", "detected_label", "box", "score")


def quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def filter_expression(where: dict | None, allowed: np.ndarray | None = None) -> str | None:
    """A filter expression for payload equality filters and an id set (None: no filter)."""
    parts = []
    for key, value in check_where(where, "Tencent VectorDB").items():
        parts.append(f"{key} = {quoted(value) if isinstance(value, str) else int(value)}")
    if allowed is not None:
        parts.append(f"id in ({','.join(quoted(str(i)) for i in as_ids(allowed).tolist())})")
    return " and ".join(parts) if parts else None


def document(vector_id: int, vector: np.ndarray, payload: dict) -> dict:
    """The document stored for one vector: its id as a string, the vector, the payload fields."""
    return {"id": str(int(vector_id)), "vector": [float(x) for x in vector], "photo_id": payload["photo_id"],
            "object": payload["object"], "label": payload["label"], "detected_label": payload["detected_label"],
            "box": json.dumps([float(x) for x in payload["box"]]), "score": float(payload["score"])}  # fmt: skip


def payload_of(doc: dict) -> dict:
    return {"photo_id": int(doc["photo_id"]), "object": int(doc["object"]), "label": doc.get("label", ""),
            "detected_label": doc.get("detected_label", ""), "box": tuple(json.loads(doc.get("box", "[0,0,0,0]"))),
            "score": float(doc.get("score", 0.0))}  # fmt: skip


class TencentVectorIndex:
    kind = "tcvectordb"

    def __init__(self, url: str, collection: str, dim: int, username: str = "root", key: str | None = None,
                 m: int = 16, ef_construction: int = 200, ef_search: int = 192, shards: int = 1,
                 replicas: int = 0) -> None:  # fmt: skip
        from tcvectordb import VectorDBClient
        from tcvectordb.model.enum import ReadConsistency

        self.url, self.collection, self.dim, self.ef_search = url, collection, dim, ef_search
        self.dirty = False
        if not key:
            raise EngineError(f"Tencent VectorDB at {url}: no API key; set LOOKALIKE_TCVECTORDB_KEY "
                              "(and LOOKALIKE_TCVECTORDB_USERNAME, default root)")  # fmt: skip
        with self._errors("connect"):
            self.client = VectorDBClient(url=url, username=username, key=key, timeout=30,
                                         read_consistency=ReadConsistency.STRONG_CONSISTENCY)  # fmt: skip
            self.client.create_database_if_not_exists(DATABASE)
            if not self._exists():
                self._create(m, ef_construction, shards, replicas)

    # errors that name the backend and the setting ------------------------------------------------------
    def _errors(self, doing: str):
        return _SdkErrors(self, doing)

    def _exists(self) -> bool:
        from tcvectordb.exceptions import ServerInternalError

        try:
            self.client.describe_collection(DATABASE, self.collection)
            return True
        except ServerInternalError as exc:
            if exc.code == MISSING_COLLECTION:
                return False
            raise

    def _create(self, m: int, ef_construction: int, shards: int, replicas: int) -> None:
        from tcvectordb.model.enum import FieldType, IndexType, MetricType
        from tcvectordb.model.index import FilterIndex, HNSWParams, Index, VectorIndex

        index = Index(
            FilterIndex("id", FieldType.String, IndexType.PRIMARY_KEY),
            VectorIndex("vector", self.dim, IndexType.HNSW, MetricType.COSINE, HNSWParams(m, ef_construction)),
            FilterIndex("photo_id", FieldType.Uint64, IndexType.FILTER),
            FilterIndex("object", FieldType.Uint64, IndexType.FILTER),
            FilterIndex("label", FieldType.String, IndexType.FILTER),
            FilterIndex("detected_label", FieldType.String, IndexType.FILTER),
        )
        self.client.create_collection(DATABASE, self.collection, shard=shards, replicas=replicas,
                                      description="Lookalike photo vectors", index=index)  # fmt: skip

    # the VectorIndex protocol ------------------------------------------------------------------------------
    def load(self) -> bool:
        return True

    def save(self) -> None:
        self.dirty = False

    def wait(self) -> None:
        """Nothing runs in the background here: the engine builds its own index."""

    def refresh_reads(self) -> None:
        """Nothing to do: reads are strongly consistent (the module docstring)."""

    def disk_bytes(self) -> int:
        return 0  # held by the service

    def __len__(self) -> int:
        with self._errors("count"):
            return int(self.client.count(DATABASE, self.collection))

    def ids(self) -> np.ndarray:
        out, offset = [], 0
        with self._errors("list"):
            while True:
                docs = self.client.query(DATABASE, self.collection, limit=MAX_PER_REQUEST, offset=offset,
                                         output_fields=["id"])  # fmt: skip
                out += [int(d["id"]) for d in docs]
                if len(docs) < MAX_PER_REQUEST:
                    return np.asarray(sorted(out), dtype=np.int64)
                offset += len(docs)

    def _get(self, ids: np.ndarray, retrieve_vector: bool, fields: list[str]) -> dict[int, dict]:
        found: dict[int, dict] = {}
        ids = as_ids(ids)
        with self._errors("read"):
            for start in range(0, len(ids), MAX_PER_REQUEST):
                chunk = [str(i) for i in ids[start : start + MAX_PER_REQUEST].tolist()]
                docs = self.client.query(DATABASE, self.collection, document_ids=chunk, retrieve_vector=retrieve_vector,
                                         limit=len(chunk), output_fields=fields)  # fmt: skip
                found.update({int(d["id"]): d for d in docs})
        return found

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        ids = as_ids(ids)
        if len(ids) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        docs = self._get(ids, True, ["id", "vector"])
        return np.asarray([docs[i]["vector"] for i in ids.tolist()], dtype=np.float32)

    def payloads(self, ids: np.ndarray) -> list[dict | None]:
        ids = as_ids(ids)
        docs = self._get(ids, False, ["id", *FIELDS]) if len(ids) else {}
        return [payload_of(docs[i]) if i in docs else None for i in ids.tolist()]

    def add(self, ids, vectors, payloads=None) -> None:
        ids, vecs = as_ids(ids), as_matrix(vectors, self.dim)
        if len(ids) != len(vecs):
            raise ValueError("ids and vectors differ in length")
        docs = [document(i, v, p) for i, v, p in zip(ids.tolist(), vecs, payload_list(payloads, ids), strict=True)]
        step = max(1, min(MAX_UPSERT, 4_000_000 // (12 * self.dim + 200)))  # ~4 MB of JSON a request
        with self._errors("write"):
            for start in range(0, len(docs), step):
                self.client.upsert(DATABASE, self.collection, documents=docs[start : start + step], build_index=True)
        self.dirty = self.dirty or bool(docs)

    def remove(self, ids) -> None:
        ids = as_ids(ids)
        with self._errors("delete"):
            for start in range(0, len(ids), MAX_PER_REQUEST):
                chunk = [str(i) for i in ids[start : start + MAX_PER_REQUEST].tolist()]
                self.client.delete(DATABASE, self.collection, document_ids=chunk)
        self.dirty = self.dirty or bool(len(ids))

    def remove_photos(self, photo_ids) -> None:
        photo_ids = as_ids(photo_ids)
        with self._errors("delete"):
            for start in range(0, len(photo_ids), 1000):
                chunk = photo_ids[start : start + 1000].tolist()
                self.client.delete(DATABASE, self.collection, filter=f"photo_id in ({','.join(map(str, chunk))})")

    def search(self, queries, k, allowed=None, where=None, min_score=None):
        from tcvectordb.model.document import HNSWSearchParams

        q = as_matrix(queries, self.dim)
        keys, scores = no_hits(len(q), k)
        if allowed is not None and len(as_ids(allowed)) == 0:
            return keys, scores
        with self._errors("search"):
            results = self.client.search(DATABASE, self.collection, vectors=q.tolist(),
                                         filter=filter_expression(where, allowed),
                                         params=HNSWSearchParams(ef=max(self.ef_search, k)), retrieve_vector=False,
                                         limit=min(k, MAX_PER_REQUEST), output_fields=["id"],
                                         radius=None if min_score is None else float(min_score))  # fmt: skip
        for row, hits in enumerate(results):
            for col, hit in enumerate(hits[:k]):
                keys[row, col], scores[row, col] = int(hit["id"]), float(hit["score"])
        return cut_below(keys, scores, min_score)

    def drop(self) -> None:
        with self._errors("drop"):
            if self._exists():
                self.client.drop_collection(DATABASE, self.collection)


class _SdkErrors:
    """SDK and network failures as one clear message naming the backend and the settings, no traceback."""

    def __init__(self, index: TencentVectorIndex, doing: str) -> None:
        self.index, self.doing = index, doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        if exc is None or isinstance(exc, (EngineError, ValueError)):
            return False
        import requests
        from tcvectordb.exceptions import ConnectError, VectorDBException

        where = f"Tencent VectorDB at {self.index.url} (LOOKALIKE_VECTOR_BACKEND)"
        if isinstance(exc, (requests.RequestException, ConnectError)):
            raise EngineError(f"{where}: cannot {self.doing}: unreachable ({type(exc).__name__})") from None
        if isinstance(exc, VectorDBException):
            code = getattr(exc, "code", None)
            text = getattr(exc, "message", "") or str(exc)
            if code in (401, 403) or "auth" in text.lower() or "password" in text.lower():
                raise EngineError(f"{where}: authentication failed; check LOOKALIKE_TCVECTORDB_USERNAME and "
                                  f"LOOKALIKE_TCVECTORDB_KEY ({text.strip()[:200]})") from None  # fmt: skip
            if code == MISSING_COLLECTION:
                raise EngineError(f"{where}: collection {DATABASE}.{self.index.collection} is missing; "
                                  "`lookalike doctor` or `lookalike reindex` rebuilds it") from None  # fmt: skip
            raise EngineError(f"{where}: cannot {self.doing}: error {code}: {text.strip()[:300]}") from None
        return False
