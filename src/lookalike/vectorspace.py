"""The vectors a library searches, and how every process keeps them in step with the catalog.

A *space* is one learned vector transform (a row of the catalog's ``transforms``: the whitening, or the
identity for raw model vectors) held in one vector engine as three collections: whole photos, detected
subjects, and the photos' copy descriptors (lookalike.models.copy_descriptor: not transformed, the same
payloads as the photos, so that a search's filters apply to both). The catalog names the active space (meta
``space``); every process opens that one. A new space
(a re-learned whitening, ``reindex``, a move to another engine) is built beside the active one, then the
catalog's pointer is switched: each process swaps its space at once (transform and collections
together) on its next look, and the old collections are dropped after ``retire_grace`` seconds.

Every catalog write appends the touched photo ids to the change feed in the same transaction. A
``Follower`` brings a space to the catalog's state by reading the feed from the space's position and,
for each changed photo, its current state in the catalog: present means upsert its vector and payload,
gone means remove it. Applying a change twice, or late, is harmless, and nothing is ever deleted that the
catalog still holds. Where the position lives depends on the engine:

- embedded: each process holds its own copy of the index (loaded from the library directory's files
  when they exist) and follows the feed itself; the position is in memory and in the saved manifest;
- a shared engine (Milvus, Elasticsearch): the position is stored in the catalog for the collection, and
  processes take turns applying the feed under a catalog lock; a writer applies its own changes before
  it acknowledges them, and any process's follower finishes what a crashed writer left.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from lookalike.config import Settings
from lookalike.search.whitening import Whitening
from lookalike.store.catalog import COPY, OBJECTS, PHOTO, Catalog, Change
from lookalike.store.vectors import EmbeddedIndex, VectorIndex

log = logging.getLogger("lookalike")

IDENTITY = "identity"
WHITENING = "pca-whitening"
FEED_CHUNK = 5000


@dataclass(frozen=True)
class SpaceKey:
    """Which transform (catalog version) in which engine: the catalog's pointer to the active space."""

    backend: str
    version: int

    def to_json(self) -> str:
        return json.dumps({"backend": self.backend, "version": self.version}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SpaceKey:
        data = json.loads(text)
        return cls(str(data["backend"]), int(data["version"]))

    @property
    def shared(self) -> bool:
        """Collections other processes write too (anything but the embedded index)."""
        return self.backend != "embedded"


def collection_names(library_id: str, model: str, version: int) -> tuple[str, str, str, str]:
    """Named by library, model and transform version, never by a local path: every process that shares
    the catalog finds the same collections, and two libraries on one server never meet. Photos, subjects,
    copy descriptors, copy descriptors of the photos' centres (in pixels: "centres"; the "parts" before schema
    version 8 were pooled)."""
    slug = re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")
    base = f"lk_{library_id[:12]}_{slug}"
    return (f"{base}_photos_v{version}", f"{base}_objects_v{version}", f"{base}_copies_v{version}",
            f"{base}_centres_v{version}")  # fmt: skip


def load_transform(catalog: Catalog, version: int) -> Whitening | None:
    found = catalog.transform(version)
    if found is None:
        raise LookupError(f"transform version {version} is not in the catalog")
    return Whitening.from_bytes(found.data) if found.kind == WHITENING else None


class Space:
    """One transform and its collections; replaced as a whole, never changed in place."""

    def __init__(self, key: SpaceKey, names: tuple[str, str, str, str], transform: Whitening | None,
                 photos: VectorIndex, objects: VectorIndex, copies: VectorIndex,
                 parts: VectorIndex) -> None:  # fmt: skip
        self.key, self.names, self.transform = key, names, transform
        self.photos, self.objects, self.copies, self.parts = photos, objects, copies, parts
        self.applying = threading.Lock()  # one follower at a time in this process
        self.cursor_key = f"cursor:{names[0]}"
        # a shared space made before copy descriptors (or their centres'): each collection filled once
        self.copies_filled_key, self.parts_filled_key = f"filled:{names[2]}", f"filled:{names[3]}"
        self.seen = 0  # the newest feed position this process has seen applied (shared engines)

    @property
    def dim(self) -> int:
        return self.photos.dim

    @property
    def shared(self) -> bool:
        return self.key.shared

    @property
    def cursor(self) -> int:
        return getattr(self.photos, "cursor", 0)

    def apply_transform(self, vectors: np.ndarray) -> np.ndarray:
        """Raw model vectors -> the vectors this space holds (whitened when learned)."""
        t = self.transform
        return t.apply(vectors) if t is not None else np.asarray(vectors, dtype=np.float32)

    def indexes(self) -> tuple[VectorIndex, VectorIndex, VectorIndex, VectorIndex]:
        return self.photos, self.objects, self.copies, self.parts

    def copy_collections(self) -> tuple[tuple[VectorIndex, bool], ...]:
        """The copy descriptors' collections, each with whether it holds the photos' centres."""
        return (self.copies, False), (self.parts, True)

    def wait(self) -> None:
        for index in self.indexes():
            index.wait()

    def save(self) -> None:
        """Embedded: write the files if they changed (another process may already have newer ones)."""
        if self.shared:
            return
        for index in self.indexes():
            assert isinstance(index, EmbeddedIndex)  # a space that is not shared is embedded
            if index.dirty or not index.manifest_path.exists():
                index.save()

    def drop(self) -> None:
        for index in self.indexes():
            index.drop()


def open_engine(backend: str, name: str, dim: int, settings: Settings, home: Path) -> VectorIndex:
    """A collection in the configured engine (created when missing)."""
    s = settings
    hnsw = {"m": s.hnsw_m, "ef_construction": s.hnsw_ef_construction, "ef_search": s.hnsw_ef_search}
    if backend == "embedded":
        return EmbeddedIndex(home / "vectors" / name, dim, s.ann_threshold, hnsw, name, s.ivf_threshold, s.ivf_nprobe,
                             s.ivf_storage)  # fmt: skip
    if backend.startswith("tcvectordb+"):
        from lookalike.store.tencent import TencentVectorIndex

        key = s.tcvectordb_key.get_secret_value() if s.tcvectordb_key else None
        return TencentVectorIndex(backend.removeprefix("tcvectordb+"), name, dim, s.tcvectordb_username, key,
                                  s.hnsw_m, s.hnsw_ef_construction, s.hnsw_ef_search)  # fmt: skip
    if backend.startswith("elasticsearch+"):
        from lookalike.store.elastic import ElasticsearchIndex

        key = s.es_api_key.get_secret_value() if s.es_api_key else None
        return ElasticsearchIndex(backend.removeprefix("elasticsearch+"), name.lower(), dim, key)
    from lookalike.store.milvus import MilvusIndex

    token = s.milvus_token.get_secret_value() if s.milvus_token else None
    return MilvusIndex(backend, name, dim, token, **hnsw, index_type=s.milvus_index, nlist=s.milvus_nlist,
                       nprobe=s.ivf_nprobe)  # fmt: skip


def drop_collection(backend: str, name: str, settings: Settings) -> None:
    """Drop a shared engine's collection by its name where it exists, never making it to drop it (a retired space
    may lack a collection its version never had, or one an earlier try dropped)."""
    s = settings
    if backend.startswith("tcvectordb+"):
        from lookalike.store.tencent import TencentVectorIndex

        key = s.tcvectordb_key.get_secret_value() if s.tcvectordb_key else None
        TencentVectorIndex.drop_named(backend.removeprefix("tcvectordb+"), name, s.tcvectordb_username, key)
    elif backend.startswith("elasticsearch+"):
        from lookalike.store.elastic import ElasticsearchIndex

        key = s.es_api_key.get_secret_value() if s.es_api_key else None
        ElasticsearchIndex.drop_named(backend.removeprefix("elasticsearch+"), name.lower(), key)
    else:
        from lookalike.store.milvus import MilvusIndex

        MilvusIndex.drop_named(backend, name, s.milvus_token.get_secret_value() if s.milvus_token else None)


class Follower:
    """Applies the catalog's change feed to spaces (see the module docstring)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def catch_up(self, space: Space, wait: bool = True) -> bool:
        """Bring ``space`` to the catalog's current state. With ``wait`` off, skip when another thread or
        process is applying to it right now (they will finish the work). Returns whether it ran."""
        if not space.applying.acquire(blocking=wait):
            return False
        try:
            if not space.shared:
                end = self._apply_from(space, space.cursor)
                for index in space.indexes():
                    assert isinstance(index, EmbeddedIndex)  # a space that is not shared is embedded
                    index.cursor = end
                return True
            with self.catalog.lock(f"apply:{space.names[0]}", wait) as got:
                if not got:
                    return False
                start = int(self.catalog.get_meta(space.cursor_key) or 0)
                if start > space.seen:
                    # another process applied changes: make its writes visible to this client's reads
                    for index in space.indexes():
                        index.refresh_reads()
                end = self._apply_from(space, start)
                if end != start:
                    self.catalog.set_meta(space.cursor_key, str(end))
                space.seen = end
            return True
        finally:
            space.applying.release()

    def _apply_from(self, space: Space, cursor: int) -> int:
        if cursor + 1 < self.catalog.pruned_upto():
            log.warning("space %s is behind the kept change feed: comparing it with the whole catalog", space.names[0])
            cursor = self.resync(space)
        while True:
            changes = self.catalog.changes_since(cursor, FEED_CHUNK)
            if not changes:
                return cursor
            self.apply(space, changes)
            cursor = changes[-1].seq
            if len(changes) < FEED_CHUNK:
                return cursor

    def apply(self, space: Space, changes: list[Change]) -> None:
        """Make the changed photos' vectors match the catalog (idempotent)."""
        photo_ids = sorted({c.image_id for c in changes if c.flags & PHOTO})
        object_ids = sorted({c.image_id for c in changes if c.flags & OBJECTS})
        copy_ids = sorted({c.image_id for c in changes if c.flags & (PHOTO | COPY)})
        for index, parts in space.copy_collections() if copy_ids else ():
            found = self.catalog.copy_vectors(copy_ids, parts)
            if len(found):
                index.add(found.ids, found.matrix, found.payloads)
            gone = np.setdiff1d(np.asarray(copy_ids, dtype=np.int64), found.ids)
            if len(gone):
                index.remove(gone)
        if photo_ids:
            found = self.catalog.vectors(photo_ids)
            if len(found):
                space.photos.add(found.ids, space.apply_transform(found.matrix), found.payloads)
            gone = np.setdiff1d(np.asarray(photo_ids, dtype=np.int64), found.ids)
            if len(gone):
                space.photos.remove(gone)
        if object_ids:
            space.objects.remove_photos(np.asarray(object_ids, dtype=np.int64))
            found = self.catalog.object_vectors(object_ids)
            if len(found):
                space.objects.add(found.ids, space.apply_transform(found.matrix), found.payloads)

    def fill(self, space: Space) -> int:
        """Fill new (empty) collections from the catalog; returns the feed position they reflect.

        The position is read before the catalog, so changes made during the fill are applied after it
        (again, harmlessly, when the fill already saw them).
        """
        start = self.catalog.last_seq()
        counts = self.catalog.counts()
        for objects, index in ((False, space.photos), (True, space.objects)):
            if isinstance(index, EmbeddedIndex):  # the engines size their own indexes
                index.preset(counts["objects" if objects else "images"], partial(self._sample, space, objects=objects))
            for chunk in self.catalog.iter_vectors(objects=objects):
                index.add(chunk.ids, space.apply_transform(chunk.matrix), chunk.payloads)
        self.fill_copies(space)
        return start

    def fill_copies(self, space: Space, only: VectorIndex | None = None) -> None:
        """Fill the copy collections (or ``only`` one) from the catalog (a new space, or a shared one made before
        they existed)."""
        for index, parts in space.copy_collections():
            if only is None or index is only:
                for chunk in self.catalog.iter_copy_vectors(parts=parts):
                    index.add(chunk.ids, chunk.matrix, chunk.payloads)

    def _sample(self, space: Space, n: int, objects: bool) -> np.ndarray:
        """About ``n`` of the catalog's vectors (photos, or their subjects), as ``space`` holds them."""
        ids = self.catalog.sample_ids(n)
        sample = self.catalog.object_vectors(ids) if objects else self.catalog.vectors(ids)
        return space.apply_transform(sample.matrix) if len(sample) else np.empty((0, space.dim), np.float32)

    def resync(self, space: Space) -> int:
        """Compare the collections with the whole catalog: add what is missing, remove what the catalog
        no longer holds, rewrite every payload. Used when the feed cannot tell what changed (a position
        older than the kept feed) and by ``lookalike doctor --fix``."""
        start = self.catalog.last_seq()
        truth = self.catalog.ids()
        have = space.photos.ids()
        extra = np.setdiff1d(have, truth)
        if len(extra):
            space.photos.remove(extra)
        for chunk in self.catalog.iter_vectors():
            space.photos.add(chunk.ids, space.apply_transform(chunk.matrix), chunk.payloads)
        object_truth = self.catalog.object_vector_ids()
        extra = np.setdiff1d(space.objects.ids(), object_truth)
        if len(extra):
            space.objects.remove(extra)
        for chunk in self.catalog.iter_vectors(objects=True):
            space.objects.add(chunk.ids, space.apply_transform(chunk.matrix), chunk.payloads)
        for index, parts in space.copy_collections():
            extra = np.setdiff1d(index.ids(), self.catalog.copy_vector_ids(parts))
            if len(extra):
                index.remove(extra)
        self.fill_copies(space)
        return start
