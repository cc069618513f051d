"""Finding the same photo: edited copies of indexed photos, and edited copies of photos that are not indexed.

Every edit of lookalike.copyedits (10 kinds; ``--edits harder``: 16 more, where detection stops), on the shared
sets, each with hard negatives from its own domain:

- towhee: the library is the 1,000 Towhee train photos; positives are the first photo of each of the 100 classes,
  edited; negatives the 100 Towhee test photos (not indexed, same classes), edited;
- corel: the library is Corel-1k less 100 photos held out (every tenth); positives are 100 indexed photos (the one
  after each held-out one), edited; negatives the 100 held-out photos (same categories, often the same shoot),
  edited;
- grocery: the same layout on the grocery packages (held-out photos are often burst frames of one shelf);
- dvd: the library holds each of the 100 DVD covers' scan and two phone photos (Canon, Droid); positives are the
  scans, edited; negatives the covers' fourth phone photo (E63, not indexed), edited: a photo of an indexed cover
  is not a copy of its scan.

Four pipelines in one run, on one library:

- global: the default search with the copy stage off (LOOKALIKE_COPY_CANDIDATES=0);
- phash: a perceptual-hash baseline (imagehash.phash, nearest by Hamming distance over the library);
- descriptor: the copy descriptor alone (the copy collection's nearest photo, scored by its cosine);
- ours: the default search (copy collection and global candidates, judged by the descriptor and, where it cannot
  decide, by geometry).

Per edit: top-1 (the original ranked first). Overall: top-1, recall@10, and the micro-average precision of the
top-1 answers ranked by their score over positives and negatives (a negative's answer is always wrong); for ours
the copy verdict's precision and recall, and the search p50 against global's. Calibration lines: the copy cosine of
each positive to its original and of each negative to its nearest photo (percentiles): where the copy stage's
thresholds (lookalike.search.verification) come from.

    python bench/copies.py [--sets towhee,corel,grocery,dvd] [--per-edit 100] [--edits standard|harder|all]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import track
from rich.table import Table

from lookalike.config import Settings
from lookalike.copyedits import EDITS, HARDER_EDITS, edited
from lookalike.library import Library
from lookalike.store.vectors import MISSING
from lookalike.tuning import tune_process

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA = SHARED / "datasets"
PIPELINES = ("global", "phash", "descriptor", "ours")


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


def layout(name: str, tmp: Path, n: int) -> tuple[Path, list[Path], list[Path]]:
    """(library folder, positives' originals, negatives) of a set."""
    if name == "towhee":
        towhee = DATA / "towhee_reverse_image_search"
        classes = sorted(p.name for p in (towhee / "train").iterdir())[:n]
        return (towhee / "train", [sorted((towhee / "train" / c).iterdir())[0] for c in classes],
                [sorted((towhee / "test" / c).iterdir())[0] for c in classes])  # fmt: skip
    root = tmp / name
    if name in ("corel", "grocery"):
        photos = sorted((DATA / ("corel1k_wang" if name == "corel" else "grocery_packages")).glob("*/*.jpg"))
        held = set(photos[::10][:n])
        for p in photos:
            if p not in held:
                (root / p.parent.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(p, root / p.parent.name)
        return root, [photos[photos.index(h) + 1] for h in sorted(held)], sorted(held)
    covers = sorted(p for p in (DATA / "smvs_dvd_covers").iterdir() if p.is_dir())[:n]
    for c in covers:
        (root / c.name).mkdir(parents=True)
        for kind in ("Reference", "Canon", "Droid"):
            shutil.copy(c / f"{c.name}_{kind}.jpg", root / c.name)
    return root, [c / f"{c.name}_Reference.jpg" for c in covers], [c / f"{c.name}_E63.jpg" for c in covers]


@dataclass
class Tally:
    top1: dict[str, list[bool]] = field(default_factory=dict)  # per edit
    recall10: list[bool] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # of every query's first answer
    correct: list[bool] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    cosines: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))  # copies, outsiders' nearest
    reach: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))  # the same, best of any view

    def add(self, edit: str, positive: bool, answers: list[str], score: float, name: str, seconds: float) -> None:
        right = positive and answers[:1] == [name]
        self.scores.append(score)
        self.correct.append(right)
        self.latency.append(seconds)
        if positive:
            self.top1.setdefault(edit, []).append(right)
            self.recall10.append(name in answers)


def run_set(name: str, n: int, console: Console, edits: list[str]) -> None:
    import imagehash

    with tempfile.TemporaryDirectory() as tmp:
        root, originals, outsiders = layout(name, Path(tmp), n)
        settings = Settings(home=Path(tmp) / "lib")
        lib = Library(settings)
        lib.index([str(root)])
        plain = Library(settings.model_copy(update={"copy_candidates": 0}))
        sources = {i: lib.catalog.get(i).sources[0] for i in lib.catalog.ids().tolist()}
        by_id = {i: Path(src).name for i, src in sources.items()}
        ids = list(by_id)
        hashes = np.array([imagehash.phash(Image.open(sources[i])).hash.ravel() for i in ids])
        model, copies_index, centres = lib.copy_model, lib.space.copies, lib.space.parts
        tallies = {p: Tally() for p in PIPELINES}
        verdicts = {"tp": 0, "fp": 0, "fn": 0, "same": 0}
        queries = [(p, True) for p in originals] + [(p, False) for p in outsiders]
        for edit in edits:
            for path, positive in track(queries, description=f"{name}: {edit:32s}", transient=True, console=console):
                data = jpeg(edited(Image.open(path).convert("RGB"), edit))
                for pipeline, library in (("global", plain), ("ours", lib)):
                    started = time.perf_counter()
                    hits = library.search(data, k=10).hits
                    seconds = time.perf_counter() - started
                    tallies[pipeline].add(edit, positive, [by_id[h.id] for h in hits], hits[0].score, path.name,
                                          seconds)  # fmt: skip
                    if pipeline == "ours":
                        right = positive and by_id[hits[0].id] == path.name
                        verdicts["tp"] += hits[0].copy and right
                        verdicts["fp"] += hits[0].copy and not right
                        verdicts["fn"] += positive and not (hits[0].copy and right)
                        verdicts["same"] += not positive and hits[0].same_object
                picture = Image.open(io.BytesIO(data)).convert("RGB")
                started = time.perf_counter()
                vector = model.describe(picture)
                found, cos = copies_index.search(vector[None], 10)
                answers = [by_id[int(i)] for i in found[0] if i != MISSING]
                tallies["descriptor"].add(edit, positive, answers, float(cos[0, 0]), path.name,
                                          time.perf_counter() - started)  # fmt: skip
                own = [i for i, n in by_id.items() if n == path.name]
                # every row of the query against both collections: each photo's best cosine (its reach)
                reached = reach(model.describe_views(picture), (copies_index, centres))
                if positive and own:
                    tallies["descriptor"].cosines[0].append(float(copies_index.vectors(own[:1])[0] @ vector))
                    tallies["descriptor"].reach[0].append(reached.get(own[0], -1.0))
                elif not positive:
                    tallies["descriptor"].cosines[1].append(float(cos[0, 0]))
                    tallies["descriptor"].reach[1].append(max(reached.values()))
                distance = (hashes != imagehash.phash(picture).hash.ravel()).sum(axis=1)
                order = np.argsort(distance, kind="stable")[:10]
                tallies["phash"].add(edit, positive, [by_id[ids[i]] for i in order], -float(distance[order[0]]),
                                     path.name, 0.0)  # fmt: skip
        report(name, len(ids), len(originals), tallies, verdicts, console, edits)
        plain.close()
        lib.close()


def reach(rows: np.ndarray, indexes: tuple, k: int = 10) -> dict[int, float]:
    """Each photo's best cosine to any query row in any collection (what a search's candidates are ranked by and
    the copy stage's VIEW_FLOOR applies to), among each row's ``k`` nearest."""
    best: dict[int, float] = {}
    for index in indexes:
        if not len(index):
            continue
        ids, scores = index.search(rows, k)
        for i, c in zip(ids.ravel().tolist(), scores.ravel().tolist(), strict=True):
            if i != MISSING and c > best.get(i, -1.0):
                best[i] = c
    return best


def report(name: str, size: int, per_edit: int, tallies: dict[str, Tally], verdicts: dict, console: Console,
           edits: list[str]) -> None:  # fmt: skip
    table = Table(title=f"{name}: edited copies, {per_edit} positives and {per_edit} negatives per edit, library of "
                        f"{size}: top-1", title_justify="left")  # fmt: skip
    table.add_column("edit")
    for p in PIPELINES:
        table.add_column(p, justify="right")
    for edit in edits:
        table.add_row(edit, *[f"{np.mean(tallies[p].top1[edit]):.2f}" for p in PIPELINES])
    table.add_row("all edits: top-1", *[f"{np.mean([v for s in tallies[p].top1.values() for v in s]):.3f}"
                                        for p in PIPELINES])  # fmt: skip
    table.add_row("lowest edit", *[f"{min(np.mean(s) for s in tallies[p].top1.values()):.2f}" for p in PIPELINES])
    table.add_row("recall@10", *[f"{np.mean(tallies[p].recall10):.3f}" for p in PIPELINES])
    positives = len(tallies["ours"].recall10)
    ap = [average_precision(tallies[p].scores, tallies[p].correct, positives) for p in PIPELINES]
    table.add_row("micro-average precision", *[f"{v:.3f}" for v in ap])
    console.print(table)
    precision = verdicts["tp"] / max(1, verdicts["tp"] + verdicts["fp"])
    recall = verdicts["tp"] / max(1, verdicts["tp"] + verdicts["fn"])
    console.print(f"ours, the copy verdict on the first hit: precision {precision:.3f}, recall {recall:.3f} "
                  f"({verdicts['fp']} negatives or wrong photos called copies; {verdicts['same']} negatives' first "
                  f"hit called the same object)")  # fmt: skip
    copied, outsiders = (np.asarray(c) for c in tallies["descriptor"].cosines)
    low = " / ".join(f"{v:.2f}" for v in np.percentile(copied, [1, 5, 10, 50]))
    high = " / ".join(f"{v:.2f}" for v in np.percentile(outsiders, [50, 95, 99, 100]))
    console.print(f"calibration, copy cosine: copies to their original 1/5/10/50 %: {low}; outsiders to their "
                  f"nearest 50/95/99/100 %: {high}")  # fmt: skip
    copied, outsiders = (np.asarray(c) for c in tallies["descriptor"].reach)
    shares = ", ".join(f"{f:.2f}: {np.mean(outsiders >= f):.3f} / {np.mean(copied < f):.4f}"
                       for f in (0.30, 0.35, 0.40, 0.45, 0.50))  # fmt: skip
    console.print(f"calibration, the best cosine of any of the query's rows to a photo's whole or centre (VIEW_FLOOR "
                  f"applies to it), floor: outsiders above / copies below: {shares}")  # fmt: skip
    glob, ours = (np.median(tallies[p].latency) * 1000 for p in ("global", "ours"))
    console.print(f"search p50: global {glob:.1f} ms, ours {ours:.1f} ms ({ours / glob:.2f}x); descriptor alone "
                  f"(embed + search) {np.median(tallies['descriptor'].latency) * 1000:.1f} ms\n")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="towhee,corel,grocery,dvd", help="comma-separated set names (see above)")
    parser.add_argument("--per-edit", type=int, default=100, help="positives (and negatives) per edit")
    parser.add_argument("--edits", choices=("standard", "harder", "all"), default="standard",
                        help="the 10 standard edits (copyedits.EDITS), the 16 harder ones (HARDER_EDITS), or both")
    args = parser.parse_args()
    edits = {"standard": list(EDITS), "harder": list(HARDER_EDITS), "all": [*EDITS, *HARDER_EDITS]}[args.edits]
    console = Console(width=160)
    for name in args.sets.split(","):
        run_set(name.strip(), args.per_edit, console, edits)


if __name__ == "__main__":
    tune_process(Settings())  # as the CLI and the service do (lookalike.tuning)
    main()
