"""The copy collection from 10k to 1M photos: does the first answer stay the original, and how fast is it?

The collection holds, as a library of that size would: the real copy descriptors of the 1,000 Towhee train photos,
of the other shared sets (Corel-1k, grocery packages, DVD covers: 3,276 more real photos) and synthetic ones drawn
between real ones (a blend of two real descriptors, 30-70 %, plus noise, normalised: a blend of nearly one photo
would be a copy of it), up to the size; an exact search alongside tells the HNSW / IVF tiers' own loss. Queries: the
10 edits of lookalike.copyedits of 100 Towhee train photos (positives: their original is in the collection) and of the
100 Towhee test photos (negatives: not in it). Per size: copy top-1 (the original first) and micro-average precision
of the first answers by cosine, the search p50, the build time; for the embedded index (exact to 20k, HNSW to 200k,
IVF above, as a library grows into them).

    python bench/copyscale.py [--sizes 10000 100000 1000000]
    unshare -n -- sh -c 'ip link set lo up && python bench/copyscale.py --backends --milvus-server'

``--milvus-server`` starts the PyPI `milvus` 2.3.5 standalone server (it binds every interface, so only inside a
private network namespace, as above; bench/scale.py does the same), ``--milvus-uri`` uses one already running.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import track
from rich.table import Table

from copies import average_precision  # bench/copies.py, beside this script
from lookalike.config import Settings
from lookalike.copyedits import EDITS, edited
from lookalike.imaging import decode
from lookalike.models import copy_descriptor
from lookalike.store.vectors import MISSING, EmbeddedIndex
from scale import milvus_server, wait_for_index  # bench/scale.py, beside this script

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA = SHARED / "datasets"
TOWHEE = DATA / "towhee_reverse_image_search"


def describe(model, data: bytes) -> np.ndarray:
    return model.describe(decode(data, 10**9, 256).image)


def jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def synthetic(real: np.ndarray, n: int, seed: int = 0, noise: float = 0.3):
    rng = np.random.default_rng(seed)
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        a, b = real[rng.integers(0, len(real), m)], real[rng.integers(0, len(real), m)]
        w = rng.uniform(0.3, 0.7, (m, 1)).astype(np.float32)  # a blend, never nearly one photo (that is a copy)
        v = (
            w * a
            + (1 - w) * b
            + noise * rng.standard_normal((m, real.shape[1])).astype(np.float32) / np.sqrt(real.shape[1])
        )
        yield v / np.linalg.norm(v, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--backends", nargs="*", default=["embedded"], help="embedded; the server is added below")
    parser.add_argument("--milvus-uri", help="also measure the Milvus server at this URI")
    parser.add_argument("--milvus-server", action="store_true", help="start a Milvus standalone server (netns only)")
    parser.add_argument("--milvus-index", default="HNSW", help="index type of the Milvus server collection")
    parser.add_argument("--nprobe-sweep", type=int, nargs="*", default=[], help="also report IVF (tier) at these")
    parser.add_argument("--ef-sweep", type=int, nargs="*", default=[], help="also report HNSW (tier) at these")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.milvus_server:
            args.milvus_uri = stack.enter_context(milvus_server())
        run(args)


def run(args) -> None:
    settings = Settings()
    model = copy_descriptor.load(settings.resolved_models_dir, settings.copy_side)
    towhee = sorted((TOWHEE / "train").glob("*/*"))
    sets = ("corel1k_wang", "grocery_packages", "smvs_dvd_covers")
    others = [p for s in sets for p in sorted((DATA / s).glob("*/*.jpg"))]
    real = np.stack([describe(model, p.read_bytes()) for p in track(towhee + others, description="real photos")])
    classes = sorted((TOWHEE / "train").iterdir())
    positives = [(sorted(c.iterdir())[0], towhee.index(sorted(c.iterdir())[0])) for c in classes]
    negatives = [(sorted((TOWHEE / "test" / c.name).iterdir())[0], -1) for c in classes]
    queries, truth = [], []
    for path, index in track(positives + negatives, description="edited queries"):
        picture = Image.open(path).convert("RGB")
        for edit in EDITS:
            queries.append(describe(model, jpeg(edited(picture, edit))))
            truth.append(index)
    queries_m = np.stack(queries)
    table = Table(title=f"copy collection: {len(queries)} edited queries (half positives)",
                  title_justify="left")  # fmt: skip
    for col in ("photos", "index", "build s", "copy top-1", "micro-AP", "same first as exact", "exact's top-1",
                "search p50 ms", "p95 ms"):  # fmt: skip
        table.add_column(col, justify="right")
    backends = list(args.backends) + (["milvus-server"] if args.milvus_uri else [])
    for size in args.sizes:
        for backend in backends:
            run_size(size, backend, args, settings, real, queries_m, truth, table)


def open_index(backend: str, size: int, args, s: Settings, tmp: str):
    if backend == "embedded":
        hnsw = {"m": s.hnsw_m, "ef_construction": s.hnsw_ef_construction, "ef_search": s.hnsw_ef_search}
        return EmbeddedIndex(Path(tmp) / str(size), copy_descriptor.DIM, s.ann_threshold, hnsw, "bench",
                             s.ivf_threshold, s.ivf_nprobe, s.ivf_storage)  # fmt: skip
    from lookalike.store.milvus import MilvusIndex

    return MilvusIndex(args.milvus_uri, f"copyscale_{size}", copy_descriptor.DIM, index_type=args.milvus_index,
                       nprobe=s.ivf_nprobe)  # fmt: skip


def run_size(size: int, backend: str, args, s: Settings, real: np.ndarray, queries_m: np.ndarray, truth: list[int],
             table: Table) -> None:  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        index = open_index(backend, size, args, s, tmp)
        started = time.perf_counter()
        index.add(np.arange(len(real)), real)
        start, best = len(real), (queries_m @ real.T).argmax(axis=1)
        best_cos = (queries_m @ real.T).max(axis=1)
        for chunk in synthetic(real, max(0, size - len(real))):
            index.add(np.arange(start, start + len(chunk)), chunk)
            cos = queries_m @ chunk.T  # exact search alongside, for the index tier's own loss
            better = cos.max(axis=1) > best_cos
            best[better], best_cos[better] = cos.argmax(axis=1)[better] + start, cos.max(axis=1)[better]
            start += len(chunk)
        if backend == "milvus-server":
            wait_for_index(index)  # sealed and indexed: search is brute force before
        else:
            index.wait()
        built = time.perf_counter() - started
        kind = f"milvus-server ({args.milvus_index})" if backend == "milvus-server" else index.kind
        npos = sum(t >= 0 for t in truth)
        exact_top1 = sum(int(b) == t for b, t in zip(best, truth, strict=True) if t >= 0) / npos
        row = measure(index, queries_m, truth, best)
        table.add_row(f"{size:,}", kind, f"{built:.0f}", *row[:3], f"{exact_top1:.3f}", *row[3:])
        inner = getattr(index, "inner", index)
        sweeps = []
        if backend == "milvus-server":
            knob = "ef_search" if args.milvus_index == "HNSW" else "nprobe"
            sweeps = [(knob, v, index) for v in (args.ef_sweep if knob == "ef_search" else args.nprobe_sweep)]
        elif inner.kind == "ivf":
            sweeps = [("nprobe", v, inner) for v in args.nprobe_sweep]
        for knob, value, target in sweeps:
            setattr(target, knob, value)
            row = measure(index, queries_m, truth, best)
            table.add_row("", f"  {knob}={value}", "", *row[:3], "", *row[3:])
        if inner.kind == "hnsw" and backend != "milvus-server":
            for value in args.ef_sweep:
                inner._index.set_ef(value)
                row = measure(index, queries_m, truth, best)
                table.add_row("", f"  ef_search={value}", "", *row[:3], "", *row[3:])
        Console(width=180).print(table)
        index.drop()


def measure(index, queries_m: np.ndarray, truth: list[int], best: np.ndarray) -> list[str]:
    """copy top-1, micro-AP, share of first answers equal to exact search's, p50 and p95 ms of one search."""
    latency, firsts, scores = [], [], []
    for q in queries_m:
        t = time.perf_counter()
        ids, cos = index.search(q[None], 1)
        latency.append(time.perf_counter() - t)
        firsts.append(int(ids[0, 0]) if ids[0, 0] != MISSING else -2)
        scores.append(float(cos[0, 0]))
    correct = [f == t and t >= 0 for f, t in zip(firsts, truth, strict=True)]
    npos = sum(t >= 0 for t in truth)
    return [f"{sum(correct) / npos:.3f}", f"{average_precision(scores, correct, npos):.3f}",
            f"{np.mean(np.asarray(firsts) == best):.3f}", f"{np.median(latency) * 1000:.2f}",
            f"{np.percentile(latency, 95) * 1000:.2f}"]  # fmt: skip


if __name__ == "__main__":
    main()
