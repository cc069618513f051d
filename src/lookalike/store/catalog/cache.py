"""A cache of image records for the search path, kept true by the catalog's change feed.

Every search turns its hits into records (label, sources, size); reading them from the catalog costs a
query per search (0.25 ms on SQLite, 0.75 ms on PostgreSQL: bench/RESULTS.md, "Catalog"). Records change
only through catalog writes, and every write that touches a record appends a change, so the cache follows
the feed like the vector index does: each change evicts its photo. A record read from the catalog is only
stored if no change was applied meanwhile (the generation check), so a slow reader cannot put back a record
older than an eviction it missed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from lookalike.store.catalog.records import ImageRecord
from lookalike.store.catalog.sql import Catalog


class RecordCache:
    def __init__(self, catalog: Catalog, size: int = 50_000) -> None:
        self.catalog, self.size = catalog, size
        self._records: OrderedDict[int, ImageRecord] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0
        self.cursor = catalog.last_seq()  # the records cached reflect the feed up to here

    def get_many(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        ids = [int(i) for i in ids]
        with self._lock:
            found = {i: self._records[i] for i in ids if i in self._records}
            for i in found:
                self._records.move_to_end(i)
            generation = self._generation
        missing = [i for i in ids if i not in found]
        if missing:
            fresh = self.catalog.get_many(missing)
            with self._lock:
                if generation == self._generation:  # no eviction ran meanwhile: safe to keep
                    self._records.update(fresh)
                    while len(self._records) > self.size:
                        self._records.popitem(last=False)
            found.update(fresh)
        return found

    def follow(self) -> None:
        """Evict every photo changed since the last look (all of them when the feed was pruned past us)."""
        start = self.cursor
        changes = self.catalog.changes_since(start, limit=100_000)
        behind = start + 1 < self.catalog.pruned_upto() or len(changes) == 100_000
        if not changes and not behind:
            return
        with self._lock:
            self._generation += 1
            if behind:
                self._records.clear()
            else:
                for change in changes:
                    self._records.pop(change.image_id, None)
            self.cursor = self.catalog.last_seq() if behind else changes[-1].seq
