"""The library's duplicates: exact ones (the same bytes under several paths, stored once) and near ones
(the same picture resized, recompressed, cropped, captioned ...), grouped.

Each photo's nearest neighbours in the vector index are checked with the same local-feature verdict a
search uses (lookalike.search.copies); photos joined by a "copy" verdict form a group (union-find), so no
similarity threshold has to be guessed. Cost: one index search and one match per photo.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from lookalike.search import copies
from lookalike.store.vectors import MISSING

PER_PHOTO = 5  # neighbours checked per photo


@dataclass
class Group:
    ids: list[int]  # best first: the one kept when the others are removed (largest, then oldest)
    pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (id, id, copy confidence)


def _find(parent: dict[int, int], i: int) -> int:
    while parent.setdefault(i, i) != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def near_duplicates(
    lib, min_confidence: float = 0.0, on_progress: Callable[[int, int], None] | None = None
) -> list[Group]:
    """Groups of two or more photos that are the same picture; photos without stored features are skipped."""
    space = lib.space
    ids = lib.catalog.ids()
    parent: dict[int, int] = {}
    pairs: list[tuple[int, int, float]] = []
    for start in range(0, len(ids), 256):
        rows = lib.catalog.vectors(ids[start : start + 256])
        chunk = rows.ids
        if not len(chunk):
            continue
        found, _ = space.photos.search(space.apply_transform(rows.matrix), PER_PHOTO + 1)
        wanted = {int(i) for row in found for i in row if i != MISSING} | {int(i) for i in chunk}
        stored = copies.stored(lib.catalog, wanted)
        records = lib.catalog.get_many(chunk.tolist())
        for image_id, row in zip(chunk.tolist(), found, strict=True):
            query = _query_features(lib, records.get(image_id)) or stored.get(image_id)
            if query is None:
                continue
            others = {int(i): stored[int(i)] for i in row if i != MISSING and int(i) != image_id and int(i) in stored}
            for other, verdict in copies.verify_many(query, others, objects=False).items():
                if verdict.copy and verdict.confidence >= min_confidence:
                    pairs.append((min(image_id, other), max(image_id, other), verdict.confidence))
                    parent[_find(parent, image_id)] = _find(parent, other)
        if on_progress:
            on_progress(min(start + 256, len(ids)), len(ids))
    members: dict[int, list[int]] = {}
    for i in parent:
        members.setdefault(_find(parent, i), []).append(i)
    records = lib.catalog.get_many([i for m in members.values() for i in m])
    groups = []
    for group in members.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda i: (-records[i].width * records[i].height, i))  # the largest, then the oldest
        inside = set(group)
        seen = {(a, b): c for a, b, c in pairs if a in inside}
        groups.append(Group(group, [(a, b, c) for (a, b), c in sorted(seen.items())]))
    groups.sort(key=lambda g: g.ids[0])
    return groups


def _query_features(lib, rec) -> copies.Features | None:
    """A photo asked about its duplicates gets a query's budget of features (more than the stored ones), from
    its thumbnail: a crop of it is found as a search would find it."""
    if rec is None:
        return None
    data = lib.images.get("thumbnail", rec.sha256)
    return copies.from_jpeg(data, rec.width, rec.height, copies.QUERY_FEATURES) if data is not None else None


def exact_duplicates(lib) -> Iterator[tuple[int, tuple[str, ...]]]:
    """Photos stored once but found under several paths: (id, its paths)."""
    ids = lib.catalog.ids().tolist()
    for start in range(0, len(ids), 1000):
        for image_id, rec in sorted(lib.catalog.get_many(ids[start : start + 1000]).items()):
            if len(rec.sources) > 1:
                yield image_id, rec.sources


def as_rows(groups: list[Group], records: dict) -> list[dict]:
    return [
        {"group": n, "keep": g.ids[0], "remove": g.ids[1:],
         "photos": [{"id": i, "source": records[i].sources[0] if records[i].sources else None,
                     "width": records[i].width, "height": records[i].height} for i in g.ids],
         "pairs": [{"a": a, "b": b, "confidence": round(c, 3)} for a, b, c in g.pairs]}
        for n, g in enumerate(groups, 1)
    ]  # fmt: skip
