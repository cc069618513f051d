"""Instance search: the copy stage's candidates (the copy collection and the global search), judged by the copy
descriptor and geometry, on every shared set.

Part 1, through the real `lookalike eval` (one library per set, indexed once with copy descriptors; each row only
changes search settings): the defaults, the copy stage judging 20 candidates, and the global search alone
(`LOOKALIKE_COPY_CANDIDATES=0`). Metric: precision@10, mAP@10 and top-1 (read mAP@10 and top-1 for smvs_dvd_covers:
4 relevant photos per query). queries/s is the search from a stored photo.

Part 2, smvs_dvd_covers: where relevant photos are among the candidates. For each photo (leave-one-out), the share
of its 4 relevant photos among the global search's first N, the copy collection's N nearest, and either.

    python bench/instance.py [--sets towhee,corel,grocery,dvd]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from lookalike.config import Settings
from lookalike.evaluate import evaluate
from lookalike.library import Library
from lookalike.store.vectors import MISSING
from lookalike.tuning import tune_process

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA = SHARED / "datasets"
SETS = {
    "towhee": "towhee_reverse_image_search",
    "corel": "corel1k_wang",
    "grocery": "grocery_packages",
    "dvd": "smvs_dvd_covers",
}
ROWS = [  # the defaults first: they index (with copy descriptors), the other rows reuse the library
    ("defaults: copy collection 10 + global 3", {}),
    ("copy collection 20 + global 3", {"copy_candidates": 20}),
    ("global search alone (copy stage off)", {"copy_candidates": 0}),
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
    copy_vectors = lib.catalog.copy_vectors(ids)
    table = Table(title=f"smvs_dvd_covers: relevant photos among the candidates ({len(ids)} photos)",
                  title_justify="left")  # fmt: skip
    for col in ("candidates", "global search", "copy collection", "either"):
        table.add_column(col, justify="right")
    for n in (3, 10, 20):
        found: dict[str, list[float]] = {"global": [], "copies": [], "either": []}
        near, _ = lib.space.copies.search(copy_vectors.matrix, n + 1)
        for i, row in zip(copy_vectors.ids.tolist(), near, strict=True):
            glob = [h.id for h in lib.search_vector(lib.catalog.embedding(i), n, exclude=i)]
            nearest = [int(j) for j in row if j != MISSING and j != i][:n]
            for name, got in (("global", glob), ("copies", nearest), ("either", set(glob) | set(nearest))):
                found[name].append(sum(labels[j] == labels[i] for j in got) / 4)
        table.add_row(str(n), *[f"{np.mean(found[k]):.3f}" for k in ("global", "copies", "either")])
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
    tune_process(Settings())  # as the CLI and the service do (lookalike.tuning)
    main()
