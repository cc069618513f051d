"""Instance search on smvs_dvd_covers: how far a homography check over deeper candidates would lift it.

An experiment, not the product's path: the default search verifies its top 10 hits with a similarity
transform (copies). Phone photos of a DVD cover differ from its scan by perspective, which a similarity
transform cannot fit; a homography can. For each photo of the set (leave-one-out, its stored keypoints as
the query), the top DEPTH hits of the default search without the copy check are re-ranked: hits whose
homography (RANSAC) has at least 15 inliers first, by inliers, then the rest in order.

    python bench/instance.py [--depth 10 50]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from lookalike.config import Settings
from lookalike.evaluate import average_precision_at_k
from lookalike.library import Library
from lookalike.search import copies

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DVD = SHARED / "datasets" / "smvs_dvd_covers"
MIN_INLIERS = 15


def homography_inliers(q: copies.Features, c: copies.Features) -> int:
    """The same matches as the copy check, fitted with a homography instead of a similarity transform."""
    good = copies.one_to_one(copies.matches(q.descriptors, c.descriptors))
    if len(good) < 8:
        return 0
    src, dst = q.points[[m[0] for m in good]], c.points[[m[1] for m in good]]
    h, mask = cv2.findHomography(src, dst, cv2.RANSAC, 4.0 * max(c.width, c.height) / copies.SIDE)
    if h is None or not 0.05 < abs(np.linalg.det(h[:2, :2])) < 20:
        return 0
    return int(mask.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, nargs="+", default=[10, 50])
    args = parser.parse_args()
    table = Table(title="smvs_dvd_covers, leave-one-out (500 queries, 4 relevant each)", title_justify="left")
    for col in ("re-ranking", "depth", "mAP@10", "top-1", "ms per query (re-ranking only)"):
        table.add_column(col, justify="left" if col == "re-ranking" else "right")
    with tempfile.TemporaryDirectory() as tmp:
        indexed = Library(Settings(home=Path(tmp)))  # stores each photo's keypoints
        indexed.index([str(DVD)])
        indexed.close()
        lib = Library(Settings(home=Path(tmp), copy_candidates=0))  # searches without the copy check
        ids = lib.catalog.ids().tolist()
        labels = {i: lib.catalog.get(i).label for i in ids}
        feats = copies.stored(lib.catalog, ids)
        count = Counter(labels.values())
        for depth in args.depth:
            rows = {"none (the default search, copy check off)": ([], []), "homography": ([], [])}
            spent = 0.0
            for i in ids:
                hits = lib.search(i, k=depth).hits
                started = time.perf_counter()
                scored = sorted(
                    ((-(n if (n := homography_inliers(feats[i], feats[h.id])) >= MIN_INLIERS else 0), r, h)
                     for r, h in enumerate(hits)),
                    key=lambda t: (t[0], t[1]),
                )  # fmt: skip
                spent += time.perf_counter() - started
                for name, order in (("none (the default search, copy check off)", hits),
                                    ("homography", [h for _, _, h in scored])):  # fmt: skip
                    relevant = [labels[h.id] == labels[i] for h in order][:10]
                    rows[name][0].append(average_precision_at_k(relevant, count[labels[i]] - 1, 10))
                    rows[name][1].append(relevant[0])
            for name, (aps, top1) in rows.items():
                ms = f"{spent / len(ids) * 1000:.0f}" if name == "homography" else ""
                table.add_row(name, str(depth), f"{np.mean(aps):.3f}", f"{np.mean(top1):.3f}", ms)
        lib.close()
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
