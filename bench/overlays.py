"""Copies against look-alikes that share only an overlay: what geometry alone says, and with the pixel check.

Per set (the layouts of bench/copies.py): each positive photo edited the 10 ways of lookalike.copyedits and checked
against its original's thumbnail (true copies: how many geometry confirms), and the 3 overlay edits (two caption
edits, the screenshot frame) of the first 30 positives checked against each other (different photos sharing an
overlay: how many geometry calls copies). Both with and without `lookalike.search.copies.AGREE` (the pixels'
agreement), and the agreement's percentiles for the true copies, from which `AGREE` was chosen.

    python bench/overlays.py [--sets towhee,corel,dvd,grocery] [--photos 100]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import track
from rich.table import Table

from copies import layout  # bench/copies.py, beside this script
from lookalike.config import Settings
from lookalike.copyedits import EDITS, edited
from lookalike.imaging import thumbnail_jpeg
from lookalike.search import copies

OVERLAYS = ("crop + text + JPEG 50", "text overlay", "in a screenshot frame")


def stored(picture: Image.Image, s: Settings) -> copies.Features:
    data = thumbnail_jpeg(picture, s.thumbnail_size, s.thumbnail_quality)
    return copies.from_jpeg(data, picture.width, picture.height, copies.QUERY_FEATURES)


def verdict(query: copies.Query, candidate: copies.Features) -> copies.Verdict:
    """As a search judges one candidate: the photo, then (when not a copy) its mirror image."""
    found = copies.verify_many(query.features, {0: candidate})[0]
    if not found.copy:
        mirrored = copies.verify_many(query.mirror(), {0: candidate}, objects=False)[0]
        if mirrored.copy:
            return mirrored
    return found


def measure(name: str, photos: int, s: Settings) -> dict:
    out: dict = {"copies": {}, "overlay": {}, "agreement": []}
    agree = copies.AGREE
    with tempfile.TemporaryDirectory() as tmp:
        _, positives, _ = layout(name, Path(tmp), photos)
        pictures = [Image.open(p).convert("RGB") for p in positives]
        for check in (None, agree):
            copies.AGREE = check
            confirmed = 0
            for picture in track(pictures, description=f"{name}: copies, check {check}"):
                candidate = stored(picture, s)
                for edit in EDITS:
                    v = verdict(copies.Query(edited(picture, edit)), candidate)
                    confirmed += v.copy
                    if check is None and v.copy and v.agreement is not None:
                        out["agreement"].append(v.agreement)
            out["copies"][check] = (confirmed, len(pictures) * len(EDITS))
            called, pairs = 0, 0
            for edit in track(OVERLAYS, description=f"{name}: overlays, check {check}"):
                posted = [edited(p, edit) for p in pictures[:30]]
                candidates = [stored(p, s) for p in posted]
                for i, picture in enumerate(posted):
                    query = copies.Query(picture)
                    for j, candidate in enumerate(candidates):
                        if i != j:
                            pairs += 1
                            called += verdict(query, candidate).copy
            out["overlay"][check] = (called, pairs)
    copies.AGREE = agree
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="towhee,corel,dvd,grocery")
    parser.add_argument("--photos", type=int, default=100)
    args = parser.parse_args()
    s = Settings()
    table = Table(title=f"geometry alone and with the pixel check (AGREE {copies.AGREE})", title_justify="left")
    for col in ("set", "true copies confirmed: geometry", "with the check", "overlay-only pairs called copies: "
                "geometry", "with the check", "true copies' agreement 0.5 / 1 / 5 % / min"):  # fmt: skip
        table.add_column(col, justify="right")
    for name in args.sets.split(","):
        m = measure(name, args.photos, s)
        cells = [f"{a} / {b}" for a, b in (m["copies"][None], m["copies"][copies.AGREE], m["overlay"][None],
                                           m["overlay"][copies.AGREE])]  # fmt: skip
        pct = np.percentile(m["agreement"], [0.5, 1, 5]) if m["agreement"] else [np.nan] * 3
        low = min(m["agreement"]) if m["agreement"] else np.nan
        table.add_row(name, *cells, " / ".join(f"{v:.3f}" for v in [*pct, low]))
        Console(width=180).print(table)


if __name__ == "__main__":
    main()
