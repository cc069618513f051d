"""Copies first: the top hits of a search checked for being the same picture as the query.

The global search finds candidates; each of the top ``copy_candidates`` is checked with local features
(lookalike.search.copies). A copy moves above every merely similar photo and its score becomes
1 + its confidence, so the scores shown still agree with the order (the similarity stays the cosine).
Photos indexed before local features were stored are checked from their thumbnail.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from lookalike.search import copies
from lookalike.search.results import Hit

MIRROR_DEPTH = 3


def check(
    hits: list[Hit],
    query: copies.Features,
    stored: Callable[[list[int]], dict[int, bytes]],
    thumbnail: Callable[[Hit], bytes | None],
    query_mirror: Callable[[], copies.Features | None],
    depth: int,
) -> list[Hit]:
    """``hits`` with the top ``depth`` checked and copies moved first (most inliers first)."""
    if depth <= 0 or not hits:
        return hits
    top = hits[:depth]
    found = stored([h.id for h in top])
    candidates: dict[int, copies.Features] = {}
    for h in top:
        data = found.get(h.id)
        if data is not None:
            candidates[h.id] = copies.Features.from_bytes(data)
        elif (thumb := thumbnail(h)) is not None:
            candidates[h.id] = copies.from_jpeg(thumb, h.width, h.height)
    verdicts = copies.verify_many(query, candidates)
    # a mirrored copy: looked for only when nothing else is a copy, and only among the first few candidates (a
    # mirror image is nearly the same photo to the global model, which is close to mirror-invariant)
    first = [h.id for h in top[:MIRROR_DEPTH] if h.id in candidates]
    if first and not any(v.copy for v in verdicts.values()):
        mirror = query_mirror()
        if mirror is not None:
            for i, flipped in copies.verify_many(mirror, {i: candidates[i] for i in first}).items():
                if flipped.inliers > verdicts[i].inliers:
                    qb = flipped.query_box  # in the mirror image: mapped back to the query's own pixels
                    box = (query.width - qb[2], qb[1], query.width - qb[0], qb[3]) if qb is not None else None
                    verdicts[i] = dataclasses.replace(flipped, query_box=box, mirrored=True)
    checked = [dataclasses.replace(h, verdict=verdicts.get(h.id)) for h in top]
    copied = sorted((h for h in checked if h.copy), key=lambda h: -h.verdict.inliers)
    copied = [dataclasses.replace(h, score=1.0 + h.verdict.confidence) for h in copied]
    rest = [h for h in checked if not h.copy] + hits[depth:]
    return copied + rest
