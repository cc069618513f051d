"""The active vector space of a library, as one process sees it: opened from the catalog's pointer, kept current.

Every process finds the space to search in the catalog (``meta.space``: the engine and the transform version),
opens its collections (loads the embedded index, or finds the shared engine's), fills them from the catalog when
they are new, and follows the catalog's change feed (``lookalike.vectorspace.Follower``) so photos any process adds
or removes are found within ``sync_interval``. When maintenance activates a new space (a re-learned whitening,
another engine), every process switches at its next refresh. A long-running service refreshes from a thread of its
own (``following``); a CLI process refreshes on the search that finds its view older than ``sync_interval``.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np

from lookalike.config import Settings
from lookalike.models import copy_descriptor
from lookalike.search.whitening import Whitening
from lookalike.store.catalog import Catalog
from lookalike.store.catalog.cache import RecordCache
from lookalike.store.vectors import EmbeddedIndex, VectorIndex
from lookalike.vectorspace import (
    IDENTITY,
    WHITENING,
    Follower,
    Space,
    SpaceKey,
    collection_names,
    load_transform,
    open_engine,
)


class Spaces:
    """One library's spaces in this process: the active one (``space``) and the means to build and switch to
    another. ``following``: a thread of the process refreshes (the service), so searches need not look."""

    def __init__(self, catalog: Catalog, settings: Settings, home: Path, library_id: str, model_name: str,
                 model_dim: int, records: RecordCache, following: bool = False) -> None:  # fmt: skip
        self.catalog, self.settings, self.home = catalog, settings, home
        self.library_id, self.model_name, self.model_dim = library_id, model_name, model_dim
        self.records = records
        self.following = following
        self.follower = Follower(catalog)
        self._space: Space | None = None
        self._lock = threading.RLock()
        self._last_refresh = 0.0

    def active_key(self) -> SpaceKey:
        """The catalog's pointer to the space every process searches; created with the library."""
        text = self.catalog.get_meta("space")
        if text is None:
            with self.catalog.lock("first-space"):
                text = self.catalog.get_meta("space")
                if text is None:
                    key = SpaceKey(self.settings.vector_backend, self._first_transform())
                    text = self.catalog.setdefault_meta("space", key.to_json())
        return SpaceKey.from_json(text)

    def _first_transform(self) -> int:
        """The identity, or the whitening a library directory of an earlier version learned."""
        legacy = Whitening.load(self.home / "whitening.npz") if self.settings.whiten else None
        if legacy is not None and legacy.mean.shape[0] == self.model_dim:
            return self.catalog.add_transform(WHITENING, legacy.dim, legacy.fitted_on, legacy.to_bytes())
        return self.catalog.add_transform(IDENTITY, self.model_dim, 0, b"")

    def names_for(self, key: SpaceKey) -> tuple[str, str, str, str]:
        return collection_names(self.library_id, self.model_name, key.version)

    def open_engine(self, backend: str, name: str, dim: int) -> VectorIndex:
        return open_engine(backend, name, dim, self.settings, self.home)

    @property
    def opened(self) -> Space | None:
        """The active space if this process has opened it (None: nothing to save or wait for)."""
        return self._space

    @property
    def space(self) -> Space:
        """The active space, opened on first use and brought up to date with the catalog."""
        space = self._space
        if space is None:
            with self._lock:
                if self._space is None:
                    self._space = self.open_space(self.active_key())
                space = self._space
        return space

    def open_space(self, key: SpaceKey) -> Space:
        """Open a space's collections: load (embedded) or find (shared) them, fill them from the catalog when
        new, then apply the change feed."""
        transform = load_transform(self.catalog, key.version)
        dim = transform.dim if transform is not None else self.model_dim
        names = self.names_for(key)
        photos, objects = (self.open_engine(key.backend, name, dim) for name in names[:2])
        copies_index, parts = (self.open_engine(key.backend, name, copy_descriptor.DIM) for name in names[2:])
        space = Space(key, names, transform, photos, objects, copies_index, parts)
        if not key.shared:
            # the pooled centres of a library indexed before schema version 8 (a collection nothing reads any more)
            shutil.rmtree(self.home / "vectors" / names[3].replace("_centres_v", "_parts_v"), ignore_errors=True)
            embedded = [index for index in space.indexes() if isinstance(index, EmbeddedIndex)]
            assert len(embedded) == len(space.indexes())  # a space that is not shared is embedded
            loaded = all([index.load() for index in embedded])
            cursors = [index.cursor for index in embedded]
            if not loaded or min(cursors) == 0:
                space.drop()
                cursors = [self.follower.fill(space)]
            for index in embedded:
                index.cursor = min(cursors)
        else:
            self._fill_shared(space)
        self.follower.catch_up(space)
        return space

    def _fill_shared(self, space: Space) -> None:
        """New shared collections are filled once, by the first process that opens them; so are the copy collections
        of a space made before they existed."""
        names, catalog = space.names, self.catalog
        later = ((space.copies_filled_key, space.copies), (space.parts_filled_key, space.parts))
        if catalog.get_meta(space.cursor_key) is not None and all(catalog.get_meta(k) is not None for k, _ in later):
            return
        with catalog.lock(f"apply:{names[0]}"):
            if catalog.get_meta(space.cursor_key) is None:
                start = self.follower.fill(space)
                catalog.set_metas({space.cursor_key: str(start)} | {key: "1" for key, _ in later})
                return
            for key, index in later:
                if catalog.get_meta(key) is None:
                    self.follower.fill_copies(space, only=index)
                    catalog.set_meta(key, "1")

    def build_space(self, key: SpaceKey) -> Space:
        """A new space, filled and saved, not yet active."""
        space = self.open_space(key)
        space.wait()
        space.save()
        return space

    def activate(self, space: Space) -> None:
        """Point every process at ``space``; the one it replaces is dropped after ``retire_grace``."""
        old = self.active_key()
        self.catalog.set_metas({"space": space.key.to_json(), f"retired:{old.to_json()}": str(time.time())})
        with self._lock:
            self._space = space
        self.follower.catch_up(space)

    def refresh(self, wait: bool = True) -> Space:
        """Follow the catalog: switch to a new active space, apply the change feed. A process that
        searches calls this at least every ``sync_interval`` (the service from a thread of its own)."""
        key = self.active_key()
        space = self.space
        if key != space.key:
            with self._lock:
                if self._space is None or self._space.key != key:
                    self._space = self.open_space(key)
                space = self._space
        self.follower.catch_up(space, wait)
        self.records.follow()
        self._last_refresh = time.monotonic()
        return space

    def fresh(self) -> Space:
        """The space to search: refreshed first when no thread follows the catalog and the view is stale."""
        if not self.following and time.monotonic() - self._last_refresh > self.settings.sync_interval:
            return self.refresh(wait=False)
        return self.space

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Raw model vectors -> the vectors the active space holds."""
        return self.space.apply_transform(vectors)

    def save(self) -> None:
        """Embedded index: write its files when they changed (a cache the next process loads)."""
        if self._space is not None:
            self._space.save()

    def close(self) -> None:
        """Finish a tier switch in progress and save the embedded index, so the next process loads it."""
        if self._space is not None:
            self._space.wait()
        self.save()
