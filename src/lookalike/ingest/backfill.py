"""Copy descriptors for photos indexed without one (before version 4, or with the copy stage off).

A resumable backfill rather than a re-index: only the copy descriptor is computed, from each photo's original
(the kept copy, else its source file when it still holds the same bytes) or, when neither is left, its stored
thumbnail. Photos are taken in id order among those that have none, so an interrupted run resumes where it stopped
with nothing to remember; each batch is one catalog transaction, and the change feed brings every process's copy
collection up to date.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from lookalike.imaging import BadImage, decode
from lookalike.models.copy_descriptor import CopyDescriptor
from lookalike.store.catalog import Catalog, ImageRecord

BATCH = 64


@dataclass
class BackfillReport:
    done: int = 0
    from_thumbnail: int = 0  # photos whose original could not be read any more
    failed: list[tuple[int, str]] = field(default_factory=list)


def _todo(catalog: Catalog, recompute: bool) -> Iterator[list[int]]:
    """Batches of photo ids: every photo's (read once) with ``recompute``, else those still without a descriptor."""
    if recompute:
        ids = catalog.ids().tolist()
        for start in range(0, len(ids), BATCH):
            yield ids[start : start + BATCH]
        return
    after = 0
    while batch := catalog.without_copy_vector(after, BATCH):
        after = batch[-1]
        yield batch


Reader = Callable[[ImageRecord], bytes | None]


def backfill(catalog: Catalog, model: CopyDescriptor, original: Reader, thumbnail: Reader, max_pixels: int,
             workers: int, recompute: bool = False,
             on_progress: Callable[[int, int], None] | None = None) -> BackfillReport:  # fmt: skip
    """Compute and store the missing copy descriptors (all of them with ``recompute``)."""
    report = BackfillReport()
    total = catalog.count() if recompute else catalog.count_without_copy_vector()

    def describe(rec: ImageRecord, centre_only: bool) -> tuple[int, tuple[np.ndarray | None, np.ndarray] | None,
                                                               str | None, bool]:  # fmt: skip
        data, thumb = original(rec), False
        if data is None:
            data, thumb = thumbnail(rec), True
        if data is None:
            return rec.id, None, "neither the original nor the thumbnail can be read", thumb
        try:
            decoded = decode(data, max_pixels, model.decode_side)
        except BadImage as exc:
            return rec.id, None, str(exc), thumb
        if centre_only:  # a photo described before schema version 8: its whole descriptor stays as it was computed
            return rec.id, (None, model.describe_centre(decoded.image)), None, thumb
        return rec.id, model.describe_stored(decoded.image), None, thumb

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="lookalike-backfill") as pool:
        for batch in _todo(catalog, recompute):
            records = catalog.get_many(batch)
            held = set() if recompute else set(catalog.copy_vectors(batch).ids.tolist())
            todo = [records[i] for i in batch if i in records]
            vectors, parts = {}, {}
            for image_id, found, error, thumb in pool.map(describe, todo, [r.id in held for r in todo]):
                if found is None:
                    report.failed.append((image_id, error or "unknown"))
                    continue
                if found[0] is not None:
                    vectors[image_id] = found[0]
                parts[image_id] = found[1]
                report.from_thumbnail += thumb
            report.done += catalog.set_copy_vectors(vectors, parts) if parts else 0
            if on_progress:
                on_progress(report.done + len(report.failed), total)
    return report
