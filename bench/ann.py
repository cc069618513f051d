"""Choose the ANN library for the embedded index: hnswlib vs usearch vs faiss HNSW vs exact numpy.

Vectors: the real MobileNetV2 embeddings of the 1,000 shared Towhee photos, plus
synthetic ones drawn around them (a real vector + Gaussian noise, renormalised),
so the data has the cluster structure of real photo embeddings. Queries are the
100 real test-photo embeddings. Same HNSW parameters for every library.

    python bench/ann.py [--n 100000] [--m 16] [--ef-construction 128] [--ef-search 96]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from lookalike.config import Settings
from lookalike.imaging import decode
from lookalike.ingest.sources import walk_folder
from lookalike.models.registry import load_embedder
from lookalike.store.vectors import FlatIndex, HnswIndex

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TOWHEE = SHARED / "datasets" / "towhee_reverse_image_search"


def embed_folder(embedder, folder: Path) -> np.ndarray:
    files = [i.source for i in walk_folder(folder)]
    px = np.stack([embedder.prepare(decode(Path(f).read_bytes(), 10**9, 256).image) for f in files])
    return embedder.embed(px)


def synthetic(real: np.ndarray, n: int, noise: float, seed: int = 0) -> np.ndarray:
    """Photos "between" real photos: a random mix of two real embeddings plus noise, renormalised.

    Pure noise around each real vector would make ~100 near-ties per photo, which no
    collection has; mixes spread the points over the region real embeddings occupy.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        w = rng.uniform(0, 1, (m, 1)).astype(np.float32)
        mix = w * real[rng.integers(0, len(real), m)] + (1 - w) * real[rng.integers(0, len(real), m)]
        mix /= np.linalg.norm(mix, axis=1, keepdims=True)
        mix += noise * rng.standard_normal(mix.shape).astype(np.float32) / np.sqrt(real.shape[1])
        out[start : start + m] = mix / np.linalg.norm(mix, axis=1, keepdims=True)
    return out


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / exact.shape[1] for a, e in zip(approx, exact, strict=True)]))


def latency_ms(search, queries: np.ndarray) -> tuple[float, float]:
    times = []
    for q in queries:
        t = time.perf_counter()
        search(q[None])
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 192, 256])
    p.add_argument("--noise", type=float, default=0.3)
    args = p.parse_args()
    embedder = load_embedder(Settings())
    real, queries = embed_folder(embedder, TOWHEE / "train"), embed_folder(embedder, TOWHEE / "test")
    data = np.concatenate([real, synthetic(real, args.n - len(real), args.noise)])
    ids = np.arange(len(data), dtype=np.int64)
    dim = data.shape[1]
    flat = FlatIndex(dim)
    flat.add(ids, data)
    exact, _ = flat.search(queries, 10)
    rows = []
    p50, p99 = latency_ms(lambda q: flat.search(q, 10), queries)
    rows.append(("exact (numpy)", "-", "-", 1.0, p50, p99, "-"))

    def bench(name, build, set_ef, search):
        before = rss_mb()
        t = time.perf_counter()
        index = build()
        built = time.perf_counter() - t
        mem = rss_mb() - before
        for ef in args.ef_search:
            set_ef(index, ef)
            got = search(index, queries)
            p50, p99 = latency_ms(lambda q, index=index: search(index, q), queries)
            rows.append((name, f"{built:.1f}", str(ef), recall(got, exact), p50, p99, f"{mem:.0f}"))

    def ours_build():
        idx = HnswIndex(dim, args.m, args.ef_construction)
        idx.add(ids, data)
        return idx

    bench(
        "hnswlib (lookalike HnswIndex)",
        ours_build,
        lambda idx, ef: idx._index.set_ef(ef),
        lambda idx, q: idx.search(q, 10)[0],
    )
    try:
        from usearch.index import Index

        def usearch_build():
            idx = Index(ndim=dim, metric="ip", dtype="f32", connectivity=args.m, expansion_add=args.ef_construction)
            idx.add(ids.astype(np.uint64), data, threads=0)
            return idx

        def usearch_ef(idx, ef):
            idx.expansion_search = ef

        def usearch_search(idx, q):
            m = idx.search(q, 10, threads=0)
            return np.asarray(m.keys, dtype=np.int64).reshape(len(q), -1)

        bench("usearch", usearch_build, usearch_ef, usearch_search)
    except ImportError:
        pass
    try:
        import faiss

        def faiss_build():
            idx = faiss.IndexHNSWFlat(dim, args.m, faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = args.ef_construction
            idx.add(data)
            return idx

        def faiss_ef(idx, ef):
            idx.hnsw.efSearch = ef

        bench("faiss IndexHNSWFlat", faiss_build, faiss_ef, lambda idx, q: idx.search(q, 10)[1])
    except ImportError:
        pass
    table = Table(title=f"ANN at {len(data):,} x {dim}-d vectors, M={args.m}, ef_construction={args.ef_construction}")
    for col in ("index", "build s", "ef_search", "recall@10", "p50 ms", "p99 ms", "RSS MB"):
        table.add_column(col, justify="left" if col == "index" else "right")
    for name, built, ef, rec, p50, p99, mem in rows:
        table.add_row(name, built, ef, f"{rec:.3f}", f"{p50:.2f}", f"{p99:.2f}", mem)
    Console().print(table)


if __name__ == "__main__":
    main()
