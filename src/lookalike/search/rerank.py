"""Query-time re-ranking: alpha query expansion and k-reciprocal re-ranking.

alpha-QE replaces the query by the normalised sum of itself and its top ``n`` neighbours
weighted by similarity^alpha, then searches again: the neighbours pull in views of the
subject the query photo alone did not show. One extra index search per query.

k-reciprocal re-ranking (Zhong et al., CVPR 2017) re-orders the top candidates by how much
their reciprocal-neighbour sets overlap with the query's: two photos that are each in the
other's top-k1 are much more likely to show the same thing than a one-sided neighbour. It is
computed locally, on the query and its top ``depth`` candidates only, so the cost is bounded
by a (depth+1)^2 similarity matrix, not by the library's size.
"""

from __future__ import annotations

import numpy as np


def expand_query(query: np.ndarray, neighbours: np.ndarray, scores: np.ndarray, alpha: float) -> np.ndarray:
    """alpha-QE: normalise(q + sum_i max(s_i, 0)^alpha * v_i)."""
    if len(neighbours) == 0:
        return query
    weights = np.maximum(np.asarray(scores, dtype=np.float32), 0.0) ** alpha
    expanded = query + (weights[:, None] * neighbours).sum(axis=0)
    return (expanded / max(float(np.linalg.norm(expanded)), 1e-12)).astype(np.float32)


def k_reciprocal_order(
    query: np.ndarray, candidates: np.ndarray, k1: int = 20, k2: int = 6, lam: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank ``candidates`` (unit rows) for ``query``: (order, distance) with the best first.

    ``order`` is a permutation of ``range(len(candidates))``; ``distance`` is the blended
    distance (1 - lam) * Jaccard(k-reciprocal sets) + lam * (1 - cosine), per candidate in
    the returned order. ``lam`` = 1 gives back the cosine order.
    """
    n = len(candidates)
    if n < 2:
        return np.arange(n), 1.0 - candidates @ query if n else np.zeros(0, dtype=np.float32)
    points = np.vstack([query[None], candidates]).astype(np.float32)
    sims = np.clip(points @ points.T, -1.0, 1.0)
    dist = 1.0 - sims  # cosine distance in [0, 2]
    size = n + 1
    k1 = max(1, min(k1, size - 1))
    ranks = np.argsort(dist, axis=1, kind="stable")  # each row starts with itself

    def reciprocal(k: int) -> np.ndarray:
        """R[i, j]: j is in i's top k and i is in j's top k (matrix form, no Python loop)."""
        near = np.zeros((size, size), dtype=bool)
        np.put_along_axis(near, ranks[:, : k + 1], True, axis=1)
        return near & near.T

    members = reciprocal(k1)
    halves = reciprocal(max(1, int(round(k1 / 2))))
    # add a member's own (k1/2)-reciprocal set when more than 2/3 of it is already in ours
    overlap = members.astype(np.float32) @ halves.T.astype(np.float32)
    agrees = members & (overlap > 2 / 3 * halves.sum(axis=1)[None, :])
    expanded = members | ((agrees.astype(np.float32) @ halves.astype(np.float32)) > 0)
    weights = np.where(expanded, np.exp(-dist), 0.0).astype(np.float32)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    if k2 > 1:  # local query expansion of the weight vectors
        k2 = min(k2, size)
        weights = weights[ranks[:, :k2]].mean(axis=1)
    minimum = np.minimum(weights[0][None], weights[1:]).sum(axis=1)
    maximum = np.maximum(weights[0][None], weights[1:]).sum(axis=1)
    jaccard = 1.0 - minimum / np.maximum(maximum, 1e-12)
    final = (1.0 - lam) * jaccard + lam * dist[0, 1:]
    order = np.argsort(final, kind="stable")
    return order, final[order].astype(np.float32)
