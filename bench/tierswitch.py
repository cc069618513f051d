"""Search latency while the embedded index switches tier at 200k vectors, against idle.

The library's embedded index moves from exact search to HNSW at ``ann_threshold`` vectors and from HNSW
to IVF at ``ivf_threshold``. Here both thresholds are forced to 200k: the index is filled to one vector
below, a reader thread searches without pause, and a writer adds the vectors that cross the threshold
and then keeps adding a batch of 32 every 100 ms. Two modes:

- ``background`` (the library's way): the new tier is built beside the live one from a snapshot, the
  writes made meanwhile are replayed into it, and it is swapped in under a short write lock;
- ``inline`` (what the library did before): the switch runs inside the write that crosses the threshold,
  holding the index's write lock, so every search waits for it.

Vectors: the real MobileNetV2 embeddings of the shared Towhee photos plus synthetic ones drawn between
them, PCA-whitened to 256 dimensions (as bench/scale.py). Queries: the 100 real test photos.

    python bench/tierswitch.py                  # both switches, both modes, 200k vectors
    python bench/tierswitch.py --size 50000 --switches hnsw
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from lookalike.config import Settings
from lookalike.models.registry import load_embedder
from lookalike.search.whitening import Whitening
from lookalike.store.vectors import EmbeddedIndex

_spec = importlib.util.spec_from_file_location("scale", Path(__file__).with_name("scale.py"))
scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scale)


def vectors(size: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    embedder = load_embedder(Settings())
    real = scale.embed_folder(embedder, scale.TOWHEE / "train")
    queries = scale.embed_folder(embedder, scale.TOWHEE / "test")
    whitening = Whitening.fit([real], dim=dim)
    real, queries = whitening.apply(real), whitening.apply(queries)
    data = np.concatenate([real, *scale.synthetic(real, size - len(real))])
    return data.astype(np.float32), queries


def ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def run(data: np.ndarray, queries: np.ndarray, switch: str, mode: str, settings: Settings, idle_s: float) -> dict:
    n, dim = data.shape
    ids = np.arange(1, n + 1, dtype=np.int64)
    s = settings
    hnsw = {"m": s.hnsw_m, "ef_construction": s.hnsw_ef_construction, "ef_search": s.hnsw_ef_search}
    with tempfile.TemporaryDirectory() as tmp:
        if switch == "hnsw":  # exact -> HNSW at n
            index = EmbeddedIndex(Path(tmp), dim, threshold=n, hnsw=hnsw, background=mode == "background")
        else:  # HNSW -> IVF at n
            index = EmbeddedIndex(Path(tmp), dim, threshold=settings.ann_threshold, hnsw=hnsw, ivf_threshold=n,
                                  ivf_nprobe=settings.ivf_nprobe, background=mode == "background")  # fmt: skip
        fill = n - 1
        for start in range(0, fill, 50_000):
            stop = min(fill, start + 50_000)
            index.add(ids[start:stop], data[start:stop])
            index.wait()
        before = index.kind

        def searches(seconds: float | None, until: threading.Event | None = None) -> list[tuple[float, float]]:
            out, started, i = [], time.perf_counter(), 0
            while (seconds is not None and time.perf_counter() - started < seconds) or (
                until is not None and not until.is_set()
            ):
                q = queries[i % len(queries)][None]
                t = time.perf_counter()
                index.search(q, 10)
                out.append((t, time.perf_counter() - t))
                i += 1
            return out

        idle = [lat for _, lat in searches(idle_s)]
        done = threading.Event()
        during: list[tuple[float, float]] = []
        reader = threading.Thread(target=lambda: during.extend(searches(None, done)))
        reader.start()
        time.sleep(0.5)
        switch_started = time.perf_counter()
        extra = np.asarray(ids[fill:], dtype=np.int64)
        index.add(extra, data[fill:])  # crosses the threshold
        rng = np.random.default_rng(1)
        next_id = n + 1
        while index.switches == 0 or (index._builder is not None):
            batch = data[rng.integers(0, n, 32)]
            index.add(np.arange(next_id, next_id + 32), batch)  # writes go on during the switch
            next_id += 32
            time.sleep(0.1)
        switch_s = time.perf_counter() - switch_started
        time.sleep(0.5)
        done.set()
        reader.join()
        window = [lat for t, lat in during if switch_started <= t <= switch_started + switch_s]
        got, _ = index.search(queries[:5], 1)
        assert index.kind != before and len(index) == next_id - 1, (index.kind, len(index))
        return {
            "switch": f"{before} -> {index.kind}",
            "mode": mode,
            "switch_s": switch_s,
            "idle_p50": ms(idle, 50),
            "idle_p99": ms(idle, 99),
            "during_n": len(window),
            "during_p50": ms(window, 50),
            "during_p99": ms(window, 99),
            "during_max": max(window) * 1000 if window else float("nan"),
            "written_during": next_id - 1 - n,
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--switches", nargs="+", default=["hnsw", "ivf"], choices=["hnsw", "ivf"])
    p.add_argument("--modes", nargs="+", default=["background", "inline"], choices=["background", "inline"])
    p.add_argument("--idle-seconds", type=float, default=5.0)
    args = p.parse_args()
    console = Console()
    console.print(f"vectors: {args.size:,} x {args.dim} (Towhee embeddings + synthetic mixes)")
    data, queries = vectors(args.size, args.dim)
    settings = Settings()
    table = Table(title=f"search latency during a tier switch at {args.size:,} vectors (ms)", title_justify="left")
    for col in ("switch", "mode", "switch s", "idle p50", "idle p99", "searches during", "during p50",
                "during p99", "during max", "vectors written during"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("switch", "mode") else "right")
    for switch in args.switches:
        for mode in args.modes:
            r = run(data, queries, switch, mode, settings, args.idle_seconds)
            table.add_row(r["switch"], r["mode"], f"{r['switch_s']:.1f}", f"{r['idle_p50']:.2f}",
                          f"{r['idle_p99']:.2f}", str(r["during_n"]), f"{r['during_p50']:.2f}",
                          f"{r['during_p99']:.2f}", f"{r['during_max']:.0f}", str(r["written_during"]))  # fmt: skip
            console.print(f"done: {r['switch']} ({mode}) in {r['switch_s']:.1f} s")
    console.print(table)


if __name__ == "__main__":
    main()
