"""Instance search: the keypoint index's candidates, checked with local features, on every shared set.

Part 1, through the real `lookalike eval` (one library per set, indexed once with local features; each row only
changes search settings): the global search alone (`LOOKALIKE_COPY_CANDIDATES=0`), the copy check on the global
search's top 10 only (`LOOKALIKE_INSTANCE_CANDIDATES=0 LOOKALIKE_COPY_CANDIDATES=10`: what the check did before the
keypoint index), and the defaults (the global top 3 and the keypoint index's 10). Metric: precision@10, mAP@10
and top-1 for smvs_dvd_covers (4 relevant photos per query). queries/s is the search from a stored photo (Towhee:
decode + embed + search of a test photo).

Part 2, smvs_dvd_covers: where relevant photos are among the candidates. For each photo (leave-one-out), the
share of its 4 relevant photos among the global search's first N and among the keypoint index's N most-voted;
the keypoint index's build time, memory and search time per query.

    python bench/instance.py [--sets towhee,corel,grocery,dvd]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from lookalike.config import Settings
from lookalike.evaluate import evaluate
from lookalike.library import Library
from lookalike.search import copies
from lookalike.store.keypoints import KeypointIndex

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA = SHARED / "datasets"
SETS = {
    "towhee": "towhee_reverse_image_search",
    "corel": "corel1k_wang",
    "grocery": "grocery_packages",
    "dvd": "smvs_dvd_covers",
}
ROWS = [  # the defaults first: they index (with local features), the other rows reuse the library
    ("defaults: global top 3 + keypoint index 10", {}),
    ("copy check on the global top 10 only", {"instance_candidates": 0, "copy_candidates": 10}),
    ("global search alone (no local features)", {"copy_candidates": 0}),
]


def env_of(overrides: dict) -> str:
    return " ".join(f"LOOKALIKE_{k.upper()}={v}" for k, v in overrides.items()) + " lookalike eval"


def quality(sets: list[str], tmp: Path) -> Table:
    table = Table(title="lookalike eval on each shared set (P@10 / mAP@10 / top-1, queries/s)", title_justify="left")
    table.add_column("search")
    for name in sets:
        table.add_column(name, justify="right")
    table.add_column("command", overflow="fold")
    for label, overrides in ROWS:
        cells = []
        for name in sets:
            settings = Settings(home=tmp / name, **overrides)
            r = evaluate(DATA / SETS[name], settings)
            cells.append(f"{r['precision@10']:.4f} / {r['mAP@10']:.4f} / {r['top1']:.3f}, "
                         f"{r['queries_per_second']:.0f}/s")  # fmt: skip
        table.add_row(label, *cells, env_of(overrides))
    return table


def candidates(tmp: Path) -> Table:
    home = tmp / "dvd"
    lib = Library(Settings(home=next(home.glob("eval/*"))))
    ids = lib.catalog.ids().tolist()
    labels = {i: lib.catalog.get(i).label for i in ids}
    features = copies.stored(lib.catalog, ids)
    started = time.perf_counter()
    index = KeypointIndex(lib.catalog, None, "bench").open()
    built = time.perf_counter() - started
    table = Table(title=f"smvs_dvd_covers: relevant photos among the candidates (keypoint index of {len(index)} "
                        f"photos: built in {built:.1f} s, {index.nbytes() / len(index) / 1000:.1f} KB of memory "
                        f"per photo)", title_justify="left")  # fmt: skip
    for col in ("candidates", "global search", "keypoint index", "either", "keypoint search ms per query"):
        table.add_column(col, justify="right")
    for n in (3, 10, 20):
        found = {"global": [], "keypoints": [], "either": []}
        spent = 0.0
        for i in ids:
            glob = [h.id for h in lib.search_vector(lib.catalog.embedding(i), n, exclude=i)]
            started = time.perf_counter()
            voted = [j for j, _ in index.candidates(features[i].descriptors, n, exclude=i)]
            spent += time.perf_counter() - started
            for name, got in (("global", glob), ("keypoints", voted), ("either", set(glob) | set(voted))):
                found[name].append(sum(labels[j] == labels[i] for j in got) / 4)
        table.add_row(str(n), *[f"{np.mean(found[k]):.3f}" for k in ("global", "keypoints", "either")],
                      f"{spent / len(ids) * 1000:.1f}")  # fmt: skip
    lib.close()
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated: " + ", ".join(SETS))
    args = parser.parse_args()
    sets = [s for s in args.sets.split(",") if s]
    console = Console(width=220)
    with tempfile.TemporaryDirectory() as tmp:
        console.print(quality(sets, Path(tmp)))
        if "dvd" in sets:
            console.print(candidates(Path(tmp)))


if __name__ == "__main__":
    main()
