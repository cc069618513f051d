"""Query-time re-ranking: alpha query expansion.

The query is replaced by the normalised sum of itself and its top ``n`` neighbours
weighted by similarity^alpha, then searched again: the neighbours pull in views of
the subject the query photo alone did not show. One extra index search per query.
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
