"""Milvus vector index: a Milvus Lite file, a standalone server, a cluster or Zilliz Cloud, one code path.

Selected with ``LOOKALIKE_VECTOR_BACKEND`` = a Milvus URI (``milvus-lite:///path/file.db``, or
``http://host:19530`` / ``https://...`` with ``LOOKALIKE_MILVUS_TOKEN``). The collection holds the vector
and the photo id; the catalog stays the source of truth, and ``sync`` repairs drift like the embedded index.
Version pins (pyproject): pymilvus 2.4.x, because pymilvus 3.x fails against Milvus 2.3 servers, and
milvus-lite 2.4.x, because 3.x is a pure-Python rewrite that locks its directory to one process.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from lookalike.store.vectors import MISSING, _as_ids, _as_matrix, _top_k_rows


def collection_name(name: str, dim: int, tag: str) -> str:
    """One collection per index and vector transform, so a re-learned whitening never mixes spaces."""
    digest = hashlib.sha256(tag.encode()).hexdigest()[:10]
    return f"lookalike_{name}_{dim}_{digest}"


class MilvusIndex:
    kind = "milvus"

    def __init__(
        self,
        uri: str,
        collection: str,
        dim: int,
        token: str | None = None,
        m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 192,
    ) -> None:
        from pymilvus import DataType, MilvusClient

        if uri.startswith("milvus-lite://"):
            path = Path(uri.removeprefix("milvus-lite://"))
            path.parent.mkdir(parents=True, exist_ok=True)
            uri = str(path)
        self.lite = not uri.startswith(("http://", "https://", "tcp://", "unix:"))
        self.client = MilvusClient(uri=uri, token=token or "")
        self.collection, self.dim, self.ef_search = collection, dim, ef_search
        self.dirty = False
        if not self.client.has_collection(collection):
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            index = self.client.prepare_index_params()
            if self.lite:  # Milvus Lite builds FLAT, IVF_FLAT or AUTOINDEX only
                index.add_index("vector", index_type="FLAT", metric_type="IP")
            else:
                index.add_index("vector", index_type="HNSW", metric_type="IP",
                                params={"M": m, "efConstruction": ef_construction})  # fmt: skip
            self.client.create_collection(collection, schema=schema, index_params=index, consistency_level="Strong")
        self.client.load_collection(collection)

    # the EmbeddedIndex surface the library uses -------------------------------------------------------
    def load(self) -> bool:
        return True

    def save(self) -> None:
        self.dirty = False  # every write is already durable in Milvus

    def disk_bytes(self) -> int:
        return 0  # held by the Milvus server

    def sync(self, catalog_ids: np.ndarray, fetch) -> tuple[int, int]:
        have = self.ids()
        missing = np.setdiff1d(catalog_ids, have, assume_unique=True)
        extra = np.setdiff1d(have, catalog_ids, assume_unique=True)
        if len(extra):
            self.remove(extra)
        for start in range(0, len(missing), 4096):
            chunk = missing[start : start + 4096]
            self.add(chunk, fetch(chunk))
        return len(missing), len(extra)

    # the VectorIndex protocol ------------------------------------------------------------------------
    def __len__(self) -> int:
        rows = self.client.query(self.collection, filter="id >= 0", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def ids(self) -> np.ndarray:
        out = []
        iterator = self.client.query_iterator(self.collection, batch_size=4096, filter="id >= 0", output_fields=["id"])
        while batch := iterator.next():
            out.extend(int(r["id"]) for r in batch)
        iterator.close()
        return np.asarray(sorted(out), dtype=np.int64)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        ids = _as_ids(ids)
        if len(ids) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        rows = {int(r["id"]): r["vector"] for r in self.client.get(self.collection, ids=ids.tolist())}
        return np.asarray([rows[i] for i in ids.tolist()], dtype=np.float32)

    def add(self, ids, vectors) -> None:
        ids, vecs = _as_ids(ids), _as_matrix(vectors, self.dim)
        if len(ids) != len(vecs):
            raise ValueError("ids and vectors differ in length")
        if len(ids):
            rows = [{"id": int(i), "vector": v.tolist()} for i, v in zip(ids, vecs, strict=True)]
            self.client.upsert(self.collection, rows)
            self.dirty = True

    def remove(self, ids) -> None:
        ids = _as_ids(ids)
        if len(ids):
            self.client.delete(self.collection, ids=ids.tolist())
            self.dirty = True

    def search(self, queries, k, allowed=None):
        q = _as_matrix(queries, self.dim)
        expr = ""
        if allowed is not None:
            allowed = _as_ids(allowed)
            if len(allowed) == 0:
                return _top_k_rows(np.full((len(q), 0), -np.inf, np.float32), np.zeros((len(q), 0), np.int64), k)
            expr = f"id in [{','.join(map(str, allowed.tolist()))}]"
        params = {"metric_type": "IP", "params": {} if self.lite else {"ef": max(self.ef_search, k)}}
        results = self.client.search(self.collection, q.tolist(), limit=min(k, 16384), filter=expr,
                                     search_params=params)  # fmt: skip
        keys = np.full((len(q), k), MISSING, dtype=np.int64)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        for row, hits in enumerate(results):
            for col, hit in enumerate(hits[:k]):
                keys[row, col], scores[row, col] = int(hit["id"]), float(hit["distance"])
        return keys, scores

    def drop(self) -> None:
        self.client.drop_collection(self.collection)
