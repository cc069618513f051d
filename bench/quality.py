"""Ablation of the retrieval-quality options on the shared Towhee set, one fresh library per row.

Each row runs `lookalike eval` (index train/, query with test/) with one configuration and
reports precision@10, mAP@10, top-1, index bytes per photo, index throughput and query p50
latency (decode + embed + search, single query). A second table checks the default against the
raw model on the two halves of the classes (odd and even), so a gain is not a fit to one set.

    python bench/quality.py [--model NAME]

``--model`` runs the rows that do not name a model of their own with that model (a model folder too).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from lookalike.config import Settings
from lookalike.evaluate import evaluate
from lookalike.ingest.sources import walk_folder
from lookalike.library import Library

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TOWHEE = SHARED / "datasets" / "towhee_reverse_image_search"

RAW = {"whiten": False, "query_expansion": 0, "rerank_depth": 0}
ROWS = [
    ("raw model (no whitening, no QE, no re-ranking)", RAW),
    ("+ flip TTA", {"model": "mobilenet_v2_flip", **RAW}),
    ("+ GeM p=3 pooling", {"model": "mobilenet_v2_gem", **RAW}),
    ("+ fusion with mobilenet_v1 (0.8/0.2)", {"model": "mobilenet_v2+v1", **RAW}),
    ("+ PCA whitening (d=n/8, power 0.5)", {"query_expansion": 0, "rerank_depth": 0}),
    ("+ alpha-QE (n=2, alpha=1)", {"whiten": False, "rerank_depth": 0}),
    ("+ k-reciprocal re-ranking (top 50, k1=20, k2=6, lambda=0.5)", {"whiten": False, "query_expansion": 0}),
    ("whitening + QE", {"rerank_depth": 0}),
    ("whitening + QE + k-reciprocal (default)", {}),
    ("default + flip TTA", {"model": "mobilenet_v2_flip"}),
    ("default with QE n=5", {"query_expansion": 5}),
    ("default with re-ranking depth 100", {"rerank_depth": 100}),
]


def env_of(overrides: dict) -> str:
    parts = [f"LOOKALIKE_{k.upper()}={int(v) if isinstance(v, bool) else v}" for k, v in overrides.items()
             if k != "model"]  # fmt: skip
    model = f" --model {overrides['model']}" if "model" in overrides else ""
    return " ".join(parts) + f" lookalike{model} eval"


def run(root: Path, overrides: dict, tmp: Path) -> dict:
    home = Path(tempfile.mkdtemp(dir=tmp))
    settings = Settings(home=home, **overrides)
    started = time.perf_counter()
    result = evaluate(root, settings, k=10)
    total = time.perf_counter() - started
    lib_home = Path(result["library"])
    with Library(settings.model_copy(update={"home": lib_home})) as lib:
        index_bytes = lib.vectors.disk_bytes() / max(1, lib.catalog.count())
        queries = [i.source for i in walk_folder(root / "test")][:50]
        lat = []
        for q in queries:
            t = time.perf_counter()
            lib.search(q, k=10)
            lat.append(time.perf_counter() - t)
    result["index_seconds"] = total - result["answered"] / max(result["queries_per_second"], 1e-9)
    result["index_bytes_per_photo"] = index_bytes
    result["p50_ms"] = float(np.percentile(lat, 50) * 1000)
    shutil.rmtree(home, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="embedding model for every row that does not name its own")
    args = parser.parse_args()
    rows, raw, default = ROWS, RAW, {}
    if args.model:
        rows = [(name, {**o, "model": args.model}) for name, o in ROWS if "model" not in o]
        raw, default = {**RAW, "model": args.model}, {"model": args.model}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = args.model or Settings().model
        table = Table(title=f"retrieval options on the shared Towhee set (100 queries, 1,000 photos), model {model}")
        for col in ("configuration", "p@10", "mAP@10", "top-1", "index B/photo", "index img/s", "query p50 ms",
                    "command"):  # fmt: skip
            table.add_column(col, justify="left" if col in ("configuration", "command") else "right")
        for name, overrides in rows:
            r = run(TOWHEE, overrides, tmp)
            table.add_row(name, f"{r['precision@10']:.3f}", f"{r['mAP@10']:.3f}", f"{r['top1']:.2f}",
                          f"{r['index_bytes_per_photo']:.0f}", f"{r['indexed'] / r['index_seconds']:.0f}",
                          f"{r['p50_ms']:.1f}", env_of(overrides))  # fmt: skip
        Console(width=200).print(table)

        halves = Table(title="default vs raw model on each half of the classes (whitening learned per half)")
        for col in ("classes", "photos", "raw p@10", "default p@10", "raw mAP@10", "default mAP@10"):
            halves.add_column(col, justify="right")
        classes = sorted(p.name for p in (TOWHEE / "train").iterdir())
        for half in (0, 1):
            root = tmp / f"half{half}"
            for split in ("train", "test"):
                for c in classes[half::2]:
                    shutil.copytree(TOWHEE / split / c, root / split / c)
            r_raw = run(root, raw, tmp)
            r_default = run(root, default, tmp)
            halves.add_row(
                "even" if half == 0 else "odd",
                str(r_raw["indexed"]),
                f"{r_raw['precision@10']:.3f}",
                f"{r_default['precision@10']:.3f}",
                f"{r_raw['mAP@10']:.3f}",
                f"{r_default['mAP@10']:.3f}",
            )
        Console(width=200).print(halves)


if __name__ == "__main__":
    main()
