"""A shop's product CSV made from the shared grocery photos: each photo with its product's record (title, brand,
category, a price assigned here, a link, tags), the way a shop exports its catalogue."""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

from tests.conftest import SHARED

GROCERY = SHARED / "datasets" / "grocery_packages"
HEADER = ["id", "path", "label", "title", "brand", "category", "price", "url", "organic", "tags"]


def price(sku: str) -> float:
    """A fixed price per product, 10.00 to 34.50."""
    return 10 + zlib.crc32(sku.encode()) % 50 / 2


def product_rows(skus: int, per_sku: int) -> list[dict[str, str]]:
    """The first ``per_sku`` photos of the first ``skus`` products, as CSV rows (paths absolute)."""
    with open(GROCERY / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    chosen = sorted({r["sku"] for r in rows})[:skus]
    out: list[dict[str, str]] = []
    for sku in chosen:
        for n, r in enumerate([r for r in rows if r["sku"] == sku][:per_sku]):
            out.append({"id": str(len(out) + 1), "path": str(GROCERY / r["path"]), "label": sku,
                        "title": sku.replace("-", " "), "brand": sku.split("-")[0], "category": r["coarse_class"],
                        "price": f"{price(sku):.2f}", "url": f"https://shop.example/p/{sku}",
                        "organic": "true" if "Ecological" in sku else "false",
                        "tags": "|".join(["dairy" if "Juice" not in sku else "juice", f"shelf{n % 3}"])})  # fmt: skip
    return out


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return path
