"""Which photos share many local patches with a query: every photo's stored ORB descriptors in one index.

The global embedding finds photos that *look alike*; a photo of the same object (a DVD cover photographed at an
angle on a cluttered desk) can look less alike to it than another cover does, and then never reaches the copy
check's candidates. Its local features still match. This index holds the descriptors the catalog stores for copy
verification (lookalike.search.copies: 300 per photo) in a faiss binary inverted file (IVF, Hamming distance);
each query descriptor finds its nearest stored ones, and every photo gets one vote per query descriptor that found
one of its own among them. The photos with the most votes join the global search's candidates for verification
(lookalike.search.verification). On smvs_dvd_covers the 20 most-voted photos hold 0.82 of each query's relevant
photos, the global search's 20 nearest 0.60 (bench/RESULTS.md, "Instance search").

Why faiss's IVF: it is already a dependency (the embedded index's largest tier), it stores binary codes with
int64 ids and removes by id, and scanning a few cells exactly keeps the votes of near-identical descriptors that
hashing (faiss's multi-hash index) loses unless it probes many buckets (90x slower here at the same recall).

A cache, like the embedded vector index: rebuilt from the catalog's ``features`` table, kept in step by the
change feed, saved in the library directory with the feed position it reflects. Its cells are learned (k-means)
from a reproducible sample of the stored descriptors when it is built, and learned again beside the live index,
in a background thread, when the library has grown 4x. They only decide where a search looks, never a score or a
verdict, so processes that learned them at different times find the same photos up to the approximation (as two
HNSW graphs of the embedded index do): nothing here is something processes must agree on.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from lookalike.rwlock import RWLock
from lookalike.search import copies
from lookalike.store import folders
from lookalike.store.catalog import PHOTO, Catalog

log = logging.getLogger("lookalike")

ROW_BITS = 10  # a row's id: photo id << 10 | keypoint number (at most 1,024 stored per photo)
BITS = 256  # ORB descriptors
MAX_DISTANCE = 64  # a stored descriptor further than this from a query descriptor is no vote (as in copies)
FEED_CHUNK = 2000
TRAIN_PER_CELL = 39  # faiss's k-means minimum: learning the cells is most of the cost of a build


def nlist_for(n: int) -> int:
    """About sqrt(n) cells (at most 4,096): a search costs ``nlist`` centroids plus ``nprobe`` cells of n / nlist
    rows; more cells would search a little faster and learn much slower (bench/RESULTS.md, "Instance search")."""
    return int(max(1, min(4096, np.sqrt(max(n, 1)), n // TRAIN_PER_CELL)))


class KeypointIndex:
    def __init__(self, catalog: Catalog, directory: Path | None, tag: str, nprobe: int = 4, neighbours: int = 5,
                 background: bool = True) -> None:  # fmt: skip
        self.catalog, self.directory, self.tag = catalog, directory, tag
        self.nprobe, self.neighbours, self.background = nprobe, neighbours, background
        self._lock = RWLock()  # searches read; applying the feed and swapping in a rebuilt index write
        self._applying = threading.Lock()  # one follower at a time
        self._index = None
        self._counts: dict[int, int] = {}  # photo id -> rows it holds
        self.cursor = 0  # the change-feed position the index reflects
        self.built_for = 0  # rows present when the cells were learned
        self.dirty = False
        self._builder: threading.Thread | None = None
        self.rebuilds = 0

    # --- opening ---------------------------------------------------------------------------------------------
    def open(self) -> KeypointIndex:
        """Load the saved index, or build it from the catalog; then catch up with the feed."""
        if not self.load():
            self._set(*self._build())
        self.follow()
        return self

    def _build(self) -> tuple[object, dict[int, int], int, int]:
        """A new index of everything the catalog holds now: (index, counts, feed position, rows)."""
        start = self.catalog.last_seq()  # read first: changes made during the build are applied after it
        total = self._stored_rows()
        index = self._new_index(total)
        counts: dict[int, int] = {}
        for ids in _chunks(self.catalog.ids(), FEED_CHUNK):
            counts.update(_add(index, self.catalog.features(ids.tolist())))
        return index, counts, start, total

    def _stored_rows(self) -> int:
        return self.catalog.counts()["images"] * copies.MAX_FEATURES  # an estimate is enough to size the cells

    def _new_index(self, rows: int):
        """An empty IVF index whose cells are learned from a reproducible sample of the stored descriptors."""
        import faiss

        nlist = nlist_for(rows)
        sample = self._sample(nlist * TRAIN_PER_CELL)
        nlist = max(1, min(nlist, len(sample) // TRAIN_PER_CELL))
        quantizer = faiss.IndexBinaryFlat(BITS)
        index = faiss.IndexBinaryIVF(quantizer, BITS, nlist)
        index.own_fields = True  # the index owns its quantizer (kept alive with it)
        quantizer.this.disown()
        index.nprobe = self.nprobe
        index.cp.niter = 10  # k-means rounds: the cells only steer the search, they need not be optimal
        if nlist > 1:
            index.train(sample)
        else:  # too little to learn from: one cell (an exact search) until the first rebuild
            quantizer.add(np.zeros((1, BITS // 8), np.uint8))
            index.is_trained = True
        return index

    def _sample(self, rows: int) -> np.ndarray:
        ids = self.catalog.sample_ids(max(1, rows // copies.MAX_FEATURES + 1))
        found = [copies.descriptors_of(data) for data in self.catalog.features(ids).values()]
        if not found:
            return np.zeros((0, BITS // 8), np.uint8)
        sample = np.concatenate(found)
        if len(sample) > rows:
            sample = sample[np.random.default_rng(0).choice(len(sample), rows, replace=False)]
        return np.ascontiguousarray(sample)

    def _set(self, index, counts: dict[int, int], cursor: int, built_for: int) -> None:
        with self._lock.write():
            self._index, self._counts, self.cursor, self.built_for = index, counts, cursor, built_for
            self.dirty = True

    # --- following the catalog -------------------------------------------------------------------------------
    def follow(self, wait: bool = True) -> None:
        """Apply the change feed since the last look: each changed photo's rows are replaced by what the catalog
        stores for it now (nothing when it is gone)."""
        if not self._applying.acquire(blocking=wait):
            return
        try:
            if self.cursor + 1 < self.catalog.pruned_upto():  # the feed no longer says what changed: rebuild
                log.info("keypoint index is behind the kept change feed: rebuilding it from the catalog")
                self._set(*self._build())
            while changes := self.catalog.changes_since(self.cursor, FEED_CHUNK):
                ids, features = self._changed(changes)
                with self._lock.write():
                    _replace(self._index, self._counts, ids, features)
                    self.cursor = changes[-1].seq
                    self.dirty = True
                if len(changes) < FEED_CHUNK:
                    break
            self._maybe_rebuild()
        finally:
            self._applying.release()

    def _changed(self, changes) -> tuple[list[int], dict[int, bytes]]:
        """The photos a stretch of the feed changed, and what the catalog stores for them now."""
        ids = sorted({c.image_id for c in changes if c.flags & PHOTO})
        return ids, self.catalog.features(ids) if ids else {}

    def _maybe_rebuild(self) -> None:
        """Learn the cells again when the index has grown 4x since they were learned (and more cells would pay)."""
        rows = self.rows
        if self._builder is not None or rows <= 4 * max(self.built_for, 1) or nlist_for(rows) <= self._index.nlist:
            return
        if not self.background:
            self._set(*self._build())
            self.rebuilds += 1
            return
        self._builder = threading.Thread(target=self._rebuild, name="lookalike-keypoints", daemon=True)
        self._builder.start()

    def _rebuild(self) -> None:
        """Build beside the live index (searches go on), catch it up with the feed, swap it in."""
        try:
            index, counts, cursor, built_for = self._build()
            with self._applying:
                while changes := self.catalog.changes_since(cursor, FEED_CHUNK):
                    _replace(index, counts, *self._changed(changes))
                    cursor = changes[-1].seq
                self._set(index, counts, cursor, built_for)
                self.rebuilds += 1
        except Exception:  # a cache: the live index stays in use, and the next write tries again
            log.exception("rebuilding the keypoint index failed")
        finally:
            self._builder = None

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a rebuild in progress (tests, and a process about to save and exit)."""
        if (builder := self._builder) is not None:
            builder.join(timeout)

    # --- searching -------------------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return int(self._index.ntotal) if self._index is not None else 0

    def __len__(self) -> int:
        return len(self._counts)

    def candidates(self, descriptors: np.ndarray, n: int, exclude: int | None = None,
                   min_votes: int = 4) -> list[tuple[int, int]]:  # fmt: skip
        """The ``n`` photos with the most votes (photo id, votes), at least ``min_votes`` each."""
        import faiss

        if n <= 0 or not len(descriptors):
            return []
        faiss.omp_set_num_threads(1)  # one query's search: threads cost more than they give
        with self._lock.read():
            if self._index is None or not self._index.ntotal:
                return []
            distance, rows = self._index.search(np.ascontiguousarray(descriptors), self.neighbours)
        near = (rows >= 0) & (distance <= MAX_DISTANCE)
        photos = rows[near] >> ROW_BITS
        queries = np.broadcast_to(np.arange(len(rows))[:, None], rows.shape)[near]
        # one vote per query descriptor and photo, however many of the photo's rows it found
        voters = np.unique(photos * len(rows) + queries) // len(rows)
        ids, votes = np.unique(voters, return_counts=True)
        keep = (votes >= min_votes) & (ids != (-1 if exclude is None else exclude))
        ids, votes = ids[keep], votes[keep]
        order = np.lexsort((ids, -votes))[:n]
        return list(zip(ids[order].tolist(), votes[order].tolist(), strict=True))

    def describe(self) -> dict:
        """For ``lookalike stats``."""
        return {"photos": len(self), "keypoints": self.rows, "cells": self._index.nlist if self._index else 0,
                "memory_bytes": self.nbytes()}  # fmt: skip

    def nbytes(self) -> int:
        """Memory the index holds: a code and an id per row, plus the centroids."""
        if self._index is None:
            return 0
        return self.rows * (BITS // 8 + 8) + self._index.nlist * BITS // 8

    # --- persistence -----------------------------------------------------------------------------------------
    def _files(self, exclusive: bool):
        assert self.directory is not None
        return folders.turn(self.directory, exclusive)

    def _manifest(self) -> dict:
        try:
            return json.loads((self.directory / "keypoints.json").read_text())
        except (OSError, ValueError, TypeError):
            return {}

    def save(self) -> bool:
        """Write the index when it changed (a new generation of files, then the manifest); never over a newer one
        another process saved."""
        import faiss

        if self.directory is None or self._index is None or not self.dirty:
            return False
        with self._files(exclusive=True):
            current = self._manifest()
            if current.get("tag") == self.tag and int(current.get("seq", -1)) > self.cursor:
                return False
            name = f"keypoints-{uuid.uuid4().hex[:12]}"
            with self._lock.read():
                faiss.write_index_binary(self._index, str(self.directory / f"{name}.ivf"))
                ids = np.fromiter(self._counts, dtype=np.int64, count=len(self._counts))
                counts = np.fromiter(self._counts.values(), dtype=np.int64, count=len(self._counts))
                np.savez(self.directory / f"{name}.npz", ids=ids, counts=counts)
                manifest = {"tag": self.tag, "file": name, "seq": self.cursor, "built_for": self.built_for,
                            "saved_at": time.time()}  # fmt: skip
                self.dirty = False
            tmp = self.directory / f".keypoints.json.{uuid.uuid4().hex[:8]}"
            tmp.write_text(json.dumps(manifest))
            os.replace(tmp, self.directory / "keypoints.json")
            for old in self.directory.glob("keypoints-*"):
                if not old.name.startswith(name):
                    old.unlink(missing_ok=True)
        return True

    def load(self) -> bool:
        """Load the saved index; False when there is none usable (then it is built from the catalog)."""
        import faiss

        if self.directory is None or not (self.directory / "keypoints.json").exists():
            return False
        try:
            with self._files(exclusive=False):
                manifest = self._manifest()
                if manifest.get("tag") != self.tag:
                    return False
                index = faiss.read_index_binary(str(self.directory / f"{manifest['file']}.ivf"))
                with np.load(self.directory / f"{manifest['file']}.npz") as stored:
                    counts = dict(zip(stored["ids"].tolist(), stored["counts"].tolist(), strict=True))
            if not isinstance(index, faiss.IndexBinaryIVF) or sum(counts.values()) != index.ntotal:
                raise ValueError("keypoint index files disagree")
        except (OSError, ValueError, KeyError, RuntimeError, TypeError):
            return False
        index.nprobe = self.nprobe
        self._set(index, counts, int(manifest.get("seq", 0)), int(manifest.get("built_for", 0)))
        self.dirty = False
        return True


def saved_bytes(directory: Path) -> int:
    """Disk the saved index takes in ``directory`` (0 when none is saved)."""
    return sum(f.stat().st_size for f in directory.glob("keypoints-*"))


def _replace(index, counts: dict[int, int], photos: list[int], features: dict[int, bytes]) -> None:
    """Each photo's rows replaced by ``features`` (what the catalog stores for it now; none when it is gone)."""
    _remove(index, counts, photos)
    counts.update(_add(index, features))


def _add(index, features: dict[int, bytes]) -> dict[int, int]:
    """Add photos' stored descriptors; returns the rows each got."""
    counts, parts, ids = {}, [], []
    for photo, data in features.items():
        desc = copies.descriptors_of(data)[: 1 << ROW_BITS]
        if not len(desc):
            continue
        counts[photo] = len(desc)
        parts.append(desc)
        ids.append((np.int64(photo) << ROW_BITS) | np.arange(len(desc), dtype=np.int64))
    if parts:
        index.add_with_ids(np.ascontiguousarray(np.concatenate(parts)), np.concatenate(ids))
    return counts


def _remove(index, counts: dict[int, int], photos: list[int]) -> None:
    import faiss

    present = [p for p in photos if p in counts]
    if not present:
        return
    rows = np.concatenate([(np.int64(p) << ROW_BITS) | np.arange(counts.pop(p), dtype=np.int64) for p in present])
    index.remove_ids(faiss.IDSelectorBatch(rows))


def _chunks(ids: np.ndarray, size: int):
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
