"""Vector indexes: exact (numpy) for small libraries, HNSW (hnswlib) for large ones, behind one interface.

All indexes hold unit vectors keyed by int64 ids and score by inner product
(= cosine). ``search`` returns ids padded with -1 and scores, best first; an
``allowed`` id set or a ``where`` payload filter restricts the results.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, overload, runtime_checkable

import numpy as np

from lookalike.rwlock import RWLock
from lookalike.store import folders
from lookalike.store.payload import PayloadTable, check_where, payload_list

if TYPE_CHECKING:
    import faiss

MISSING = -1


@runtime_checkable
class VectorIndex(Protocol):
    """What every vector backend offers (the embedded index, Milvus, Elasticsearch); one conformance suite.

    Vectors are keyed by int64 ids and carry a payload (lookalike.store.payload); ``where`` filters on it
    inside the engine, ``allowed`` restricts to an id set, ``min_score`` drops weaker hits.
    """

    dim: int
    dirty: bool  # written since the last save

    @property
    def kind(self) -> str: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray, payloads: list[dict] | None = None) -> None:
        """Insert or replace vectors (and their payloads)."""
        ...

    def remove(self, ids: np.ndarray) -> None: ...

    def remove_photos(self, photo_ids: np.ndarray) -> None:
        """Remove every vector whose payload's photo_id is one of these (a photo's subjects at once)."""
        ...

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        where: dict | None = None,
        min_score: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def payloads(self, ids: np.ndarray) -> list[dict | None]: ...

    def __len__(self) -> int: ...

    def ids(self) -> np.ndarray: ...

    def vectors(self, ids: np.ndarray) -> np.ndarray: ...

    def load(self) -> bool:
        """Open what is stored; False when there is nothing usable (then it is filled from the catalog)."""
        ...

    def save(self) -> bool | None:
        """Persist (the embedded index: returns whether its files were written; engines write as they go)."""
        ...

    def drop(self) -> None: ...

    def disk_bytes(self) -> int: ...

    def wait(self) -> None:
        """Finish background work on the collection (the embedded index's tier switch) before it is saved."""
        ...

    def refresh_reads(self) -> None:
        """Make writes another process made visible to this client's reads (a session-consistent engine)."""
        ...


def present_vectors(index: VectorIndex, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vectors of those ``ids`` the index holds (some may never have been in it), and those ids."""
    if not len(ids):
        return ids, np.empty((0, index.dim), dtype=np.float32)
    return held_vectors(index, ids[np.asarray([p is not None for p in index.payloads(ids)], dtype=bool)])


def held_vectors(index: VectorIndex, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vectors of those ``ids`` the index still holds, and those ids: a photo another process removed between
    a search that found it and this read is left out (a search answered 500 when that happened: hostile probe)."""
    try:
        return ids, index.vectors(ids)
    except Exception:  # which error a missing id gives depends on the engine; an engine that is away fails again below
        held = ids[np.asarray([p is not None for p in index.payloads(ids)], dtype=bool)] if len(ids) else ids
        return held, index.vectors(held)


def no_hits(queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of ``queries`` rows of ``k`` empty slots, for an engine to fill best first."""
    return np.full((queries, k), MISSING, dtype=np.int64), np.full((queries, k), -np.inf, dtype=np.float32)


def cut_below(ids: np.ndarray, scores: np.ndarray, min_score: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Pad out hits scoring below ``min_score`` (rows stay best first)."""
    if min_score is not None:
        weak = scores < min_score
        ids, scores = ids.copy(), scores.copy()
        ids[weak], scores[weak] = MISSING, -np.inf
    return ids, scores


def as_ids(ids: np.ndarray | list[int]) -> np.ndarray:
    return np.asarray(ids, dtype=np.int64).reshape(-1)


def as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    mat = np.ascontiguousarray(vectors, dtype=np.float32)
    if mat.ndim == 1:
        mat = mat[None]
    if mat.shape[1] != dim:
        raise ValueError(f"expected vectors of dimension {dim}, got {mat.shape[1]}")
    return mat


def _top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k columns of a (m, n) score matrix, padded to k."""
    m, n = scores.shape
    out_ids = np.full((m, k), MISSING, dtype=np.int64)
    out_scores = np.full((m, k), -np.inf, dtype=np.float32)
    take = min(k, n)
    if take == 0:
        return out_ids, out_scores
    part = np.argpartition(-scores, take - 1, axis=1)[:, :take] if take < n else np.tile(np.arange(n), (m, 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    out_ids[:, :take] = ids[best]
    out_scores[:, :take] = np.take_along_axis(scores, best, axis=1)
    return out_ids, out_scores


def sync_index(index, catalog_ids: np.ndarray, fetch, fetch_payloads, chunk: int) -> tuple[int, int]:
    """Make ``index`` hold exactly ``catalog_ids`` (the catalog is the truth): remove extras, add missing."""
    have = index.ids()
    missing = np.setdiff1d(catalog_ids, have, assume_unique=True)
    extra = np.setdiff1d(have, catalog_ids, assume_unique=True)
    if len(extra):
        index.remove(extra)
    for start in range(0, len(missing), chunk):
        ids = missing[start : start + chunk]
        index.add(ids, fetch(ids), fetch_payloads(ids) if fetch_payloads else None)
    return len(missing), len(extra)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Tier(Protocol):
    """What the embedded index's tiers (flat, HNSW, IVF) share: the index itself, with neither payloads nor locks
    (``EmbeddedIndex`` holds the tier that suits its size and switches between them)."""

    kind: str
    dim: int

    def __len__(self) -> int: ...

    def ids(self) -> np.ndarray: ...

    def has(self, ids: np.ndarray) -> np.ndarray:
        """A mask: which of ``ids`` the tier holds."""
        ...

    def vectors(self, ids: np.ndarray) -> np.ndarray: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]: ...  # fmt: skip

    def save(self, path: Path) -> None: ...


class FlatIndex:
    """Exact search over a dense matrix: 100% recall, fine up to tens of thousands of photos."""

    kind = "flat"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._ids = np.empty(0, dtype=np.int64)
        self._vecs = np.empty((0, dim), dtype=np.float32)
        self._n = 0
        self._pos: dict[int, int] = {}

    def __len__(self) -> int:
        return self._n

    def ids(self) -> np.ndarray:
        return self._ids[: self._n].copy()

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return self._vecs[[self._pos[int(i)] for i in as_ids(ids)]].copy()

    def has(self, ids: np.ndarray) -> np.ndarray:
        return np.fromiter((int(i) in self._pos for i in as_ids(ids)), dtype=bool, count=len(ids))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vecs = as_ids(ids), as_matrix(vectors, self.dim)
        if len(ids) != len(vecs):
            raise ValueError("ids and vectors differ in length")
        for i, v in zip(ids.tolist(), vecs, strict=True):
            pos = self._pos.get(i)
            if pos is None:
                self._grow(self._n + 1)
                pos = self._n
                self._n += 1
                self._pos[i] = pos
                self._ids[pos] = i
            self._vecs[pos] = v

    def _grow(self, need: int) -> None:
        if need <= len(self._ids):
            return
        cap = max(need, 2 * len(self._ids), 1024)
        ids = np.empty(cap, dtype=np.int64)
        vecs = np.empty((cap, self.dim), dtype=np.float32)
        ids[: self._n], vecs[: self._n] = self._ids[: self._n], self._vecs[: self._n]
        self._ids, self._vecs = ids, vecs

    def remove(self, ids: np.ndarray) -> None:
        for i in as_ids(ids).tolist():
            pos = self._pos.pop(i, None)
            if pos is None:
                continue
            last = self._n - 1
            if pos != last:  # move the last row into the hole
                moved = int(self._ids[last])
                self._ids[pos], self._vecs[pos] = moved, self._vecs[last]
                self._pos[moved] = pos
            self._n = last

    def search(self, queries, k, allowed=None):
        q = as_matrix(queries, self.dim)
        ids, vecs = self._ids[: self._n], self._vecs[: self._n]
        if allowed is not None:
            mask = np.isin(ids, as_ids(allowed))
            ids, vecs = ids[mask], vecs[mask]
        return _top_k(q @ vecs.T, ids, k)

    def save(self, path: Path) -> None:
        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, self._ids[: self._n])
                np.save(fh, self._vecs[: self._n])

        _atomic_write(path, write)

    @classmethod
    def load(cls, path: Path, dim: int) -> FlatIndex:
        index = cls(dim)
        with open(path, "rb") as fh:
            ids, vecs = np.load(fh), np.load(fh)
        index._ids, index._vecs, index._n = ids, as_matrix(vecs, dim) if len(vecs) else index._vecs, len(ids)
        index._pos = {int(i): p for p, i in enumerate(ids.tolist())}
        return index


class HnswIndex:
    """Approximate search with hnswlib's HNSW graph.

    Chosen over usearch and faiss by bench/ann.py (bench/RESULTS.md): at the same
    M and ef it builds about 2x faster and searches about 2x faster than usearch
    for the same recall, and unlike faiss's HNSW it supports deletion (deleted
    slots are marked and reused by later inserts).
    """

    kind = "hnsw"

    def __init__(self, dim: int, m: int = 32, ef_construction: int = 200, ef_search: int = 192) -> None:
        import hnswlib

        self.dim = dim
        self.params = {"m": m, "ef_construction": ef_construction, "ef_search": ef_search}
        self._index = hnswlib.Index(space="ip", dim=dim)
        self._index.init_index(max_elements=1024, ef_construction=ef_construction, M=m, allow_replace_deleted=True)
        self._index.set_ef(ef_search)
        self._live: set[int] = set()

    def __len__(self) -> int:
        return len(self._live)

    def ids(self) -> np.ndarray:
        return np.fromiter(sorted(self._live), dtype=np.int64, count=len(self._live))

    def has(self, ids: np.ndarray) -> np.ndarray:
        return np.fromiter((int(i) in self._live for i in as_ids(ids)), dtype=bool, count=len(ids))

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        ids = as_ids(ids)
        if len(ids) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.asarray(self._index.get_items(ids.tolist(), return_type="numpy"), dtype=np.float32)

    def add(self, ids, vectors, threads: int = -1):
        ids, vecs = as_ids(ids), as_matrix(vectors, self.dim)
        if len(ids) != len(vecs):
            raise ValueError("ids and vectors differ in length")
        if len(ids) == 0:
            return
        capacity = self._index.get_max_elements()
        need = self._index.get_current_count() + len(ids)
        if need > capacity:
            self._index.resize_index(max(need, 2 * capacity))
        # existing ids (live or deleted) are updated in place; new ones may reuse deleted slots
        self._index.add_items(vecs, ids, num_threads=threads, replace_deleted=False)
        self._live.update(ids.tolist())

    def remove(self, ids):
        for i in as_ids(ids).tolist():
            if i in self._live:
                self._index.mark_deleted(i)
                self._live.discard(i)

    def search(self, queries, k, allowed=None):
        q = as_matrix(queries, self.dim)
        n = len(self._live)
        if n == 0:
            return _top_k(np.empty((len(q), 0), np.float32), np.empty(0, np.int64), k)
        filt = None
        if allowed is not None:
            allowed = np.asarray([i for i in as_ids(allowed).tolist() if i in self._live], dtype=np.int64)
            if len(allowed) <= 50_000:
                # a small subset: exact search over its vectors beats filtering a graph walk
                return _top_k(q @ self.vectors(allowed).T, allowed, k)
            allowed_set = set(allowed.tolist())
            filt = allowed_set.__contains__
            n = len(allowed_set)
        want = min(k, n)
        while True:
            try:
                labels, distances = self._index.knn_query(q, k=want, num_threads=1, filter=filt)
                break
            except RuntimeError:  # fewer than `want` reachable (deletions): ask for fewer
                if want == 1:
                    return _top_k(np.empty((len(q), 0), np.float32), np.empty(0, np.int64), k)
                want = max(1, want // 2)
        return top_k_rows(1.0 - distances.astype(np.float32), labels.astype(np.int64), k)

    def save(self, path: Path) -> None:
        """Writes ``path`` and ``path.ids`` (hnswlib keeps deleted slots, so live ids are stored beside)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._index.save_index(str(path))
        with open(str(path) + ".ids", "wb") as fh:
            np.save(fh, self.ids())

    @classmethod
    def load(cls, path: Path, dim: int, **params) -> HnswIndex:
        index = cls(dim, **params)
        index._index.load_index(str(path), allow_replace_deleted=True)
        index._index.set_ef(index.params["ef_search"])
        with open(str(path) + ".ids", "rb") as fh:
            index._live = set(np.load(fh).tolist())
        return index


class IvfIndex:
    """Approximate search with faiss's inverted file (IVF-Flat) for the largest embedded libraries.

    Photo collections are dense: near-copies and many shots of one subject. At 1M such vectors
    (bench/scale.py) an HNSW graph (M=32) stops at recall@10 0.75 however wide its search, while IVF,
    which scans the few k-means cells nearest the query exhaustively, reaches 0.99 in about 1 ms. The
    cells are learned from the vectors present when the index is built (``nlist`` about 4 sqrt(n)); the
    embedded index rebuilds it when the library has grown 4x since, and on every re-learned whitening.
    """

    kind = "ivf"

    STORAGE = ("float32", "float16", "int8")

    def __init__(self, dim: int, nlist: int = 1024, nprobe: int = 32, storage: str = "float16") -> None:
        if storage not in self.STORAGE:
            raise ValueError(f"IVF storage must be one of {', '.join(self.STORAGE)}")
        self.dim, self.nprobe, self.storage = dim, nprobe, storage
        self._make(nlist)
        self._live: set[int] = set()
        self.built_for = 0  # vectors present when the cells were learned

    def _make(self, nlist: int) -> None:
        import faiss

        self.nlist = nlist
        quantizer, ip = faiss.IndexFlatIP(self.dim), faiss.METRIC_INNER_PRODUCT
        self._index: faiss.IndexIVF
        if self.storage == "float32":
            self._index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, ip)
        else:  # float16 halves the memory at the same recall (bench/RESULTS.md); int8 quarters it, -0.02 recall
            kind = faiss.ScalarQuantizer.QT_fp16 if self.storage == "float16" else faiss.ScalarQuantizer.QT_8bit
            self._index = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, kind, ip)
        self._quantizer = quantizer  # faiss does not own it when built from Python: keep it alive
        # vectors by id, removal by id (faiss has DirectMap; the stubs it ships leave it out)
        self._index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        self._index.nprobe = self.nprobe

    @staticmethod
    def nlist_for(n: int) -> int:
        """About 4 sqrt(n) cells, with at least 39 training vectors each (faiss's k-means minimum)."""
        return int(max(1, min(16384, 4 * np.sqrt(max(n, 1)), n // 39)))

    def train(self, sample: np.ndarray, threads: int = -1) -> None:
        """Learn the cells (k-means, at most 64 vectors per cell, enough for stable centroids)."""
        import faiss

        sample = as_matrix(sample, self.dim)
        if len(sample) < self.nlist:  # too few vectors for that many cells
            self._make(max(1, len(sample)))
        if len(sample) > 64 * self.nlist:
            sample = sample[np.random.default_rng(0).choice(len(sample), 64 * self.nlist, replace=False)]
        faiss.omp_set_num_threads(threads if threads > 0 else os.cpu_count() or 1)
        self._index.train(sample)

    def __len__(self) -> int:
        return len(self._live)

    def ids(self) -> np.ndarray:
        return np.fromiter(sorted(self._live), dtype=np.int64, count=len(self._live))

    def has(self, ids: np.ndarray) -> np.ndarray:
        return np.fromiter((int(i) in self._live for i in as_ids(ids)), dtype=bool, count=len(ids))

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        ids = as_ids(ids)
        if len(ids) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return self._index.reconstruct_batch(ids).astype(np.float32, copy=False)

    def add(self, ids, vectors):
        ids, vecs = as_ids(ids), as_matrix(vectors, self.dim)
        if len(ids) != len(vecs):
            raise ValueError("ids and vectors differ in length")
        if len(ids) == 0:
            return
        if not self._index.is_trained:
            self.train(vecs)
            self.built_for = len(vecs)
        self.remove(ids)  # faiss keeps duplicates: replace = remove + add
        self._index.add_with_ids(vecs, ids)
        self._live.update(ids.tolist())

    def remove(self, ids):
        import faiss

        present = np.asarray([i for i in as_ids(ids).tolist() if i in self._live], dtype=np.int64)
        if len(present):
            self._index.remove_ids(faiss.IDSelectorArray(present))
            self._live.difference_update(present.tolist())

    def search(self, queries, k, allowed=None):
        import faiss

        q = as_matrix(queries, self.dim)
        if not self._live:
            return _top_k(np.empty((len(q), 0), np.float32), np.empty(0, np.int64), k)
        params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        if allowed is not None:
            allowed = np.asarray([i for i in as_ids(allowed).tolist() if i in self._live], dtype=np.int64)
            if len(allowed) <= 50_000:  # a small subset: exact search over its vectors
                return _top_k(q @ self.vectors(allowed).T, allowed, k)
            selector = faiss.IDSelectorBatch(allowed)
            params = faiss.SearchParametersIVF(nprobe=self.nprobe, sel=selector)
        faiss.omp_set_num_threads(1)  # one query at a time is the service's shape; threads only add overhead
        scores, labels = self._index.search(q, k, params=params)
        return top_k_rows(scores.astype(np.float32), labels.astype(np.int64), k)

    def save(self, path: Path) -> None:
        import faiss

        path.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(path))
        with open(str(path) + ".ids", "wb") as fh:
            np.save(fh, np.asarray([self.built_for, *self.ids().tolist()], dtype=np.int64))

    @classmethod
    def load(cls, path: Path, dim: int, nprobe: int = 32) -> IvfIndex:
        import faiss

        index = cls.__new__(cls)
        # keeps its id -> vector hashtable; read_index returns the IVF subclass (its stubs say Index)
        index._index = faiss.read_index(str(path))  # type: ignore[assignment]
        index.dim, index.nlist, index.nprobe = dim, index._index.nlist, nprobe
        sq = getattr(faiss.downcast_index(index._index), "sq", None)
        fp16 = sq is not None and sq.qtype == faiss.ScalarQuantizer.QT_fp16
        index.storage = "float32" if sq is None else ("float16" if fp16 else "int8")
        index._index.nprobe = nprobe
        with open(str(path) + ".ids", "rb") as fh:
            stored = np.load(fh)
        index.built_for, index._live = int(stored[0]), set(stored[1:].tolist())
        return index


def top_k_rows(scores: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Like _top_k, but each row has its own candidate ids."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    ids = np.take_along_axis(keys, order, axis=1)
    sc = np.take_along_axis(scores, order, axis=1).astype(np.float32)
    ids[~np.isfinite(sc)] = MISSING
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=MISSING)
        sc = np.pad(sc, ((0, 0), (0, pad)), constant_values=-np.inf)
    return ids, sc


class EmbeddedIndex:
    """The embedded default: exact below ``threshold`` vectors, HNSW at or above it, IVF from ``ivf_threshold``.

    Safe to search from many threads while another applies writes (a readers-writer lock held for one
    call). Moving to another tier builds the new index beside the live one in a background thread, from
    a snapshot, then replays the writes made meanwhile and swaps it in: searches never wait for a switch
    (bench/tierswitch.py). Persisted as one generation of files plus a JSON manifest that records the
    change-feed position (``cursor``) the files reflect; the catalog stays the source of truth and a
    process that loads the files catches up from the feed.
    """

    def __init__(
        self,
        directory: Path,
        dim: int,
        threshold: int,
        hnsw: dict | None = None,
        tag: str = "",
        ivf_threshold: int = 0,
        ivf_nprobe: int = 32,
        ivf_storage: str = "float16",
        background: bool = True,
    ) -> None:
        self.directory, self.dim, self.threshold, self.tag = directory, dim, threshold, tag
        self.hnsw_params = hnsw or {}
        self.ivf_threshold, self.ivf_nprobe, self.ivf_storage = ivf_threshold, ivf_nprobe, ivf_storage
        self.background = background
        self.inner: Tier = FlatIndex(dim)
        self.table = PayloadTable()
        self.dirty = False
        self.cursor = 0  # the change-feed position these vectors reflect (kept by the follower)
        self._lock = RWLock()
        self._pending: list[tuple[str, np.ndarray, np.ndarray | None]] | None = None  # writes during a switch
        self._builder: threading.Thread | None = None
        self.switches = 0  # completed tier switches (tests and benchmarks watch it)

    @property
    def kind(self) -> str:
        return self.inner.kind

    def __len__(self) -> int:
        with self._lock.read():
            return len(self.inner)

    def ids(self) -> np.ndarray:
        with self._lock.read():
            return self.inner.ids()

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        with self._lock.read():
            return self.inner.vectors(ids)

    def add(self, ids, vectors, payloads=None):
        ids = as_ids(ids)
        rows = payload_list(payloads, ids)
        vecs = as_matrix(vectors, self.dim)
        with self._lock.write():
            self.inner.add(ids, vecs)
            self.table.put(ids, rows)
            if self._pending is not None:
                self._pending.append(("add", ids, vecs))
            self.dirty = True
            self._maybe_switch()

    def remove(self, ids):
        ids = as_ids(ids)
        with self._lock.write():
            self._remove(ids)

    def _remove(self, ids: np.ndarray) -> None:
        self.inner.remove(ids)
        self.table.remove(ids)
        if self._pending is not None:
            self._pending.append(("remove", ids, None))
        self.dirty = True
        self._maybe_switch()

    def remove_photos(self, photo_ids) -> None:
        """Remove every vector whose payload belongs to these photos (all subjects of a photo at once)."""
        photo_ids = as_ids(photo_ids)
        with self._lock.write():
            ids = self.table.select_photos(photo_ids)
            if len(ids):
                self._remove(ids)

    def payloads(self, ids: np.ndarray) -> list[dict | None]:
        with self._lock.read():
            return self.table.get(as_ids(ids))

    def search(self, queries, k, allowed=None, where=None, min_score=None):
        where = check_where(where)
        with self._lock.read():
            if where:
                selected = self.table.select(where)
                allowed = selected if allowed is None else np.intersect1d(selected, as_ids(allowed))
            found = self.inner.search(queries, k, allowed)
        return cut_below(*found, min_score)

    def drop(self) -> None:
        self.wait()
        with self._lock.write():
            self.inner, self.table = FlatIndex(self.dim), PayloadTable()
            self.dirty = False
        shutil.rmtree(self.directory, ignore_errors=True)

    # tiers -------------------------------------------------------------------------------------------
    def _tier(self, n: int) -> type:
        """Which index suits ``n`` vectors; going down waits for half the threshold (no flapping)."""
        current = type(self.inner)
        if self.ivf_threshold and (n >= self.ivf_threshold or (current is IvfIndex and n >= self.ivf_threshold // 2)):
            return IvfIndex
        if self.threshold and (n >= self.threshold or (current is not FlatIndex and n >= self.threshold // 2)):
            return HnswIndex
        return FlatIndex

    def _switch_due(self) -> type | None:
        n = len(self.inner)
        tier = self._tier(n)
        if tier is IvfIndex and isinstance(self.inner, IvfIndex):
            return IvfIndex if n > 4 * self.inner.built_for else None  # re-learn the cells when grown 4x
        return tier if tier is not type(self.inner) else None

    def _maybe_switch(self) -> None:
        """Called with the write lock held."""
        if self._builder is not None:
            return  # one build at a time; the finished build checks again
        tier = self._switch_due()
        if tier is None:
            return
        if not self.background:
            self.inner = self._convert(self.inner, self._new(tier, len(self.inner)))
            self.switches += 1
            return
        self._pending = []  # from here on, writes are also recorded for the new index
        self._builder = threading.Thread(target=self._build, args=(tier,), name="lookalike-tier-switch", daemon=True)
        self._builder.start()

    def _build(self, tier: type) -> None:
        try:
            ids, vecs = self._snapshot()
            threads = max(1, (os.cpu_count() or 1) - 1)  # leave a core to the searches
            new = self._fill(self._new(tier, len(ids)), ids, vecs, threads)
            # replay the writes made meanwhile in rounds, outside the lock (only this thread touches
            # ``new``; writers only append to the list), until few are left to replay under it
            replayed, writes = 0, self._pending
            assert writes is not None  # set before this thread starts; only this thread clears it
            while len(pending := writes[replayed:]) > 64:
                self._replay(new, pending)
                replayed += len(pending)
            with self._lock.write():
                self._replay(new, writes[replayed:])
                self.inner, self._pending, self._builder = new, None, None
                self.switches += 1
                self.dirty = True
                self._maybe_switch()  # the library may have grown past the next tier meanwhile
        except BaseException:
            with self._lock.write():
                self._pending, self._builder = None, None
            raise

    def _snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids and vectors of the live index, copied in chunks under short read locks, so that neither
        searches nor writers wait for the whole copy (writes made meanwhile are replayed later)."""
        with self._lock.read():
            source, ids = self.inner, self.inner.ids()
        parts_ids, parts_vecs = [], []
        for start in range(0, len(ids), 1024):  # small: copying holds the GIL, which searches need too
            with self._lock.read():
                chunk = ids[start : start + 1024]
                chunk = chunk[source.has(chunk)]  # removed meanwhile: the replay removes them anyway
                parts_ids.append(chunk)
                parts_vecs.append(source.vectors(chunk) if len(chunk) else np.empty((0, self.dim), np.float32))
        if not parts_ids:
            return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        return np.concatenate(parts_ids), np.concatenate(parts_vecs)

    @staticmethod
    def _replay(index, ops: list) -> None:
        for op, op_ids, op_vecs in ops:
            if op == "add":
                index.add(op_ids, op_vecs)
            else:
                index.remove(op_ids)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a tier switch in progress (before saving in a process about to exit)."""
        while (builder := self._builder) is not None:
            builder.join(timeout)
            if timeout is not None:
                return

    def refresh_reads(self) -> None:
        """Nothing to do: this process applies every write itself (lookalike.vectorspace.Follower)."""

    def preset(self, total: int, sample: Callable[[int], np.ndarray]) -> None:
        """Start an empty index in the tier that ``total`` vectors will need, instead of climbing (and converting)
        tier by tier while it is filled; an IVF tier learns its cells from ``sample(n)``, n vectors like those
        to come."""
        tier = self._tier(total)
        if tier is IvfIndex:
            inner = self._new(IvfIndex, total)
            vectors = sample(64 * inner.nlist)
            if len(vectors):
                inner.train(vectors)
                inner.built_for = total
                self.inner = inner
        elif tier is not type(self.inner):
            self.inner = self._new(tier, total)

    @overload
    def _new(self, tier: type[IvfIndex], n: int) -> IvfIndex: ...

    @overload
    def _new(self, tier: type, n: int) -> FlatIndex | HnswIndex | IvfIndex: ...

    def _new(self, tier: type, n: int) -> FlatIndex | HnswIndex | IvfIndex:
        if tier is IvfIndex:
            return IvfIndex(self.dim, IvfIndex.nlist_for(n), self.ivf_nprobe, self.ivf_storage)
        if tier is HnswIndex:
            return HnswIndex(self.dim, **self.hnsw_params)
        return FlatIndex(self.dim)

    @staticmethod
    def _fill(dst, ids: np.ndarray, vecs: np.ndarray, threads: int = -1):
        if isinstance(dst, IvfIndex) and len(ids):  # learn the cells from a sample of everything, then fill them
            take = np.arange(len(ids)) if len(ids) <= 64 * dst.nlist else np.sort(
                np.random.default_rng(0).choice(len(ids), 64 * dst.nlist, replace=False))  # fmt: skip
            dst.train(vecs[take], threads)
            dst.built_for = len(ids)
        for start in range(0, len(ids), 65536):
            if isinstance(dst, HnswIndex):
                dst.add(ids[start : start + 65536], vecs[start : start + 65536], threads)
            else:
                dst.add(ids[start : start + 65536], vecs[start : start + 65536])
        return dst

    @classmethod
    def _convert(cls, src, dst):
        ids = src.ids()
        return cls._fill(dst, ids, src.vectors(ids) if len(ids) else np.empty((0, dst.dim), np.float32))

    # persistence -------------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.directory / "index.json"

    def _files(self, exclusive: bool):
        """Processes sharing this folder (a CLI run beside the service) take turns on its files."""
        return folders.turn(self.directory, exclusive)

    def _manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return {}

    def save(self) -> bool:
        """Write a new generation of files, then switch the manifest to it: a crash leaves the old one.

        Another process may have saved a newer state (further along the change feed) meanwhile; then
        this one is not written. Returns whether the files were written.
        """
        with self._files(exclusive=True):
            current = self._manifest()
            if current.get("tag") == self.tag and int(current.get("seq", -1)) > self.cursor:
                return False
            name = f"index-{uuid.uuid4().hex[:12]}.{ {'hnsw': 'hnsw', 'ivf': 'ivf'}.get(self.kind, 'flat.npy') }"
            with self._lock.read():
                inner, cursor = self.inner, self.cursor
                inner.save(self.directory / name)
                self.table.save(self.directory / f"{name}.payload.npz")
                count, self.dirty = len(inner), False
            manifest = {"kind": inner.kind, "dim": self.dim, "count": count, "file": name, "seq": cursor,
                        "tag": self.tag, "saved_at": time.time()}  # fmt: skip
            _atomic_write(self.manifest_path, lambda tmp: Path(tmp).write_text(json.dumps(manifest)))
            for old in self.directory.glob("index-*"):
                if not old.name.startswith(name):
                    old.unlink(missing_ok=True)
        return True

    def load(self) -> bool:
        """Load the saved index; False when there is none usable (then it is built from the catalog)."""
        try:
            with self._files(exclusive=False):
                manifest = self._manifest()
                if manifest.get("dim") != self.dim or manifest.get("tag", "") != self.tag:
                    return False  # built for another vector transform or library: rebuilt from the catalog
                path = self.directory / manifest["file"]
                inner: FlatIndex | HnswIndex | IvfIndex
                if manifest["kind"] == "hnsw":
                    inner = HnswIndex.load(path, self.dim, **self.hnsw_params)
                elif manifest["kind"] == "ivf":
                    inner = IvfIndex.load(path, self.dim, self.ivf_nprobe)
                else:
                    inner = FlatIndex.load(path, self.dim)
                table = PayloadTable.load(self.directory / f"{manifest['file']}.payload.npz")
            if len(table) != len(inner):
                raise ValueError("payloads and vectors disagree")
        except (OSError, ValueError, KeyError, RuntimeError, TypeError):
            return False
        with self._lock.write():
            self.inner, self.table, self.cursor, self.dirty = inner, table, int(manifest.get("seq", 0)), False
            self._maybe_switch()  # thresholds may have changed since it was saved
        return True

    def sync(self, catalog_ids: np.ndarray, fetch, fetch_payloads=None) -> tuple[int, int]:
        """Make the index hold exactly ``catalog_ids``; ``fetch(ids)`` returns their vectors."""
        return sync_index(self, catalog_ids, fetch, fetch_payloads, 8192)

    def disk_bytes(self) -> int:
        if not self.directory.exists():
            return 0
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())
