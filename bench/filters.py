"""Filtered search at 100k vectors: the filter run inside the embedded index against filtering afterwards.

A shop's library: every photo has a category (100 values: 1 % each), a product code (1,000 values: 0.1 %) and a
price. A search asks for the 10 nearest photos that pass a filter. ``inside`` is what Lookalike does (the
engine's field columns give the matching rows, the index searches only them); ``after`` is the common shortcut
(search 10x deeper without the filter, then drop what does not pass), which starves when few photos match.
Recall@10 is against exact search over the matching photos; p50 is per query, one thread. Vectors are synthetic
(clusters in 256 dimensions, unit length), the fields independent of them, so a filter's matches are spread over
the whole space, as a category is over a catalogue's photos.

    python bench/filters.py [--n 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from lookalike.filters import matches, parse
from lookalike.store.payload import whole_photo
from lookalike.store.vectors import MISSING, EmbeddedIndex

DIM = 256
FILTERS = {
    "category (1 %)": 'category = "c17"',
    "product code (0.1 %)": 'sku = "s0042"',
    "price range and tag (~1 %)": 'price < 10 and tags contains "t3"',
}


def library(n: int, seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((500, DIM)).astype(np.float32)
    vecs = centres[rng.integers(0, 500, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    fields = [{"category": f"c{rng.integers(100)}", "sku": f"s{rng.integers(1000):04d}",
               "price": round(float(rng.uniform(0, 100)), 2), "tags": [f"t{rng.integers(10)}"]}
              for _ in range(n)]  # fmt: skip
    return vecs, fields


def build(kind: str, directory: Path, vecs: np.ndarray, fields: list[dict]) -> EmbeddedIndex:
    ivf = 1000 if kind == "ivf" else 0  # the tier the library reaches at this size by the settings' thresholds
    index = EmbeddedIndex(directory, DIM, threshold=1000, hnsw={"ef_search": 192}, ivf_threshold=ivf,
                          background=False)  # fmt: skip
    ids = np.arange(1, len(vecs) + 1, dtype=np.int64)
    for start in track(range(0, len(ids), 20_000), description=f"building {kind}"):
        chunk = ids[start : start + 20_000]
        index.add(chunk, vecs[chunk - 1], [whole_photo(int(i), "", fields[int(i) - 1]) for i in chunk])
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    vecs, fields = library(args.n)
    rng = np.random.default_rng(1)
    queries = vecs[rng.integers(0, args.n, args.queries)] + 0.3 * rng.standard_normal((args.queries, DIM))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    table = Table(title=f"10 nearest photos passing a filter, {args.n:,} vectors, {args.queries} queries")
    for col in ("index", "filter", "matching", "how", "recall@10", "full pages", "p50 ms"):
        table.add_column(col, justify="left" if col in ("index", "filter", "how") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("hnsw", "ivf"):
            index = build(kind, Path(tmp) / kind, vecs, fields)
            for name, text in FILTERS.items():
                f = parse(text)
                match = np.asarray([i + 1 for i, rec in enumerate(fields) if matches(f, rec)], dtype=np.int64)
                truth = match[np.argsort(-(queries @ vecs[match - 1].T), axis=1)[:, :10]]
                for how in ("inside", "after"):
                    found, took = [], []
                    for q in queries:
                        started = time.perf_counter()
                        if how == "inside":
                            ids, _ = index.search(q[None], 10, where={"fields": f})
                            got = ids[0][ids[0] != MISSING]
                        else:
                            ids, _ = index.search(q[None], 100)
                            kept = [i for i in ids[0].tolist() if i != MISSING and matches(f, fields[i - 1])]
                            got = np.asarray(kept[:10], dtype=np.int64)
                        took.append(time.perf_counter() - started)
                        found.append(got)
                    pairs = zip(found, truth, strict=True)
                    recall = np.mean([len(set(g.tolist()) & set(t.tolist())) / 10 for g, t in pairs])
                    full = np.mean([len(g) == 10 for g in found])
                    table.add_row(kind, name, f"{len(match):,}", how, f"{recall:.3f}", f"{full:.0%}",
                                  f"{1000 * np.median(took):.2f}")  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    from lookalike.config import Settings
    from lookalike.tuning import tune_process

    tune_process(Settings())
    main()
