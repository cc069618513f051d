"""Milvus vector index: a Milvus Lite file, a standalone server, a cluster or Zilliz Cloud, one code path.

Selected with ``LOOKALIKE_VECTOR_BACKEND`` = a Milvus URI (``milvus-lite:///path/file.db``, or
``http://host:19530`` / ``https://...`` with ``LOOKALIKE_MILVUS_TOKEN``). The collection holds the vector
and its payload as scalar fields (photo id, entry of the photo, label, detected label, box, detection
score), so label filters are boolean expressions inside Milvus. The catalog stays the source of truth:
processes bring the collection to it by following the catalog's change feed, and only ``lookalike
doctor --fix`` compares and repairs it wholesale.
Version pins (pyproject): pymilvus 2.4.x, because pymilvus 3.x fails against Milvus 2.3 servers, and
milvus-lite 2.4.x, because 3.x is a pure-Python rewrite that locks its directory to one process.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lookalike.filters import And, Filter, Not, Or, kind
from lookalike.store.errors import engine_outage
from lookalike.store.payload import UnsupportedFilter, check_where, payload_list
from lookalike.store.vectors import as_ids, as_matrix, cut_below, no_hits, sync_index, top_k_rows

INDEX_TYPES = ("HNSW", "IVF_FLAT", "IVF_SQ8")
SESSION = "Session"  # read-your-writes for this client, without Strong's wait on every read
SCALARS = ("photo_id", "object", "label", "detected_label", "x1", "y1", "x2", "y2", "score")


def literal(value: object) -> str:
    """A value as a Milvus literal: JSON's strings are Milvus's, but written as UTF-8 (Milvus does not read \\u
    escapes: a label or field of other scripts would match nothing), numbers as they are, true/false."""
    return json.dumps(value, ensure_ascii=False)


def fields_expression(f: Filter) -> str:
    """A filter on the photos' fields (lookalike.filters) as a Milvus expression on the JSON field ``fields``: the
    same answers as ``lookalike.filters.matches`` (Milvus compares a JSON value only with one of its own type, as
    the filter language does). ``!=`` is written as < or > (Milvus's != also matches photos without the field);
    ``not`` and ``exists`` have no equivalent Milvus runs on JSON fields, so they are refused, never approximated."""
    if isinstance(f, (And, Or)):
        joined = (" and " if isinstance(f, And) else " or ").join(fields_expression(p) for p in f.parts)
        return f"({joined})"
    if isinstance(f, Not) or f.op == "exists":
        raise UnsupportedFilter(f"Milvus cannot run '{'not' if isinstance(f, Not) else 'exists'}' on fields: write "
                                "the filter without it, or serve from the embedded index")  # fmt: skip
    ref = f"fields[{literal(f.field)}]"
    if f.op == "contains":
        return f"json_contains({ref}, {literal(f.value)})"
    if f.op == "in":  # one list per kind of value: Milvus fails on a list mixing booleans with others
        assert isinstance(f.value, tuple)
        by_kind: dict[str, list] = {}
        for v in f.value:
            by_kind.setdefault(kind(v), []).append(v)
        lists = [f"{ref} in [{', '.join(literal(v) for v in vs)}]" for vs in by_kind.values()]
        return lists[0] if len(lists) == 1 else f"({' or '.join(lists)})"
    if f.op == "!=":
        if isinstance(f.value, bool):
            return f"{ref} == {literal(not f.value)}"
        return f"({ref} < {literal(f.value)} or {ref} > {literal(f.value)})"
    return f"{ref} {'==' if f.op == '=' else f.op} {literal(f.value)}"


def filter_expression(where: dict | None, allowed: np.ndarray | None, fields: bool = False) -> str:
    """A Milvus boolean expression for payload equality filters, a filter on fields (``fields``: the collection
    holds them) and an id set."""
    parts = []
    checked = check_where({k: v for k, v in (where or {}).items() if k != "fields"}, "Milvus")
    if where and "fields" in where:
        if not fields:
            raise UnsupportedFilter("this Milvus collection was made before photos' fields were stored: `lookalike "
                                    "reindex` into a new one to filter on them")  # fmt: skip
        parts.append(fields_expression(where["fields"]))
    for key, value in checked.items():
        parts.append(f"{key} == {literal(value)}")
    if allowed is not None:
        parts.append(f"id in [{','.join(map(str, as_ids(allowed).tolist()))}]")
    return " and ".join(parts)


def row_of(vector_id: int, vector: np.ndarray, payload: dict, fields: bool = False) -> dict:
    x1, y1, x2, y2 = payload["box"]
    row = {"id": int(vector_id), "vector": vector.tolist(), "photo_id": payload["photo_id"],
           "object": payload["object"], "label": payload["label"], "detected_label": payload["detected_label"],
           "x1": x1, "y1": y1, "x2": x2, "y2": y2, "score": payload["score"]}  # fmt: skip
    if fields:
        row["fields"] = payload.get("fields") or {}
    return row


def payload_of(row: dict) -> dict:
    payload = {"photo_id": int(row["photo_id"]), "object": int(row["object"]), "label": row["label"],
               "detected_label": row["detected_label"], "box": tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2")),
               "score": float(row["score"])}  # fmt: skip
    if "fields" in row:  # a collection made before records were stored has none
        payload["fields"] = dict(row["fields"] or {})
    return payload


# what Milvus's messages say when the server is up but cannot serve: "service unavailable", "service not ready"
# (also what a standalone server answers, "Abnormal", once its session lease expired); read from the text because
# the numeric codes collide with pymilvus's own client-side errors (a ParamError is code 1 too)
OUTAGE_WORDS = ("unavailable", "not ready", "connect", "deadline", "timeout")
CALL_TIMEOUT = 10.0  # seconds a call (with pymilvus's own retries) may take before the engine counts as unavailable


def is_unreachable(exc: BaseException) -> bool:
    """Whether a pymilvus or gRPC error means the server cannot be reached right now (down, restarting, timing out),
    rather than a bad request: pymilvus retries such calls itself, then raises with the gRPC status as the code."""
    import grpc
    from pymilvus.exceptions import ConnectError, MilvusException, MilvusUnavailableException

    transient = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                 grpc.StatusCode.RESOURCE_EXHAUSTED}  # fmt: skip
    if isinstance(exc, ConnectError | MilvusUnavailableException | grpc.FutureTimeoutError):
        return True
    if isinstance(exc, grpc.RpcError):
        return exc.code() in transient if hasattr(exc, "code") else True
    if isinstance(exc, MilvusException):
        text = str(exc).lower()
        return exc.code in transient or any(w in text for w in OUTAGE_WORDS)
    return isinstance(exc, ConnectionError | TimeoutError)


class GuardedClient:
    """A MilvusClient whose calls are bounded in time and whose unreachable-server errors become
    ``EngineUnavailable`` (one place: the caller retries, a worker gives its chunk back, the service answers 503)."""

    def __init__(self, client, where: str) -> None:
        self._client, self._where = client, where
        self._calls: dict[str, Callable] = {}  # each method wrapped once: its signature is read once, not per call

    def __getattr__(self, name: str):
        if name in self._calls:
            return self._calls[name]
        method = getattr(self._client, name)
        if not callable(method):
            return method
        timed = "timeout" in inspect.signature(method).parameters

        def call(*args, **kwargs):
            if timed:
                kwargs.setdefault("timeout", CALL_TIMEOUT)
            with engine_outage(is_unreachable, f"Milvus at {self._where} is unreachable ({name})"):
                return method(*args, **kwargs)

        self._calls[name] = call
        return call


LITE_RENAMES = 3  # names tried after a collection's own in Milvus Lite (MilvusIndex._open)


def collection_name(name: str, dim: int, tag: str) -> str:
    """One collection per index and vector transform, so a re-learned whitening never mixes spaces."""
    digest = hashlib.sha256(tag.encode()).hexdigest()[:10]
    return f"lookalike_{name}_{dim}_{digest}"


def _connect(uri: str, token: str | None) -> tuple[GuardedClient, bool]:
    """A client of the server or the Milvus Lite file at ``uri``, and whether it is Milvus Lite."""
    from pymilvus import MilvusClient

    if uri.startswith("milvus-lite://"):
        uri = str(Path(uri.removeprefix("milvus-lite://")))
    with engine_outage(is_unreachable, f"Milvus at {uri} is unreachable"):
        client = MilvusClient(uri=uri, token=token or "", timeout=CALL_TIMEOUT)
    return GuardedClient(client, uri), not uri.startswith(("http://", "https://", "tcp://", "unix:"))


def _names(collection: str, lite: bool) -> list[str]:
    """A collection's name, then, in Milvus Lite, the names it may have been given instead (MilvusIndex._open)."""
    return [collection] + ([f"{collection}_{n}" for n in range(1, LITE_RENAMES + 1)] if lite else [])


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
        index_type: str = "HNSW",
        nlist: int = 4096,
        nprobe: int = 32,
    ) -> None:
        if index_type not in INDEX_TYPES:
            raise ValueError(f"Milvus index type must be one of {', '.join(INDEX_TYPES)}")

        if uri.startswith("milvus-lite://"):
            Path(uri.removeprefix("milvus-lite://")).parent.mkdir(parents=True, exist_ok=True)
        self.client, self.lite = _connect(uri, token)
        self.collection, self.dim, self.ef_search = collection, dim, ef_search
        self.index_type, self.nprobe = index_type, nprobe
        self.dirty = False
        self.collection = collection = self._open(collection, dim, m, ef_construction, index_type, nlist)
        self.client.load_collection(collection)
        # a collection made before records were stored has no "fields": it serves everything but filters on them
        self.has_fields = "fields" in {f["name"] for f in self.client.describe_collection(collection)["fields"]}
        # one Strong read makes everything written before (by any client) visible; after that each read is
        # Session: it sees this client's own writes without waiting for the server's time tick (Strong
        # costs ~200-300 ms per search on a standalone server, Session ~2 ms; bench/RESULTS.md)
        self.refresh_reads()
        # the collection's own index decides the search parameters, whatever the settings say now
        self.built_type = "FLAT" if self.lite else str(self.client.describe_index(collection, "vector")["index_type"])

    @staticmethod
    def drop_named(uri: str, collection: str, token: str | None = None) -> None:
        """Drop a collection by its name (and the names Milvus Lite may have given it instead) where it exists:
        opening it to drop it created a missing one first, which Milvus refused for the dimension it was given."""
        if uri.startswith("milvus-lite://") and not Path(uri.removeprefix("milvus-lite://")).exists():
            return
        client, lite = _connect(uri, token)
        for name in _names(collection, lite):
            if client.has_collection(name):
                client.drop_collection(name)

    def _open(self, collection: str, dim: int, m: int, ef_construction: int, index_type: str, nlist: int) -> str:
        """The collection's name, made if missing. Milvus Lite 2.4 fails to index a few names, deterministically
        (milvus-lite#250: "unrecognized token", e.g. lk_cf18e8e73c50_mobilenet_v2_objects_v2): it gets the next
        of a fixed series of names, which every process sharing the file reaches the same way."""
        from pymilvus import MilvusException

        names = _names(collection, self.lite)
        for name in names:
            self.collection = name
            if self.client.has_collection(name):
                if not self._has_payload_fields():
                    raise ValueError(
                        f"Milvus collection {name} exists without Lookalike's payload fields: "
                        "not ours to change (drop it, or point LOOKALIKE_VECTOR_BACKEND elsewhere)"
                    )
                return name
            try:
                self._create(name, dim, m, ef_construction, index_type, nlist)
                return name
            except MilvusException:
                if not self.lite or name == names[-1]:
                    raise
                self.client.drop_collection(name)  # made, but not indexed: never left for another process
        raise AssertionError("unreachable")

    def _create(self, collection: str, dim: int, m: int, ef_construction: int, index_type: str, nlist: int) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("photo_id", DataType.INT64)
        schema.add_field("object", DataType.INT32)
        schema.add_field("label", DataType.VARCHAR, max_length=1024)
        schema.add_field("detected_label", DataType.VARCHAR, max_length=256)
        for name in ("x1", "y1", "x2", "y2", "score"):
            schema.add_field(name, DataType.FLOAT)
        schema.add_field("fields", DataType.JSON)  # the photo's record, for filters (fields_expression)
        index = self.client.prepare_index_params()
        if self.lite:  # Milvus Lite builds FLAT, IVF_FLAT or AUTOINDEX only
            index.add_index("vector", index_type="FLAT", metric_type="IP")
        elif index_type == "HNSW":
            index.add_index("vector", index_type="HNSW", metric_type="IP",
                            params={"M": m, "efConstruction": ef_construction})  # fmt: skip
        else:  # IVF: exhaustive scan of the nearest cells, robust on dense collections (bench/RESULTS.md)
            index.add_index("vector", index_type=index_type, metric_type="IP", params={"nlist": nlist})
        self.client.create_collection(collection, schema=schema, index_params=index, consistency_level=SESSION)

    def _has_payload_fields(self) -> bool:
        fields = {f["name"] for f in self.client.describe_collection(self.collection)["fields"]}
        return set(SCALARS) <= fields

    # the EmbeddedIndex surface the library uses -------------------------------------------------------
    def load(self) -> bool:
        return True

    def save(self) -> None:
        self.dirty = False  # every write is already durable in Milvus

    def wait(self) -> None:
        """Nothing runs in the background here: the engine builds its own index."""

    def disk_bytes(self) -> int:
        return 0  # held by the Milvus server

    def sync(self, catalog_ids: np.ndarray, fetch, fetch_payloads=None) -> tuple[int, int]:
        return sync_index(self, catalog_ids, fetch, fetch_payloads, 4096)

    # the VectorIndex protocol ------------------------------------------------------------------------
    def __len__(self) -> int:
        rows = self.client.query(self.collection, filter="id >= 0", output_fields=["count(*)"],
                                 consistency_level=SESSION)  # fmt: skip
        return int(rows[0]["count(*)"])

    def ids(self) -> np.ndarray:
        out: list[int] = []
        iterator = self.client.query_iterator(self.collection, batch_size=4096, filter="id >= 0", output_fields=["id"],
                                              consistency_level=SESSION)  # fmt: skip
        while batch := iterator.next():
            out.extend(int(r["id"]) for r in batch)
        iterator.close()
        return np.asarray(sorted(out), dtype=np.int64)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        ids = as_ids(ids)
        if len(ids) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        got = self.client.get(self.collection, ids=ids.tolist(), consistency_level=SESSION)
        rows = {int(r["id"]): r["vector"] for r in got}
        return np.asarray([rows[i] for i in ids.tolist()], dtype=np.float32)

    def add(self, ids, vectors, payloads=None) -> None:
        ids, vecs = as_ids(ids), as_matrix(vectors, self.dim)
        if len(ids) != len(vecs):
            raise ValueError("ids and vectors differ in length")
        if len(ids):
            rows = [row_of(i, v, p, self.has_fields)
                    for i, v, p in zip(ids.tolist(), vecs, payload_list(payloads, ids), strict=True)]  # fmt: skip
            step = max(1, 2_000_000 // self.dim)  # about 8 MB a request, under gRPC's message limit
            for start in range(0, len(rows), step):
                self.client.upsert(self.collection, rows[start : start + step])
            self.dirty = True

    def payloads(self, ids: np.ndarray) -> list[dict | None]:
        ids = as_ids(ids)
        if len(ids) == 0:
            return []
        wanted = [*SCALARS, "fields"] if self.has_fields else list(SCALARS)
        got = self.client.get(self.collection, ids=ids.tolist(), output_fields=wanted, consistency_level=SESSION)
        rows = {int(r["id"]): r for r in got}
        return [payload_of(rows[i]) if i in rows else None for i in ids.tolist()]

    def remove(self, ids) -> None:
        ids = as_ids(ids)
        if len(ids):
            self.client.delete(self.collection, ids=ids.tolist())
            self.refresh_reads()  # pymilvus 2.4 does not advance the session timestamp on delete
            self.dirty = True

    def remove_photos(self, photo_ids) -> None:
        photo_ids = as_ids(photo_ids)
        if len(photo_ids):
            self.client.delete(self.collection, filter=f"photo_id in [{','.join(map(str, photo_ids.tolist()))}]")
            self.refresh_reads()
            self.dirty = True

    def refresh_reads(self) -> None:
        """A Strong read: everything written so far is visible to the Session reads that follow."""
        self.client.query(self.collection, filter="id >= 0", output_fields=["count(*)"], consistency_level="Strong")

    def search(self, queries, k, allowed=None, where=None, min_score=None):
        q = as_matrix(queries, self.dim)
        if allowed is not None and len(as_ids(allowed)) == 0:
            return top_k_rows(np.full((len(q), 0), -np.inf, np.float32), np.zeros((len(q), 0), np.int64), k)
        expr = filter_expression(where, allowed, self.has_fields)
        params = {"metric_type": "IP", "params": self._search_params(k)}
        results = self.client.search(self.collection, q.tolist(), limit=min(k, 16384), filter=expr,
                                     search_params=params, consistency_level=SESSION)  # fmt: skip
        keys, scores = no_hits(len(q), k)
        for row, hits in enumerate(results):
            for col, hit in enumerate(hits[:k]):
                keys[row, col], scores[row, col] = int(hit["id"]), float(hit["distance"])
        return cut_below(keys, scores, min_score)

    def _search_params(self, k: int) -> dict:
        if self.built_type.startswith("IVF"):
            return {"nprobe": self.nprobe}
        return {} if self.lite else {"ef": max(self.ef_search, k)}

    def drop(self) -> None:
        self.client.drop_collection(self.collection)
