"""Ranking a query vector against one space: expansion, engine search, re-ranking, one hit per photo.

Everything here reads one ``Space`` (a transform and its collections, swapped as a whole), so a search
that started on a space finishes on it even if the library moves to a new one meanwhile; no lock is
taken beyond the index's own short read lock per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lookalike.config import Settings
from lookalike.filters import Filter
from lookalike.search.rerank import expand_query, k_reciprocal_order
from lookalike.search.results import Hit
from lookalike.store.catalog import Catalog, ObjectRecord, split_object_vector_id
from lookalike.store.catalog.cache import RecordCache
from lookalike.store.vectors import MISSING, VectorIndex, held_vectors
from lookalike.vectorspace import Space

MATCHES = ("whole", "objects", "both")


@dataclass(frozen=True)
class RankRequest:
    """What a ranking asks besides the query vector.

    ``exclude``: the photo searched from (more like this), never its own neighbour. ``match``: which entries compete
    (``MATCHES``). ``detected_label``: only subjects of that label. ``plain``: the engine's order as it is, without
    query expansion or re-ranking, for queries whose neighbourhood is not a photo's (a text): both steps assume the
    query is one of the photos' kind."""

    k: int = 10
    min_score: float | None = None
    label: str | None = None
    exclude: int | None = None
    match: str = "whole"
    detected_label: str | None = None
    plain: bool = False
    where: Filter | None = None  # on the photos' fields, run inside the engine


def engine_where(label: str | None, where: Filter | None) -> dict[str, Any] | None:
    """The engine's payload filter for a label and a fields filter (None: no filter)."""
    out: dict[str, Any] = {}
    if label is not None:
        out["label"] = label
    if where is not None:
        out["fields"] = where
    return out or None


def rank(space: Space, catalog: Catalog, records: RecordCache, settings: Settings, vec: np.ndarray,
         request: RankRequest) -> list[Hit]:  # fmt: skip
    """The query's hits in ``space``, best first, one per photo."""
    k, min_score, label, exclude = request.k, request.min_score, request.label, request.exclude
    match, detected_label, plain = request.match, request.detected_label, request.plain
    original = space.apply_transform(vec[None])[0]
    # query expansion helps "photos like this" (whole photos) but pulls an instance query (a subject,
    # a region) towards whole-photo neighbours: bench/objects.py top-1 0.94 with it, 0.99 without
    expand = settings.query_expansion and match == "whole" and not plain
    # the photo being searched from (more like this, leave-one-out) is never its own neighbour: not in the
    # expansion, not among the candidates re-ranked, as for a photo that is not in the library
    query = _expand(space, settings, original, exclude) if expand else original
    # ranked by the (expanded, re-ranked) score, which is what hits report as their score, so the numbers
    # shown agree with the order; each hit also carries the plain cosine to the photo actually given
    # (its similarity: 1.0 for the same photo), which min_score filters on
    best: dict[int, tuple[float, float, int | None]] = {}
    extra = 1 if exclude is not None else 0

    def scored(index: VectorIndex, ids: np.ndarray, scores: np.ndarray) -> list[tuple[int, float, float]]:
        found = ids != MISSING
        ids, scores = ids[found], scores[found]
        if query is original:
            given = scores
        else:
            held, vectors = held_vectors(index, ids)
            keep = np.isin(ids, held)
            ids, scores, given = ids[keep], scores[keep], vectors @ original
        return list(zip(ids.tolist(), scores.tolist(), np.asarray(given).tolist(), strict=True))

    # filters run inside the vector backend, on the payload written from the catalog
    where = engine_where(label, request.where)
    if match in ("whole", "both"):
        depth = settings.rerank_depth if match == "whole" and not plain else 0
        ids, scores = space.photos.search(query[None], max(k, depth) + extra, where=where)
        ranked = [r for r in scored(space.photos, ids[0], scores[0]) if r[0] != exclude]
        if depth and len(ranked) > 1:
            ranked = _rerank(space, settings, query, ranked)
        for i, rank_score, score in ranked:
            best[i] = (rank_score, score, None)
    if match in ("objects", "both"):
        object_where = dict(where or {}) | ({"detected_label": detected_label} if detected_label else {})
        # several objects of one photo can rank high: ask for more to fill k photos
        ids, scores = space.objects.search(query[None], 4 * (k + extra), where=object_where or None)
        for vector_id, rank_score, score in scored(space.objects, ids[0], scores[0]):
            image_id = split_object_vector_id(vector_id)[0]
            if image_id not in best or best[image_id][0] < rank_score:
                best[image_id] = (rank_score, score, vector_id)
    best_first = sorted(best.items(), key=lambda kv: -kv[1][0])
    order = [(i, rank_score, score, vid) for i, (rank_score, score, vid) in best_first
             if i != exclude and (min_score is None or score >= min_score)]  # fmt: skip
    order = order[: 2 * k]  # a few spares for photos deleted since the index was last brought up to date
    found = records.get_many([o[0] for o in order])
    objects: dict[int, ObjectRecord] = catalog.object_records([o[3] for o in order if o[3] is not None])
    hits = []
    for i, rank_score, score, vid in order:
        rec = found.get(i)
        if rec is None:
            continue
        obj = objects.get(vid) if vid is not None else None
        box, det_label = (obj.box, obj.label) if obj is not None else (None, None)
        hits.append(Hit(i, float(rank_score), rec.label, rec.sources, rec.width, rec.height, rec.sha256, box, det_label,
                        float(score), detected_score=obj.score if obj is not None else None,
                        fields=rec.fields))  # fmt: skip
        if len(hits) == k:
            break
    return hits


def _rerank(space: Space, settings: Settings, query: np.ndarray,
            ranked: list[tuple[int, float, float]]) -> list[tuple[int, float, float]]:  # fmt: skip
    """k-reciprocal re-ranking of the candidates; the rank score becomes 1 - blended distance."""
    held, vectors = held_vectors(space.photos, np.array([i for i, _, _ in ranked], dtype=np.int64))
    if len(held) < len(ranked):
        kept = set(held.tolist())
        ranked = [r for r in ranked if r[0] in kept]
    if len(ranked) < 2:
        return ranked
    s = settings
    order, distance = k_reciprocal_order(query, vectors, s.rerank_k1, s.rerank_k2, s.rerank_lambda)
    return [(ranked[j][0], 1.0 - float(d), ranked[j][2]) for j, d in zip(order, distance, strict=True)]


def _expand(space: Space, settings: Settings, vec: np.ndarray, exclude: int | None = None) -> np.ndarray:
    """alpha query expansion over the whole-photo index (unfiltered: neighbours, not results)."""
    extra = 1 if exclude is not None else 0
    ids, scores = space.photos.search(vec[None], settings.query_expansion + extra)
    found = (ids[0] != MISSING) & (ids[0] != (exclude if exclude is not None else MISSING))
    if extra and found.sum() > settings.query_expansion:
        found &= np.cumsum(found) <= settings.query_expansion
    if not found.any():
        return vec
    held, neighbours = held_vectors(space.photos, ids[0][found])
    if not len(held):
        return vec
    return expand_query(vec, neighbours, scores[0][found][np.isin(ids[0][found], held)], settings.qe_alpha)
