"""Vector backends from 100k to 1M photos: build time, insert rate, recall@10, latency, memory, disk.

Vectors as the library would hold them at that size: the real MobileNetV2 embeddings of the shared
Towhee photos plus synthetic ones drawn between them (a random mix of two real embeddings plus noise),
PCA-whitened to 256 dimensions (the library's cap). Queries: the 100 real test photos. Recall@10 is
against exact search on the same vectors.

Backends: ``embedded`` is the library's embedded index with its default settings, built the way a
library grows (batches of 50k; exact below 20k vectors, HNSW to 200k, IVF above, its cells re-learned
when the collection has grown 4x), ``hnsw`` the HNSW tier alone at the same size, ``milvus-lite`` the
Milvus backend on a Milvus Lite file, ``milvus-server`` a Milvus server: one already running
(``--milvus-uri http://host:19530``), or with ``--milvus-server`` the PyPI `milvus` 2.3.5 standalone server
started here, which binds every interface, so only inside a private network namespace with nothing but
loopback (as root):

    python bench/scale.py --sizes 100000 1000000 --backends embedded hnsw milvus-lite
    unshare -n -- sh -c 'ip link set lo up && python bench/scale.py --sizes 100000 --backends --milvus-server'
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from lookalike.config import Settings
from lookalike.imaging import decode
from lookalike.ingest.sources import walk_folder
from lookalike.models.registry import load_embedder
from lookalike.search.whitening import Whitening
from lookalike.store.vectors import EmbeddedIndex, HnswIndex

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TOWHEE = SHARED / "datasets" / "towhee_reverse_image_search"


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def embed_folder(embedder, folder: Path) -> np.ndarray:
    files = [i.source for i in walk_folder(folder)]
    return embedder.embed(np.stack([embedder.prepare(decode(Path(f).read_bytes(), 10**9, 256).image) for f in files]))


def synthetic(real: np.ndarray, n: int, noise: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        w = rng.uniform(0, 1, (m, 1)).astype(np.float32)
        mix = w * real[rng.integers(0, len(real), m)] + (1 - w) * real[rng.integers(0, len(real), m)]
        mix /= np.linalg.norm(mix, axis=1, keepdims=True)
        mix += noise * rng.standard_normal(mix.shape).astype(np.float32) / np.sqrt(real.shape[1])
        yield mix / np.linalg.norm(mix, axis=1, keepdims=True)


def wait_for_index(index, timeout: float = 1800) -> None:
    """Seal the segments and wait until the server's HNSW index covers every row (search is brute force before)."""
    index.client.flush(index.collection)
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = index.client.describe_index(index.collection, "vector")
        if info.get("pending_index_rows", 0) == 0 and info.get("indexed_rows", 0) >= info.get("total_rows", 0):
            return
        time.sleep(2)


def percentile_ms(fn, queries: np.ndarray) -> tuple[float, float]:
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q[None])
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.tolist(), exact.tolist(), strict=True)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--backends", nargs="*", default=["embedded", "hnsw", "milvus-lite"])
    p.add_argument("--milvus-uri", help="also measure the Milvus server at this URI")
    p.add_argument("--milvus-server", action="store_true", help="start a Milvus standalone server (netns only)")
    p.add_argument("--milvus-index", default="HNSW", help="index type of the Milvus server collection")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--ef-sweep", type=int, nargs="*", default=[], help="also report the HNSW tier at these ef")
    p.add_argument("--nprobe-sweep", type=int, nargs="*", default=[], help="also report the IVF tier at these")
    args = p.parse_args()
    with contextlib.ExitStack() as stack:
        if args.milvus_server:
            args.milvus_uri = stack.enter_context(milvus_server())
        run(args)


@contextlib.contextmanager
def milvus_server():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests import milvusserver

    with tempfile.TemporaryDirectory() as tmp:
        proc, uri = milvusserver.start(Path(tmp))
        try:
            yield uri
        finally:
            milvusserver.stop(proc)


def run(args) -> None:
    settings = Settings()
    embedder = load_embedder(settings)
    real, queries_raw = embed_folder(embedder, TOWHEE / "train"), embed_folder(embedder, TOWHEE / "test")
    table = Table(title=f"vector backends, {args.dim}-d whitened vectors, {os.cpu_count()} cores")
    for col in ("backend", "vectors", "build s", "insert/s", "recall@10", "p50 ms", "p99 ms", "batch q/s",
                "RSS MB", "RAM B/vec", "disk B/vec"):  # fmt: skip
        table.add_column(col, justify="left" if col == "backend" else "right")
    for n in args.sizes:
        raw = np.concatenate([real, *synthetic(real, n - len(real))])
        whitening = Whitening.fit([raw[i : i + 100_000] for i in range(0, len(raw), 100_000)], args.dim)
        data = np.concatenate([whitening.apply(raw[i : i + 100_000]) for i in range(0, len(raw), 100_000)])
        del raw
        queries = whitening.apply(queries_raw)
        ids = np.arange(len(data), dtype=np.int64)
        scores = queries @ data.T
        exact = np.argsort(-scores, axis=1)[:, :10]
        t = time.perf_counter()
        for q in queries:
            np.argpartition(-(data @ q), 10)[:10]
        exact_p50 = (time.perf_counter() - t) / len(queries) * 1000
        table.add_row("exact (numpy)", f"{n:,}", "-", "-", "1.000", f"{exact_p50:.1f}", "-", "-", "-",
                      f"{data.nbytes / n:.0f}", "-")  # fmt: skip
        backends = list(args.backends) + (["milvus-server"] if args.milvus_uri else [])
        for backend in backends:
            with tempfile.TemporaryDirectory() as tmp:
                before = rss_mb()
                t = time.perf_counter()
                if backend == "embedded":
                    index = EmbeddedIndex(Path(tmp) / "v", args.dim, settings.ann_threshold,
                                          {"m": settings.hnsw_m, "ef_construction": settings.hnsw_ef_construction,
                                           "ef_search": settings.hnsw_ef_search},
                                          "", settings.ivf_threshold, settings.ivf_nprobe,
                                          settings.ivf_storage)  # fmt: skip
                    step = 50_000
                elif backend == "hnsw":
                    index = HnswIndex(args.dim, settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search)
                    step = 50_000
                else:
                    from lookalike.store.milvus import MilvusIndex

                    uri = args.milvus_uri if backend == "milvus-server" else f"milvus-lite://{tmp}/m.db"
                    index = MilvusIndex(uri, f"scale_{n}", args.dim, index_type=args.milvus_index,
                                        nprobe=settings.ivf_nprobe)  # fmt: skip
                    step = 5_000
                for s in range(0, n, step):
                    index.add(ids[s : s + step], data[s : s + step])
                if hasattr(index, "wait"):  # tier switches run in the background: count them in the build
                    index.wait()
                if backend == "milvus-server":
                    wait_for_index(index)
                built = time.perf_counter() - t
                got, _ = index.search(queries, 10)
                p50, p99 = percentile_ms(lambda q, index=index: index.search(q, 10), queries)
                t = time.perf_counter()
                for _ in range(5):
                    index.search(queries, 10)
                batch_qps = 5 * len(queries) / (time.perf_counter() - t)
                grown = rss_mb() - before
                if backend == "embedded":
                    index.save()
                    disk = index.disk_bytes()
                elif backend == "hnsw":
                    index.save(Path(tmp) / "index.hnsw")
                    disk = sum(f.stat().st_size for f in Path(tmp).iterdir())
                elif backend == "milvus-lite":
                    disk = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
                else:
                    disk = float("nan")
                name = {
                    "embedded": f"embedded ({index.kind})",
                    "milvus-server": f"milvus-server ({args.milvus_index})",
                }.get(backend, backend)
                table.add_row(name, f"{n:,}", f"{built:.0f}", f"{n / built:,.0f}", f"{recall(got, exact):.3f}",
                              f"{p50:.2f}", f"{p99:.2f}", f"{batch_qps:,.0f}", f"{grown:,.0f}",
                              f"{grown * 2**20 / n:,.0f}", f"{disk / n:,.0f}")  # fmt: skip
                inner = getattr(index, "inner", index)
                sweeps = []
                if backend == "milvus-server" and args.milvus_index == "HNSW":
                    sweeps = [("ef", ef, lambda v, index=index: setattr(index, "ef_search", v)) for ef in args.ef_sweep]
                elif backend == "milvus-server":
                    sweeps = [("nprobe", v, lambda v, index=index: setattr(index, "nprobe", v))
                              for v in args.nprobe_sweep]  # fmt: skip
                elif inner.kind == "hnsw":
                    sweeps = [("ef_search", ef, lambda v, inner=inner: inner._index.set_ef(v)) for ef in args.ef_sweep]
                elif inner.kind == "ivf":
                    sweeps = [("nprobe", v, lambda v, inner=inner: setattr(inner, "nprobe", v))
                              for v in args.nprobe_sweep]  # fmt: skip
                for label, value, apply in sweeps:
                    apply(value)
                    got, _ = index.search(queries, 10)
                    p50, p99 = percentile_ms(lambda q, index=index: index.search(q, 10), queries)
                    table.add_row(f"  same, {label}={value}", f"{n:,}", "", "", f"{recall(got, exact):.3f}",
                                  f"{p50:.2f}", f"{p99:.2f}", "", "", "", "")  # fmt: skip
                if backend == "milvus-server":
                    index.drop()
                del index
        Console(width=160).print(table)


if __name__ == "__main__":
    main()
