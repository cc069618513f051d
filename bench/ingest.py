"""Ingest throughput on the shared Towhee photos, measured in one run.

Rows: the model-only floor (the same embedder on pre-decoded tensors), a naive
baseline (one photo at a time: PIL open, resize, model, SQLite insert), and our
``Library.index`` (hashing, decoding, thumbnails, catalog commits and the vector
index included), with and without the copy stage (each photo's copy descriptor, and the near-duplicate check it
allows). Prints a table; the ratio column is images/s over the floor.

    python bench/ingest.py [--limit N] [--repeat R] [--model NAME] [--no-objects]

``--model`` measures any model `lookalike models` lists (a model folder too: LOOKALIKE_MODELS_DIR).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from lookalike.config import Settings
from lookalike.imaging import decode
from lookalike.ingest.sources import walk_folder
from lookalike.library import Library
from lookalike.models.registry import load_detector, load_embedder
from lookalike.tuning import tune_process

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TRAIN = SHARED / "datasets" / "towhee_reverse_image_search" / "train"


def floor(embedder, tensors: np.ndarray, threads: int) -> float:
    """Inference only, on pre-decoded tensors, from ``threads`` threads (each takes an interpreter)."""
    chunks = [tensors[i : i + 32] for i in range(0, len(tensors), 32)]
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(embedder.embed, chunks))
    return time.perf_counter() - started


def naive(embedder, files: list[str], home: Path) -> float:
    db = sqlite3.connect(home / "naive.sqlite")
    db.execute("CREATE TABLE images(path TEXT, embedding BLOB)")
    started = time.perf_counter()
    for f in files:
        im = Image.open(f).convert("RGB").resize((embedder.input_size, embedder.input_size))
        vec = embedder.embed(np.asarray(im)[None])[0]
        db.execute("INSERT INTO images VALUES(?, ?)", (f, vec.tobytes()))
        db.commit()
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def detector_only(detector, images: list) -> float:
    started = time.perf_counter()
    for im in images:
        detector.detect(im)
    return time.perf_counter() - started


def ours(settings: Settings, embedder, root: Path, home: Path, objects: bool = False) -> float:
    started = time.perf_counter()
    with Library(settings.model_copy(update={"home": home}), embedder=embedder) as lib:
        report = lib.index([str(root)], objects=objects)
    assert not report.rejected, report.rejected[:3]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=1000, help="photos to use (default: all 1000)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per row; the best is kept")
    parser.add_argument("--model", help="embedding model (default: LOOKALIKE_MODEL or the built-in default)")
    parser.add_argument("--no-objects", action="store_true", help="skip the subject-detection rows")
    args = parser.parse_args()
    settings = Settings(**({"model": args.model} if args.model else {}))
    embedder = load_embedder(settings)
    files = [i.source for i in walk_folder(TRAIN)][: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        for f in files:  # a folder holding exactly the chosen photos
            dst = root / Path(f).parent.name / Path(f).name
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f, dst)
        decoded = [decode(Path(f).read_bytes(), 10**9, 256).image for f in files]
        tensors = np.stack([embedder.prepare(im) for im in decoded])
        detector = load_detector(settings)
        workers = settings.resolved_workers
        rows: dict[str, float] = {}
        for r in range(args.repeat):
            runs = [
                ("model-only floor, 1 thread", lambda: floor(embedder, tensors, 1)),
                (f"model-only floor, {workers} threads", lambda: floor(embedder, tensors, workers)),
                ("naive baseline", lambda r=r: naive(embedder, files, Path(tempfile.mkdtemp(dir=tmp)))),
                ("lookalike index", lambda r=r: ours(settings, embedder, root, Path(tmp) / f"home{r}")),
                ("lookalike index, copy stage off (LOOKALIKE_COPY_CANDIDATES=0)", lambda r=r: ours(
                    settings.model_copy(update={"copy_candidates": 0}), embedder, root, Path(tmp) / f"plain{r}")),
            ]
            if not args.no_objects:
                runs += [
                    ("detector only, 1 thread (NanoDet-m, pre-decoded)", lambda: detector_only(detector, decoded)),
                    (
                        "lookalike index --objects",
                        lambda r=r: ours(settings, embedder, root, Path(tmp) / f"objects{r}", objects=True),
                    ),
                ]
            for name, fn in runs:
                rows[name] = min(rows.get(name, float("inf")), fn())
    n = len(files)
    title = f"ingest, {embedder.name} ({embedder.dim}-d), {n} Towhee photos, {os.cpu_count()} cores"
    title += f", best of {args.repeat}"
    table = Table(title=title)
    for col in ("pipeline", "seconds", "images/s", "x best floor"):
        table.add_column(col, justify="right" if col != "pipeline" else "left")
    base = n / min(rows[k] for k in rows if k.startswith("model-only"))  # the faster embedding floor
    for name, secs in rows.items():
        table.add_row(name, f"{secs:.2f}", f"{n / secs:.0f}", f"{n / secs / base:.2f}")
    Console().print(table)
    print(
        f"settings: threads={settings.threads or 'auto'} workers={settings.resolved_workers} "
        f"batch_size={settings.batch_size}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    tune_process(Settings())  # as the CLI and the service do (lookalike.tuning)
    main()
