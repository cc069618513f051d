"""Each retrieval option against the raw model on every shared set, through the real `lookalike eval`.

One fresh library per row and set: `evaluate()` indexes the set (train/ for Towhee, the labelled folders
otherwise), learns what the row's settings learn, and queries (Towhee's test/ photos; leave-one-out
elsewhere). The metric is precision@10, mAP@10 for smvs_dvd_covers (4 relevant photos per query: its
precision@10 cannot pass 0.4). Columns: each set's change against the raw model, the mean and the worst
change, the Towhee indexing rate and the Towhee query p50 (decode + embed + search of one photo).
How the defaults were chosen: bench/defaults.py.

    python bench/quality.py [--model NAME] [--sets towhee,corel,grocery,dvd]
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
from lookalike.tuning import tune_process

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA = SHARED / "datasets"
SETS = {
    "towhee": ("towhee_reverse_image_search", "precision@10"),
    "corel": ("corel1k_wang", "precision@10"),
    "grocery": ("grocery_packages", "precision@10"),
    "dvd": ("smvs_dvd_covers", "mAP@10"),
}
RAW = {"whiten": False, "query_expansion": 0, "rerank_depth": 0}
ROWS = [
    ("raw model", RAW),
    ("whitening only", {"query_expansion": 0, "rerank_depth": 0}),
    ("query expansion only", {"whiten": False, "rerank_depth": 0}),
    ("k-reciprocal re-ranking only", {"whiten": False, "query_expansion": 0}),
    ("whitening + QE", {"rerank_depth": 0}),
    ("defaults (whitening + QE + re-ranking)", {}),
]


def env_of(overrides: dict) -> str:
    parts = [f"LOOKALIKE_{k.upper()}={int(v) if isinstance(v, bool) else v}" for k, v in overrides.items()
             if k != "model"]  # fmt: skip
    model = f" --model {overrides['model']}" if "model" in overrides else ""
    return " ".join(parts) + f" lookalike{model} eval"


def run(root: Path, overrides: dict, tmp: Path, timing: bool) -> dict:
    home = Path(tempfile.mkdtemp(dir=tmp))
    settings = Settings(home=home, **overrides)
    started = time.perf_counter()
    result = evaluate(root, settings, k=10)
    total = time.perf_counter() - started
    if timing:
        with Library(settings.model_copy(update={"home": Path(result["library"])})) as lib:
            queries = [i.source for i in walk_folder(root / "test")][:50]
            lat = []
            for q in queries:
                t = time.perf_counter()
                lib.search(q, k=10)
                lat.append(time.perf_counter() - t)
        querying = result["answered"] / max(result["queries_per_second"], 1e-9)
        result["index_rate"] = result["indexed"] / (total - querying)
        result["p50_ms"] = float(np.percentile(lat, 50) * 1000)
    shutil.rmtree(home, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="embedding model for every row (a model folder too)")
    parser.add_argument("--sets", default=",".join(SETS))
    args = parser.parse_args()
    names = args.sets.split(",")
    extra = {"model": args.model} if args.model else {}
    model = args.model or Settings().model
    table = Table(title=f"each option against the raw model, model {model} (P@10; mAP@10 for dvd)")
    for col in ("option", *names, "mean", "worst", "towhee index img/s", "towhee query p50 ms", "command"):
        table.add_column(col, justify="left" if col in ("option", "command") else "right")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base: dict[str, float] = {}
        for label, overrides in ROWS:
            cells, changes, speed = [], [], ("", "")
            for n in names:
                folder, metric = SETS[n]
                r = run(DATA / folder, {**overrides, **extra}, tmp, timing=n == "towhee")
                value = r[metric]
                if overrides is RAW:
                    base[n] = value
                    cells.append(f"{value:.3f}")
                else:
                    changes.append(value - base[n])
                    cells.append(f"{value:.3f} ({value - base[n]:+.3f})")
                if n == "towhee":
                    speed = (f"{r['index_rate']:.0f}", f"{r['p50_ms']:.1f}")
            mean = f"{np.mean(changes):+.3f}" if changes else ""
            worst = f"{min(changes):+.3f}" if changes else ""
            table.add_row(label, *cells, mean, worst, *speed, env_of({**overrides, **extra}))
            Console(width=250).print(f"done: {label}", style="dim")
    Console(width=250).print(table)


if __name__ == "__main__":
    tune_process(Settings())  # as the CLI and the service do (lookalike.tuning)
    main()
