"""`lookalike duplicates` as a library grows: does its cost grow like the library (never quadratically), and does
it still find the same groups?

A real library is indexed with the defaults: the 1,000 Towhee train photos plus edited copies (lookalike.copyedits,
3 edits each) of 100 of them, so 300 known pairs of (original, copy). Then the catalog grows to each size with
filler photos: rows of the real photos with new hashes and paths whose copy descriptors are synthetic (the mean of
two real descriptors plus noise, so that their nearest photo lies at a copy cosine of about 0.2-0.45, as ordinary
photos' nearest do, bench/RESULTS.md "Calibration") and no thumbnail (so geometry gives up on them at once: the
real photos' row shows what geometry costs). The library is opened again, so its vector engine fills the copy
collections from the catalog as any process would. Per size: the time of the report (`near_duplicates`, what the
CLI and the API run), per photo, the known pairs found (recall) and the share of the pairs found that are known.

    python bench/dupscale.py [--sizes 10000 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import track
from rich.table import Table

from copyscale import TOWHEE  # bench/copyscale.py, beside this script
from lookalike.config import Settings
from lookalike.copyedits import EDITS, edited
from lookalike.library import Library
from lookalike.search.duplicates import near_duplicates
from lookalike.store.catalog import NewImage
from lookalike.tuning import tune_process

CHOSEN_EDITS = ("resized 30 % + JPEG 40", "mirrored", "crop + text + JPEG 50")


def make_copies(folder: Path) -> dict[str, str]:
    """Edited copies of the first photo of each Towhee class: {copy file name: its original's file name}."""
    names = [e for e in CHOSEN_EDITS if e in EDITS]
    truth = {}
    folder.mkdir(parents=True)
    for n, cls in enumerate(sorted((TOWHEE / "train").iterdir())):
        original = sorted(cls.iterdir())[0]
        picture = Image.open(original).convert("RGB")
        for e, edit in enumerate(names):
            name = f"copy-{n:03d}-{e}.jpg"
            edited(picture, edit).convert("RGB").save(folder / name, quality=90)
            truth[name] = original.name
    return truth


def known_pairs(lib: Library, truth: dict[str, str]) -> set[tuple[int, int]]:
    by_name = {}
    for image_id, rec in lib.catalog.get_many(lib.catalog.ids()).items():
        for source in rec.sources:
            by_name[Path(source).name] = image_id
    pairs = {tuple(sorted((by_name[c], by_name[o]))) for c, o in truth.items() if c in by_name and o in by_name}
    # copies of one original are copies of each other too
    by_original: dict[str, list[int]] = {}
    for c, o in truth.items():
        by_original.setdefault(o, []).append(by_name[c])
    for o, group in by_original.items():
        members = [*group, by_name[o]]
        pairs |= {tuple(sorted((a, b))) for a in members for b in members if a < b}
    return pairs


def fillers(real: np.ndarray, n: int, seed: int = 1):
    """Unit vectors near the library's photos but a copy of none (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        mid = (real[rng.integers(0, len(real), m)] + real[rng.integers(0, len(real), m)]) / 2
        sigma = rng.uniform(1.0, 3.0, (m, 1)).astype(np.float32)
        v = mid + sigma * rng.standard_normal((m, real.shape[1])).astype(np.float32) / np.sqrt(real.shape[1])
        yield (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def filler(lib: Library, n: int) -> None:
    """``n`` rows like the real ones with synthetic copy descriptors, written as the pipeline writes them."""
    records = lib.catalog.get_many(lib.catalog.ids())
    real = lib.catalog.copy_vectors(list(records))
    base = [(records[i], lib.catalog.embedding(i)) for i in real.ids.tolist()]
    written, first = 0, lib.catalog.count()  # numbered on from what the catalog holds: new hashes, new paths
    for chunk in fillers(real.matrix, n, seed=first):
        for start in range(0, len(chunk), 500):
            batch = []
            for j, vec in enumerate(chunk[start : start + 500]):
                rec, emb = base[(written + j) % len(base)]
                k = first + written + j
                batch.append(NewImage(f"{k:016x}" + rec.sha256[16:], f"/filler/{k // 1000:04d}/{k}.jpg", rec.label,
                                      rec.width, rec.height, rec.format, rec.bytes, rec.bytes, 1, emb,
                                      copy_vector=vec, part_vector=vec))  # fmt: skip
            lib.catalog.add_batch(batch)
            written += len(batch)


def measure(lib: Library, pairs: set[tuple[int, int]]) -> tuple[float, float, float, int]:
    started = time.perf_counter()
    groups = near_duplicates(lib.space.copies, lib.catalog, lib.images)
    took = time.perf_counter() - started
    found = {tuple(sorted((a, b))) for g in groups for a in g.ids for b in g.ids if a < b}
    recall = len(found & pairs) / max(1, len(pairs))
    purity = len(found & pairs) / max(1, len(found))
    return took, recall, purity, len(groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    table = Table(title="lookalike duplicates as the library grows (300 known copies of 100 photos)",
                  title_justify="left")  # fmt: skip
    for col in ("photos", "copy index", "report s", "ms per photo", "known pairs found", "pairs that are known",
                "groups"):  # fmt: skip
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        copies = Path(tmp) / "copies"
        truth = make_copies(copies)
        home = Path(tmp) / "home"
        with Library(Settings(home=home)) as lib:
            lib.index([str(TOWHEE / "train"), str(copies)])
            pairs = known_pairs(lib, truth)
        sizes = sorted(args.sizes)
        for size in [0, *sizes]:
            with Library(Settings(home=home)) as lib:
                have = lib.catalog.count()
                if size > have:
                    for _ in track([0], description=f"filler to {size:,}"):
                        filler(lib, size - have)
            with Library(Settings(home=home)) as lib:
                if hasattr(lib.space.copies, "wait"):
                    lib.space.copies.wait()  # the embedded index's tier switch runs in the background
                count = lib.catalog.count()
                took, recall, purity, groups = measure(lib, pairs)
                kind = getattr(lib.space.copies, "kind", "")
                table.add_row(f"{count:,}", kind, f"{took:.1f}", f"{took / count * 1000:.2f}", f"{recall:.3f}",
                              f"{purity:.3f}", str(groups))  # fmt: skip
                Console(width=160).print(table)


if __name__ == "__main__":
    tune_process(Settings())  # as the CLI and the service do (lookalike.tuning)
    main()
