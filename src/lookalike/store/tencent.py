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

A photo's fields (lookalike.fields) are filtered inside the engine, kept in two filter indexes made for that and the
record itself (``record``, JSON text, unindexed: read back as it was written, ints and floats apart):
- ``fields``, a JSON filter index (FieldType.Json, in the SDK since 1.6.2), one key per field and kind: ``s_<name>`` a
  string, ``l_<name>`` a list of strings, ``b_<name>`` a boolean as 0/1, ``nh_<name>`` and ``nl_<name>`` a number
  (below). JSON rather than one filter index per field: a library's field names are not known when the collection
  is made. Tencent documents JSON filter indexes as one level of keys whose values are strings, uint64 or arrays
  (the Go SDK's changelog, v1.6.1; filters ``field_json.age > 28``, ``field_json.username in (...)``,
  ``field_json.habit include (...)`` in its tests), so only those are written, and a key always holds one type:
- a number is written as the order-preserving 64-bit key of its float64 (-0.0 as 0.0; integers are exact up to 2^53,
  as lookalike.fields allows), split into two halves below 2^32 (``nh_``, ``nl_``) so that no JSON number exceeds
  what any parser keeps exactly, and compared lexicographically: (hi < H or hi = H and lo < L). Exact for every
  finite number, with the filter language's order and equality;
- strings (and list items) are written as the hex of their UTF-8 bytes, and so are the values they are compared
  with: how the filter language escapes a quote or a backslash is not documented, so no value is ever more than
  [0-9a-f] inside double quotes there, and a hostile value matches only itself (hex keeps code point order too,
  but text is not ordered here: Tencent documents only =, !=, in and not in for strings, so ``<`` on text is
  refused);
- ``field_keys``, an array (of strings) filter index: the JSON keys a photo has, by kind (``n_<name>`` for a
  number), and always ``_`` so that no array is empty (how an empty one is indexed is not documented). ``exists``
  is ``include``; every comparison is guarded by the key of its kind (``field_keys include ("n_price") and ...``),
  so what the engine does with a key a document lacks never decides an answer.
``not`` is pushed down to the comparisons (De Morgan), each negated against the same guard (``field_keys exclude
("s_brand") or fields.s_brand != "..."``), so neither the engine's ``not`` (its documented examples put it only
after ``and``) nor its ``!=`` on a missing key is relied on. The translation (``fields_expression``) has the answers of
lookalike.filters.matches for everything but text order comparisons, which it refuses (UnsupportedFilter). A
collection made before fields were stored has neither index: it serves everything but filters on fields, which it
refuses (`lookalike reindex`). Not documented, so unknown until run against an instance: how long a filter
expression or an indexed JSON string may be (a 2,000-character string is up to 16,000 hex digits).

Tested against a live instance only when ``LOOKALIKE_TEST_TCVECTORDB_URL`` is set (none is reachable from
CI); the requests it makes are unit-tested at the SDK's HTTP layer (tests/store/test_tencent.py), the filters on
fields with an interpreter of the emitted expressions over the documents the SDK sends.
"""

from __future__ import annotations

import json
import struct
from typing import Literal

import numpy as np

from lookalike.fields import FieldValue
from lookalike.filters import And, Compare, Filter, Not, Or, kind
from lookalike.store.errors import EngineError
from lookalike.store.payload import UnsupportedFilter, check_where, payload_list
from lookalike.store.vectors import as_ids, as_matrix, cut_below, no_hits

DATABASE = "lookalike"
MAX_UPSERT = 1000
MAX_PER_REQUEST = 16384
MISSING_COLLECTION = 15302
FIELDS = ("photo_id", "object", "label", "detected_label", "box", "score")
FIELD_VALUES, FIELD_KEYS, RECORD = "fields", "field_keys", "record"  # the photo's fields (the module's docstring)
KEY = {"text": "s", "list": "l", "flag": "b", "num": "n"}  # lookalike.filters.kind -> the key's prefix
NO_KEY = "_"  # in every field_keys array: never empty; no field's key (those are <kind>_<name>)
LOW = 0xFFFF_FFFF


def quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def hexed(text: str) -> str:
    """A string as written in the JSON index and in expressions: the hex of its UTF-8 bytes (digits and a-f only)."""
    return text.encode().hex()


def number_key(value: int | float) -> int:
    """A number's order-preserving 64-bit key: a < b exactly when key(a) < key(b); equal numbers (0 and -0.0, 7 and
    7.0) have one key."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", float(value) + 0.0))  # + 0.0: -0.0 becomes 0.0
    return bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | 1 << 63


def document_fields(fields: dict[str, FieldValue]) -> dict:
    """A photo's fields as its document keeps them: the JSON index, the keys it has, the record as text."""
    values: dict[str, object] = {}
    keys = [NO_KEY]
    for name, value in sorted(fields.items()):
        prefix = KEY[kind(value)]
        keys.append(f"{prefix}_{name}")
        if isinstance(value, bool):
            values[f"b_{name}"] = int(value)
        elif isinstance(value, (int, float)):
            key = number_key(value)
            values[f"nh_{name}"], values[f"nl_{name}"] = key >> 32, key & LOW
        elif isinstance(value, list):
            values[f"l_{name}"] = [hexed(v) for v in value]
        else:
            values[f"s_{name}"] = hexed(value)
    record = json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return {FIELD_VALUES: values, FIELD_KEYS: keys, RECORD: record}


def _has(key: str) -> str:
    return f'{FIELD_KEYS} include ("{key}")'


def _lacks(key: str) -> str:
    return f'{FIELD_KEYS} exclude ("{key}")'


def _number(name: str, op: str, value: int | float) -> str:
    """A comparison of a number field that has a number (the guard is the caller's), on the key's two halves."""
    key = number_key(value)
    high, low = key >> 32, key & LOW
    hi, lo = f"{FIELD_VALUES}.nh_{name}", f"{FIELD_VALUES}.nl_{name}"
    if op == "=":
        return f"({hi} = {high} and {lo} = {low})"
    if op == "!=":
        return f"({_number(name, '<', value)} or {_number(name, '>', value)})"
    return f"({hi} {op[0]} {high} or ({hi} = {high} and {lo} {op} {low}))"


NEGATED = {"=": "!=", "!=": "=", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}


def _one_kind(name: str, op: str, values: list, negated: bool) -> str:
    """``op`` on the value(s) of one kind, for a photo whose field has that kind; ``negated``: its complement there."""
    if isinstance(values[0], bool):
        # booleans are 0/1: "=" and "!=" of one value, "in" of one or both
        wanted = {int(v) for v in values} if op == "in" else {int(values[0]) ^ (op == "!=")}
        if negated:
            wanted = {0, 1} - wanted
        assert wanted, "a negated 'in [true, false]' is the guard's complement alone (_compare)"
        if len(wanted) == 2:
            return f"{FIELD_VALUES}.b_{name} in (0, 1)"
        return f"{FIELD_VALUES}.b_{name} = {wanted.pop()}"
    if isinstance(values[0], str):
        path = f"{FIELD_VALUES}.s_{name}"
        if op == "in":
            listed = ", ".join(f'"{hexed(v)}"' for v in dict.fromkeys(values))
            return f"{path} {'not in' if negated else 'in'} ({listed})"
        if op not in ("=", "!="):
            raise UnsupportedFilter(f"Tencent VectorDB cannot order text ({name} {op} a string: its filter language "
                                    "compares strings with =, != and in only): filter on a number, or serve from the "
                                    "embedded index, Milvus or Elasticsearch")  # fmt: skip
        return f'{path} {NEGATED[op] if negated else op} "{hexed(values[0])}"'
    if op == "in":
        joiner, each = (" and ", "!=") if negated else (" or ", "=")
        return f"({joiner.join(_number(name, each, v) for v in dict.fromkeys(values))})"
    return _number(name, NEGATED[op] if negated else op, values[0])


def _compare(f: Compare, negated: bool) -> str:
    """One comparison (or its negation) with the answers of lookalike.filters.matches: guarded by the key of the
    value's kind, so a photo without the field or with a value of another kind matches no comparison, and matches
    every negated one."""
    name = f.field
    if f.op == "exists":
        keys = [f"{prefix}_{name}" for prefix in sorted(KEY.values())]
        if negated:
            return f"({' and '.join(_lacks(k) for k in keys)})"
        listed = ", ".join(f'"{k}"' for k in keys)
        return f"{FIELD_KEYS} include ({listed})"
    if f.op == "contains":
        assert isinstance(f.value, str)
        test = f'{FIELD_VALUES}.l_{name} {"exclude" if negated else "include"} ("{hexed(f.value)}")'
        return f"({_lacks(f'l_{name}')} or {test})" if negated else f"({_has(f'l_{name}')} and {test})"
    given = list(f.value) if isinstance(f.value, tuple) else [f.value]
    by_kind: dict[str, list] = {}
    for v in given:
        by_kind.setdefault(KEY[kind(v)], []).append(v)
    parts = []
    for prefix, values in by_kind.items():
        key = f"{prefix}_{name}"
        bools_all = isinstance(values[0], bool) and f.op == "in" and len(set(values)) == 2
        if negated:
            parts.append(_lacks(key) if bools_all else f"({_lacks(key)} or {_one_kind(name, f.op, values, True)})")
        else:
            parts.append(f"({_has(key)} and {_one_kind(name, f.op, values, False)})")
    if len(parts) == 1:
        return parts[0]
    return f"({(' and ' if negated else ' or ').join(parts)})"


def fields_expression(f: Filter, negated: bool = False) -> str:
    """A filter on the photos' fields (lookalike.filters) as a Tencent VectorDB filter expression with the answers of
    ``lookalike.filters.matches`` (the module's docstring: typed keys, guards, hex strings, two-half numbers), ``not``
    pushed down to the comparisons; text order comparisons are refused (UnsupportedFilter)."""
    if isinstance(f, Not):
        return fields_expression(f.part, not negated)
    if isinstance(f, (And, Or)):
        joiner = " and " if isinstance(f, And) != negated else " or "
        return f"({joiner.join(fields_expression(p, negated) for p in f.parts)})"
    return _compare(f, negated)


def filter_expression(where: dict | None, allowed: np.ndarray | None = None, fields: bool = True) -> str | None:
    """A filter expression for payload equality filters, a filter on fields (``where["fields"]``; ``fields``: the
    collection keeps them) and an id set (None: no filter)."""
    parts = []
    plain = check_where({k: v for k, v in (where or {}).items() if k != "fields"}, "Tencent VectorDB")
    for key, value in plain.items():
        parts.append(f"{key} = {quoted(value) if isinstance(value, str) else int(value)}")
    if where and "fields" in where:
        if not fields:
            raise UnsupportedFilter("this Tencent VectorDB collection was made before photos' fields were stored: "
                                    "`lookalike reindex` into a new one to filter on them")  # fmt: skip
        parts.append(fields_expression(check_where({"fields": where["fields"]})["fields"]))
    if allowed is not None:
        parts.append(f"id in ({','.join(quoted(str(i)) for i in as_ids(allowed).tolist())})")
    return " and ".join(parts) if parts else None


def document(vector_id: int, vector: np.ndarray, payload: dict, fields: bool = True) -> dict:
    """The document stored for one vector: its id as a string, the vector, the payload fields, and the photo's fields
    (``document_fields``) when the collection has their indexes (``fields``)."""
    doc = {"id": str(int(vector_id)), "vector": [float(x) for x in vector], "photo_id": payload["photo_id"],
           "object": payload["object"], "label": payload["label"], "detected_label": payload["detected_label"],
           "box": json.dumps([float(x) for x in payload["box"]]), "score": float(payload["score"])}  # fmt: skip
    if fields:
        doc.update(document_fields(payload.get("fields") or {}))
    return doc


def payload_of(doc: dict, fields: bool = True) -> dict:
    payload = {"photo_id": int(doc["photo_id"]), "object": int(doc["object"]), "label": doc.get("label", ""),
               "detected_label": doc.get("detected_label", ""), "box": tuple(json.loads(doc.get("box", "[0,0,0,0]"))),
               "score": float(doc.get("score", 0.0))}  # fmt: skip
    if fields:
        payload["fields"] = json.loads(doc.get(RECORD) or "{}")
    return payload


def batches(docs: list[dict], dim: int, budget: int = 4_000_000) -> list[list[dict]]:
    """Documents in upserts of at most MAX_UPSERT and about ``budget`` bytes of JSON each: a vector's ~12 bytes a
    dimension, and a photo's fields 4 times their record (itself, and hex strings twice its text in the index)."""
    out: list[list[dict]] = []
    size = 0
    for doc in docs:
        cost = 12 * dim + 200 + 4 * len(doc.get(RECORD, "").encode())
        if not out or len(out[-1]) == MAX_UPSERT or size + cost > budget:
            out.append([])
            size = 0
        out[-1].append(doc)
        size += cost
    return out


class TencentVectorIndex:
    kind = "tcvectordb"

    def __init__(self, url: str, collection: str, dim: int, username: str = "root", key: str | None = None,
                 m: int = 16, ef_construction: int = 200, ef_search: int = 192, shards: int = 1,
                 replicas: int = 0) -> None:  # fmt: skip
        from tcvectordb import VectorDBClient
        from tcvectordb.model.enum import ReadConsistency

        self.url, self.collection, self.dim, self.ef_search = url, collection, dim, ef_search
        self.dirty = False
        self.has_fields = True  # the collection has the indexes for photos' fields (the module's docstring)
        if not key:
            raise EngineError(f"Tencent VectorDB at {url}: no API key; set LOOKALIKE_TCVECTORDB_KEY "
                              "(and LOOKALIKE_TCVECTORDB_USERNAME, default root)")  # fmt: skip
        with self._errors("connect"):
            self.client = VectorDBClient(url=url, username=username, key=key, timeout=30,
                                         read_consistency=ReadConsistency.STRONG_CONSISTENCY)  # fmt: skip
            self.client.create_database_if_not_exists(DATABASE)
            made = self._described()
            if made is None:
                self._create(m, ef_construction, shards, replicas)
            else:  # a collection made before fields were stored serves everything but filters on them
                self.has_fields = {FIELD_VALUES, FIELD_KEYS} <= {i.name for i in made.indexes}

    # errors that name the backend and the setting ------------------------------------------------------
    def _errors(self, doing: str):
        return _SdkErrors(self, doing)

    @staticmethod
    def drop_named(url: str, collection: str, username: str = "root", key: str | None = None) -> None:
        """Drop a collection by its name where it exists, without opening (and so making) it first."""
        from tcvectordb import VectorDBClient
        from tcvectordb.exceptions import ServerInternalError

        client = VectorDBClient(url=url, username=username, key=key or "", timeout=30)
        try:
            try:
                client.describe_collection(DATABASE, collection)
            except ServerInternalError as exc:
                if exc.code == MISSING_COLLECTION:
                    return
                raise
            client.drop_collection(DATABASE, collection)
        finally:
            client.close()  # a client per call (tidy): its connections go with it

    def _described(self):
        """The collection as the SDK describes it (its indexes), or None if it does not exist."""
        from tcvectordb.exceptions import ServerInternalError

        try:
            return self.client.describe_collection(DATABASE, self.collection)
        except ServerInternalError as exc:
            if exc.code == MISSING_COLLECTION:
                return None
            raise

    def _exists(self) -> bool:
        return self._described() is not None

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
            FilterIndex(FIELD_VALUES, FieldType.Json, IndexType.FILTER),
            FilterIndex(FIELD_KEYS, FieldType.Array, IndexType.FILTER),
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
        fields = ["id", *FIELDS, *([RECORD] if self.has_fields else [])]
        docs = self._get(ids, False, fields) if len(ids) else {}
        return [payload_of(docs[i], self.has_fields) if i in docs else None for i in ids.tolist()]

    def add(self, ids, vectors, payloads=None) -> None:
        ids, vecs = as_ids(ids), as_matrix(vectors, self.dim)
        if len(ids) != len(vecs):
            raise ValueError("ids and vectors differ in length")
        given = zip(ids.tolist(), vecs, payload_list(payloads, ids), strict=True)
        docs = [document(i, v, p, self.has_fields) for i, v, p in given]
        with self._errors("write"):
            for batch in batches(docs, self.dim):
                self.client.upsert(DATABASE, self.collection, documents=batch, build_index=True)
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
                                         filter=filter_expression(where, allowed, self.has_fields),
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
