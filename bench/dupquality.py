"""`lookalike duplicates` on a library with known copies: are the groups right, and what do wrong ones hold?

Per set (the layouts of bench/copies.py: Towhee's 1,000 train photos; Corel-1k's 900; grocery's; the DVD covers'
scans and two phone photos of each cover), the first ``--photos`` positives are edited the 10 ways of
lookalike.copyedits and indexed beside the library with the defaults; each original and its 10 copies are one
known group. The report is what the CLI and the API run (`near_duplicates`). Printed: the groups found, the share
of known pairs (original-copy and copy-copy) found in one group, the share of pairs found that are known, the
copies found beside their original per edit, and every group beyond a known one, marked by whether it holds photos
of two labels (the set's folders: a class, a product, a cover), and what `--remove` would remove (known copies of
the photo kept, or other photos): on the DVD covers a phone photo of a cover joined
to its scan is the same cover (the same object, not the same picture), phone photos of different covers laid on
the same printed page share only the page; on the grocery shelves frames a second apart of one product are nearly
the same picture, and sibling packages of one brand share most of their art.

    python bench/dupquality.py [--sets towhee,dvd] [--photos 30]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.table import Table

from copies import layout  # bench/copies.py, beside this script
from lookalike.config import Settings
from lookalike.copyedits import EDITS, edited
from lookalike.library import Library
from lookalike.search.duplicates import near_duplicates


def make_copies(originals: list[Path], folder: Path) -> dict[str, tuple[Path, str]]:
    """Every edit of each original: {copy file name: (its original, the edit)}."""
    folder.mkdir(parents=True)
    truth = {}
    for k, original in enumerate(originals):
        picture = Image.open(original).convert("RGB")
        for e, edit in enumerate(EDITS):
            name = f"copy-{k:03d}-{e:02d}.jpg"
            edited(picture, edit).convert("RGB").save(folder / name, quality=90)
            truth[name] = (original, edit)
    return truth


def measure(name: str, photos: int, console: Console) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, originals, _ = layout(name, Path(tmp), photos)
        originals = originals[:photos]
        folder = Path(tmp) / "copies"
        truth = make_copies(originals, folder)
        with Library(Settings(home=Path(tmp) / "home")) as lib:
            lib.index([str(root), str(folder)])
            sources = {i: rec.sources[0] for i, rec in lib.catalog.get_many(lib.catalog.ids()).items()}
            groups = near_duplicates(lib.space.copies, lib.catalog, lib.images)
    # each photo's known group: its original's name (an original, found in the library by its folder and name)
    wanted = {(o.parent.name, o.name): o.name for o in originals}
    known: dict[int, str] = {}
    for i, source in sources.items():
        path = Path(source)
        if path.parent == folder:
            known[i] = truth[path.name][0].name
        elif (path.parent.name, path.name) in wanted:
            known[i] = path.name
    members: dict[str, list[int]] = defaultdict(list)
    for i, key in known.items():
        members[key].append(i)
    true_pairs = {(a, b) for m in members.values() for a in m for b in m if a < b}
    found = {(a, b) for g in groups for a in g.ids for b in g.ids if a < b}
    group_of = {i: n for n, g in enumerate(groups) for i in g.ids}
    by_edit, per_edit = Counter(), Counter()
    for i, source in sources.items():
        if Path(source).parent == folder:
            original, edit = truth[Path(source).name]
            per_edit[edit] += 1
            first = next(j for j in members[original.name] if Path(sources[j]).parent != folder)
            by_edit[edit] += i in group_of and group_of.get(first) == group_of[i]
    # what a photo shows: its set's label (the folder: a class, a product, a cover), a copy its original's
    label = {i: (truth[Path(s).name][0] if Path(s).parent == folder else Path(s)).parent.name
             for i, s in sources.items()}  # fmt: skip
    mixed = [g for g in groups if len({known.get(i, f"outside {i}") for i in g.ids}) > 1]
    subjects = [g for g in mixed if len({label[i] for i in g.ids}) > 1]
    table = Table(title=f"{name}: {len(sources):,} photos, {len(members)} known groups of 11", title_justify="left")
    for col in ("groups", "known pairs found", "pairs found that are known", "groups beyond a known one",
                "of them, of two labels", "photos in those"):  # fmt: skip
        table.add_column(col, justify="right")
    table.add_row(str(len(groups)), f"{len(found & true_pairs) / max(1, len(true_pairs)):.3f}",
                  f"{len(found & true_pairs) / max(1, len(found)):.3f}", str(len(mixed)), str(len(subjects)),
                  str(sum(len(g.ids) for g in subjects)))  # fmt: skip
    console.print(table)
    # what `duplicates --remove` would remove: a known copy of the photo kept is right; anything else (another shot
    # of a scene, a frame of a shelf a second later, an outside photo) is a photo lost
    removed = [(i, g.ids[0]) for g in groups for i in g.remove]
    right = sum(1 for i, kept in removed if i in known and known.get(kept) == known[i])
    console.print(f"proposed for removal: {len(removed)}, known copies of the photo kept {right}, other photos "
                  f"{len(removed) - right}; copies proposed of all known copies: "
                  f"{right / max(1, len(members) * len(EDITS)):.3f}")  # fmt: skip
    console.print("copies grouped with their original: " + ", ".join(f"{e} {by_edit[e]}/{per_edit[e]}" for e in EDITS))
    for g in mixed:
        parts = Counter(known.get(i, "/".join(Path(sources[i]).parts[-2:])) for i in g.ids)
        kind = "two labels" if g in subjects else "one label"
        console.print(f"  {kind}: " + ", ".join(f"{k} x{n}" if n > 1 else k for k, n in parts.most_common()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="towhee,dvd")
    parser.add_argument("--photos", type=int, default=30)
    args = parser.parse_args()
    console = Console()
    for name in args.sets.split(","):
        measure(name, args.photos, console)


if __name__ == "__main__":
    main()
