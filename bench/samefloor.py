"""What the same-object target costs: `lookalike eval` with the copy stage's floor and depth varied, and how much
geometry each search then runs.

Geometry (ORB features of a candidate, found on its thumbnail or read from their file, matching, a homography) is
what finds another photo of a cover in clutter; the floor on the best cosine of the query's rows
(``verification.VIEW_FLOOR``) and the number of copy candidates (``LOOKALIKE_COPY_CANDIDATES``) decide how many
candidates it sees; once geometry runs, it also checks the candidates at ``verification.WITH_GEOMETRY_FLOOR``
("with geometry"). For each set and each (floor, with geometry, depth): P@10 / mAP@10 / top-1, the share of
searches that ran geometry, the candidates checked and the CPU geometry took per search; the "first" row is the
eval that builds the library, whose checks find every candidate's features on its thumbnail (later rows read most
from files). Towhee's test photos (other photos of ImageNet classes, not copies) stand for ordinary searches: what
they pay is what every search pays.

    python bench/samefloor.py [--sets dvd,towhee] [--floors 0.40,0.35,0.30,0.0] [--depths 10,20]
                              [--with-geometry none,0.30]
"""

from __future__ import annotations

import argparse
import itertools
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
        self.cpu = 0.0
        geometry, judged = verification._geometry, Searcher._judged

        def counted_geometry(query, hits, *rest):
            self.with_geometry += 1
            self.pairs += len(hits)
            started = time.thread_time()
            try:
                return geometry(query, hits, *rest)
            finally:
                self.cpu += time.thread_time() - started

        def counted_judged(searcher, *args, **kwargs):
            self.searches += 1
            return judged(searcher, *args, **kwargs)

        verification._geometry = counted_geometry
        Searcher._judged = counted_judged  # type: ignore[method-assign]

    def reset(self) -> None:
        self.searches = self.with_geometry = self.pairs = 0
        self.cpu = 0.0

    def row(self, short: str, floor: float, also: float | None, depth: int, r: dict, seconds: float) -> list[str]:
        n = max(self.searches, 1)
        return [short, f"{floor:.2f}", "-" if also is None or also >= floor else f"{also:.2f}", str(depth),
                f"{r['precision@10']:.4f}", f"{r['mAP@10']:.4f}", f"{r['top1']:.3f}",
                f"{self.with_geometry / n:.3f}", f"{self.pairs / n:.2f}", f"{self.cpu * 1000 / n:.1f}",
                f"{seconds:.0f}"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="dvd,towhee")
    parser.add_argument("--floors", default="0.40,0.35,0.30,0.0")
    parser.add_argument("--depths", default="10,20")
    parser.add_argument("--with-geometry", default="none,0.30",
                        help="verification.WITH_GEOMETRY_FLOOR values (none: only candidates at the floor)")
    args = parser.parse_args()
    os.environ.setdefault("LOOKALIKE_MODELS_DIR", str(SHARED / "models"))
    counted, console = Counted(), Console()
    alsos = [None if a == "none" else float(a) for a in args.with_geometry.split(",")]
    default_also = getattr(verification, "WITH_GEOMETRY_FLOOR", None)
    default_floor = verification.VIEW_FLOOR  # the defaults, for the first row of each set
    table = Table(title="the copy stage's floor and depth: quality and geometry per search")
    for column in ("set", "floor", "with geometry", "depth", "P@10", "mAP@10", "top-1", "searches with geometry",
                   "candidates checked / search", "geometry CPU ms / search", "s"):  # fmt: skip
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for short in args.sets.split(","):
            name = SETS[short]
            for depth in (int(d) for d in args.depths.split(",")):
                settings = Settings(home=Path(tmp) / name, copy_candidates=depth)
                tune_process(settings)
                verification.VIEW_FLOOR, verification.WITH_GEOMETRY_FLOOR = default_floor, default_also
                # builds the library, then searches it: every candidate's features are found on its thumbnail (and
                # stored, lookalike.search.feature_files); the rows below read most of them back
                counted.reset()
                started = time.perf_counter()
                r = evaluate(SHARED / "datasets" / name, settings)
                table.add_row(*counted.row(f"{short} (first)", default_floor, default_also, depth, r,
                                           time.perf_counter() - started))  # fmt: skip
                for floor, also in itertools.product((float(f) for f in args.floors.split(",")), alsos):
                    if also is not None and also >= floor and None in alsos:
                        continue  # the same as without
                    verification.VIEW_FLOOR, verification.WITH_GEOMETRY_FLOOR = floor, also
                    counted.reset()
                    started = time.perf_counter()
                    r = evaluate(SHARED / "datasets" / name, settings)
                    table.add_row(*counted.row(short, floor, also, depth, r, time.perf_counter() - started))
                    console.print(f"{short}: floor {floor:.2f}, depth {depth} done", style="dim")
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
