"""What the same-object target costs: `lookalike eval` with the copy stage's floor and depth varied, and how much
geometry each search then runs.

Geometry (ORB on a candidate's thumbnail, matching, a homography: ~7 ms of CPU a candidate) is what finds another
photo of a cover in clutter; the floor on the best cosine of the query's rows (``verification.VIEW_FLOOR``) and the
number of copy candidates (``LOOKALIKE_COPY_CANDIDATES``) decide how many candidates it sees. For each set and each
(floor, depth): P@10 / mAP@10 / top-1, the share of searches that ran geometry and the candidates checked per
search. Towhee's test photos (other photos of ImageNet classes, not copies) stand for ordinary searches: what they
pay is what every search pays.

    python bench/samefloor.py [--sets dvd,towhee] [--floors 0.40,0.35,0.30,0.0] [--depths 10,20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lookalike.config import Settings
from lookalike.evaluate import evaluate
from lookalike.search import verification
from lookalike.search.searcher import Searcher
from lookalike.tuning import tune_process

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SETS = {"dvd": "smvs_dvd_covers", "towhee": "towhee_reverse_image_search", "grocery": "grocery_packages",
        "corel": "corel1k_wang"}  # fmt: skip


class Counted:
    """Searches judged and the candidates geometry checked, counted around the library's own functions."""

    def __init__(self) -> None:
        self.searches = self.with_geometry = self.pairs = 0
        geometry, judged = verification._geometry, Searcher._judged

        def counted_geometry(query, hits, thumbnail):
            self.with_geometry += 1
            self.pairs += len(hits)
            return geometry(query, hits, thumbnail)

        def counted_judged(searcher, *args, **kwargs):
            self.searches += 1
            return judged(searcher, *args, **kwargs)

        verification._geometry = counted_geometry
        Searcher._judged = counted_judged  # type: ignore[method-assign]

    def reset(self) -> None:
        self.searches = self.with_geometry = self.pairs = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="dvd,towhee")
    parser.add_argument("--floors", default="0.40,0.35,0.30,0.0")
    parser.add_argument("--depths", default="10,20")
    args = parser.parse_args()
    os.environ.setdefault("LOOKALIKE_MODELS_DIR", str(SHARED / "models"))
    counted, console = Counted(), Console()
    table = Table(title="the copy stage's floor and depth: quality and geometry per search")
    for column in ("set", "floor", "depth", "P@10", "mAP@10", "top-1", "searches with geometry",
                   "candidates checked / search", "s"):  # fmt: skip
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for short in args.sets.split(","):
            name = SETS[short]
            for depth in (int(d) for d in args.depths.split(",")):
                settings = Settings(home=Path(tmp) / name, copy_candidates=depth)
                tune_process(settings)
                verification.VIEW_FLOOR = 0.40
                evaluate(SHARED / "datasets" / name, settings)  # builds the library once (its checks counted out)
                for floor in (float(f) for f in args.floors.split(",")):
                    verification.VIEW_FLOOR = floor
                    counted.reset()
                    started = time.perf_counter()
                    r = evaluate(SHARED / "datasets" / name, settings)
                    n = max(counted.searches, 1)
                    table.add_row(short, f"{floor:.2f}", str(depth), f"{r['precision@10']:.4f}", f"{r['mAP@10']:.4f}",
                                  f"{r['top1']:.3f}", f"{counted.with_geometry / n:.3f}", f"{counted.pairs / n:.2f}",
                                  f"{time.perf_counter() - started:.0f}")  # fmt: skip
                    console.print(f"{short}: floor {floor:.2f}, depth {depth} done", style="dim")
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
