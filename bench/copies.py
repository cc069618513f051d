"""Finding the same photo: edited copies of indexed photos, and copies of photos that are not indexed.

The library: the 1,000 Towhee train photos, default settings. Positives: the first photo of each of the 100
classes, under each edit of lookalike.copyedits (10 kinds). Negatives: the 100 Towhee test photos (not in
the library) under the same edits. Three pipelines in one run:

- global: the default search with the copy check off (LOOKALIKE_COPY_CANDIDATES=0);
- phash: a perceptual-hash baseline (imagehash.phash, nearest by Hamming distance over the library);
- ours: the default search (global search, then the top candidates checked with local features).

Per edit: top-1 (the original ranked first) and recall@10. Overall: micro-average precision of the top-1
answers ranked by their score over positives and negatives (a negative's top-1 is always wrong), and for
ours the copy verdict's precision and recall. Query latency p50 of the whole search (decode, embed, search,
check) for global and ours.

With ``--set dvd`` (the shared smvs_dvd_covers), the library holds each of the 100 covers' scan and two phone
photos (Canon, Droid); positives are the scans, edited; negatives are the fourth phone photo (E63), edited: not in
the library, but a photo of a cover that is. A search must not call another photo of the same object a copy, nor
score it like one.

    python bench/copies.py [--classes 100] [--set towhee|dvd]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import track
from rich.table import Table

from lookalike.config import Settings
from lookalike.copyedits import EDITS, edited
from lookalike.library import Library

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TOWHEE = SHARED / "datasets" / "towhee_reverse_image_search"
DVD = SHARED / "datasets" / "smvs_dvd_covers"


def jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def average_precision(scores: list[float], correct: list[bool], positives: int) -> float:
    """Micro-average precision: answers ranked by score, precision at each correct one, over all positives."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits, total = 0, 0.0
    for rank, i in enumerate(order, 1):
        if correct[i]:
            hits += 1
            total += hits / rank
    return total / max(positives, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=100, help="positives and negatives per edit")
    parser.add_argument("--set", choices=("towhee", "dvd"), default="towhee", help="the photos (see above)")
    args = parser.parse_args()
    import imagehash

    with tempfile.TemporaryDirectory() as tmp:
        if args.set == "towhee":
            classes = sorted(p.name for p in (TOWHEE / "train").iterdir())[: args.classes]
            originals = [sorted((TOWHEE / "train" / c).iterdir())[0] for c in classes]
            outsiders = [sorted((TOWHEE / "test" / c).iterdir())[0] for c in classes]
            root = TOWHEE / "train"
        else:
            covers = sorted(p for p in DVD.iterdir() if p.is_dir())[: args.classes]
            originals = [c / f"{c.name}_Reference.jpg" for c in covers]
            outsiders = [c / f"{c.name}_E63.jpg" for c in covers]
            root = Path(tmp) / "covers"
            for c in covers:
                (root / c.name).mkdir(parents=True)
                for kind in ("Reference", "Canon", "Droid"):
                    shutil.copy(c / f"{c.name}_{kind}.jpg", root / c.name)
        settings = Settings(home=Path(tmp) / "lib")
        lib = Library(settings)
        lib.index([str(root)])
        plain = Library(settings.model_copy(update={"copy_candidates": 0}))
        sources = {i: lib.catalog.get(i).sources[0] for i in lib.catalog.ids().tolist()}
        by_id = {i: Path(src).name for i, src in sources.items()}
        names, ids = list(by_id.values()), list(by_id)
        hashes = np.array([imagehash.phash(Image.open(sources[i])).hash.ravel() for i in ids])
        rows: dict[str, dict[str, list]] = {}
        answers: dict[str, tuple[list, list]] = {k: ([], []) for k in ("global", "phash", "ours")}
        verdicts = {"tp": 0, "fp": 0, "fn": 0, "same": 0}
        latency: dict[str, list[float]] = {"global": [], "ours": []}
        for edit in EDITS:
            stats = rows.setdefault(edit, {k: [] for k in ("global1", "global10", "phash1", "phash10", "ours1",
                                                            "ours10")})  # fmt: skip
            queries = [(p, True) for p in originals] + [(p, False) for p in outsiders]
            for path, positive in track(queries, description=f"{edit:32s}", transient=True):
                data = jpeg(edited(Image.open(path).convert("RGB"), edit))
                for name, library in (("global", plain), ("ours", lib)):
                    started = time.perf_counter()
                    hits = library.search(data, k=10).hits
                    latency[name].append(time.perf_counter() - started)
                    found = [by_id.get(h.id) for h in hits]
                    right = positive and found[:1] == [path.name]
                    answers[name][0].append(hits[0].score)
                    answers[name][1].append(right)
                    if positive:
                        stats[f"{name}1"].append(right)
                        stats[f"{name}10"].append(path.name in found)
                    if name == "ours":
                        called = hits[0].copy
                        verdicts["tp"] += called and right
                        verdicts["fp"] += called and not right
                        verdicts["fn"] += positive and not (called and right)
                        verdicts["same"] += not positive and hits[0].same_object
                h = imagehash.phash(Image.open(io.BytesIO(data))).hash.ravel()
                distance = (hashes != h).sum(axis=1)
                order = np.argsort(distance, kind="stable")[:10]
                nearest = [names[i] for i in order]
                right = positive and nearest[0] == path.name
                answers["phash"][0].append(-float(distance[order[0]]))
                answers["phash"][1].append(right)
                if positive:
                    stats["phash1"].append(right)
                    stats["phash10"].append(path.name in nearest)
        table = Table(title=f"edited copies: {len(originals)} photos per edit in a library of {len(ids)}, "
                            f"{len(outsiders)} outsiders per edit as negatives", title_justify="left")  # fmt: skip
        for col in ("edit", "global top-1", "global recall@10", "phash top-1", "phash recall@10", "ours top-1",
                    "ours recall@10"):  # fmt: skip
            table.add_column(col, justify="left" if col == "edit" else "right")
        for edit, s in rows.items():
            table.add_row(edit, *[f"{np.mean(s[k]):.2f}" for k in ("global1", "global10", "phash1", "phash10",
                                                                    "ours1", "ours10")])  # fmt: skip
        overall = {k: np.mean([v for s in rows.values() for v in s[k]]) for k in next(iter(rows.values()))}
        table.add_row("all edits", *[f"{overall[k]:.3f}" for k in ("global1", "global10", "phash1", "phash10",
                                                                   "ours1", "ours10")])  # fmt: skip
        positives = sum(len(s["ours1"]) for s in rows.values())
        ap = {k: average_precision(*answers[k], positives) for k in answers}
        table.add_row("micro-average precision of top-1", f"{ap['global']:.3f}", "", f"{ap['phash']:.3f}", "",
                      f"{ap['ours']:.3f}", "")  # fmt: skip
        Console(width=200).print(table)
        precision = verdicts["tp"] / max(1, verdicts["tp"] + verdicts["fp"])
        recall = verdicts["tp"] / max(1, verdicts["tp"] + verdicts["fn"])
        print(f"ours, the copy verdict on the first hit: precision {precision:.3f}, recall {recall:.3f} "
              f"({verdicts['fp']} negatives or wrong photos called copies; {verdicts['same']} negatives' first hit "
              f"called the same object)")  # fmt: skip
        for name, values in latency.items():
            p50, p95 = np.median(values) * 1000, np.percentile(values, 95) * 1000
            print(f"search p50 {name}: {p50:.1f} ms, p95 {p95:.1f} ms")
        print(f"ours / global p50: {np.median(latency['ours']) / np.median(latency['global']):.2f}x")
        features = lib.catalog.features(ids)
        print(f"stored local features: {np.mean([len(v) for v in features.values()]):.0f} bytes per photo")
        plain.close()
        lib.close()


if __name__ == "__main__":
    main()
