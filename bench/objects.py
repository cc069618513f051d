"""Does indexing subjects help find a photo from a crop of one of its subjects?

Indexes the shared Towhee train photos with ``--objects``; then, for every photo
with a detected subject, crops its best subject (the exact box, no margin) and
searches with the crop, comparing against whole photos, subjects only, or both.
Reports how often the source photo is the top hit and its mean rank (in top 10).

    python bench/objects.py
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from lookalike.config import Settings
from lookalike.library import Library
from lookalike.tuning import tune_process

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TRAIN = SHARED / "datasets" / "towhee_reverse_image_search" / "train"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, Library(Settings(home=Path(tmp))) as lib:
        lib.index([str(TRAIN)], objects=True)
        queries = []
        records = lib.catalog.get_many(lib.catalog.ids())
        for image_id, rec in records.items():
            best = lib.catalog.objects(image_id)[:1]
            if not best:
                continue
            (x1, y1, x2, y2), w, h = best[0].box, rec.width, rec.height
            buf = io.BytesIO()
            src = rec.sources[0]
            Image.open(src).convert("RGB").crop((round(x1), round(y1), round(x2), round(y2))).save(buf, "JPEG")
            queries.append((image_id, buf.getvalue(), (x2 - x1) * (y2 - y1) / (w * h)))
        table = Table(title=f"crop of a photo's best subject as the query: {len(queries)} photos with subjects")
        for col in ("compared with", "source photo top-1", "found in top 10", "mean rank when found"):
            table.add_column(col, justify="left" if col == "compared with" else "right")
        for match in ("whole", "objects", "both"):
            ranks = []
            for image_id, data, _ in queries:
                ids = [h.id for h in lib.search(data, k=10, match=match).hits]
                ranks.append(ids.index(image_id) + 1 if image_id in ids else None)
            found = [r for r in ranks if r is not None]
            table.add_row(
                match,
                f"{np.mean([r == 1 for r in ranks]):.3f}",
                f"{len(found) / len(ranks):.3f}",
                f"{np.mean(found):.2f}",
            )
        Console().print(table)
        small = [q for q in queries if q[2] < 0.5]
        print(f"{len(small)} of these subjects cover less than half of their photo")


if __name__ == "__main__":
    tune_process(Settings())  # as the CLI and the service do (lookalike.tuning)
    main()
