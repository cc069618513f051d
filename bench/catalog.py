"""The catalog on SQLite and PostgreSQL: bytes per photo, and what SQLAlchemy Core costs over the raw drivers.

1. Bytes per photo: the 1,000 shared Towhee photos are indexed for real (one run, SQLite), then their
   catalog rows are copied ``--copies`` times with new hashes and paths (same embeddings, same folder
   layout) into each database, so fixed costs are amortised as in a large library. Measured per table
   with its indexes (SQLite ``dbstat``, PostgreSQL ``pg_total_relation_size``) after the change feed is
   pruned, next to the layout before schema versions (float32 embedding, hex sha256, whole-path sources)
   on SQLite.
2. Per-call cost of the operations every search and every poll makes (the records of 10 hits; the change
   feed when nothing changed), through the catalog (SQLAlchemy Core) and through the raw driver.

PostgreSQL: a throwaway server started from Debian's package in a temporary folder (tests/pgserver.py),
or ``--database-url`` for one of yours (an empty database).

    python bench/catalog.py
    python bench/catalog.py --copies 100 --calls 2000
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from lookalike.config import Settings
from lookalike.library import Library
from lookalike.store.catalog import Catalog, NewImage, codec
from lookalike.tuning import tune_process

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
TOWHEE = SHARED / "datasets" / "towhee_reverse_image_search" / "train"
PER_PHOTO = ("images", "copy_vectors", "dirs", "sources")

LEGACY = """
CREATE TABLE images (id INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL UNIQUE, label TEXT,
    width INTEGER NOT NULL, height INTEGER NOT NULL, format TEXT NOT NULL, bytes INTEGER NOT NULL,
    added_at REAL NOT NULL, has_original INTEGER NOT NULL DEFAULT 0, embedding BLOB NOT NULL);
CREATE INDEX images_label ON images(label);
CREATE TABLE sources (source TEXT PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    label TEXT, size INTEGER, mtime_ns INTEGER, added_at REAL NOT NULL);
CREATE INDEX sources_image ON sources(image_id);
"""


def real_rows(tmp: Path) -> list[tuple[NewImage, np.ndarray]]:
    """The Towhee photos as the pipeline writes them (embedding, copy descriptors): (row, embedding)."""
    with Library(Settings(home=tmp / "real")) as lib:
        lib.index([str(TOWHEE)])
        records = lib.catalog.get_many(lib.catalog.ids())
        copy_vectors = lib.catalog.copy_vectors(list(records))
        copy_of = dict(zip(copy_vectors.ids.tolist(), copy_vectors.matrix, strict=True))
        part_vectors = lib.catalog.copy_vectors(list(records), parts=True)
        part_of = dict(zip(part_vectors.ids.tolist(), part_vectors.matrix, strict=True))
        rows = []
        for image_id, rec in records.items():
            vec = lib.catalog.embedding(image_id)
            src = rec.sources[0]
            rows.append((NewImage(rec.sha256, src, rec.label, rec.width, rec.height, rec.format, rec.bytes,
                                  rec.bytes, 1, vec, copy_vector=copy_of.get(image_id),
                                  part_vector=part_of.get(image_id)), vec))  # fmt: skip
    return rows


def copies(rows: list, n: int):
    """``n`` copies of the real rows with new hashes and paths, in batches of 500."""
    batch = []
    for c in range(n):
        for i, (row, vec) in enumerate(rows):
            sha = f"{c:08x}{i:08x}" + row.sha256[16:]
            source = row.source.replace("/train/", f"/train-{c:04d}/")
            batch.append(NewImage(sha, source, row.label, row.width, row.height, row.format, row.bytes, row.size,
                                  row.mtime_ns, vec, copy_vector=row.copy_vector,
                                  part_vector=row.part_vector))  # fmt: skip
            if len(batch) == 500:
                yield batch
                batch = []
    if batch:
        yield batch


def fill(catalog: Catalog, rows: list, n: int, progress: Progress, name: str) -> None:
    task = progress.add_task(f"filling {name}", total=n * len(rows))
    for batch in copies(rows, n):
        catalog.add_batch(batch)
        progress.advance(task, len(batch))
    catalog.prune_changes(catalog.last_seq() + 1, older_than=0)  # the feed is transient: kept an hour


def legacy_bytes(rows: list, n: int, path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    db.executescript(LEGACY)
    now = time.time()
    for batch in copies(rows, n):
        for row in batch:
            cur = db.execute("INSERT INTO images(sha256, label, width, height, format, bytes, added_at, embedding) "
                             "VALUES (?,?,?,?,?,?,?,?)", (row.sha256, row.label, row.width, row.height, row.format,
                             row.bytes, now, np.asarray(row.embedding, np.float32).tobytes()))  # fmt: skip
            db.execute("INSERT INTO sources VALUES (?,?,?,?,?,?)", (row.source, cur.lastrowid, row.label, row.size,
                                                                    row.mtime_ns, now))  # fmt: skip
        db.commit()
    out = {}
    for table in ("images", "sources"):
        out[table] = db.execute(
            "SELECT SUM(pgsize) FROM dbstat WHERE name = ? OR name IN (SELECT name FROM "
            "sqlite_master WHERE tbl_name = ? AND type = 'index')",
            (table, table),
        ).fetchone()[0]
    db.close()
    return out


def per_call_us(fn, calls: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls * 1e6


def driver_costs(catalog: Catalog, raw_call, raw_poll, calls: int) -> dict[str, float]:
    ids = catalog.ids()[:10].tolist()
    last = catalog.last_seq()
    return {
        "records of 10 hits (catalog)": per_call_us(lambda: catalog.get_many(ids), calls),
        "records of 10 hits (raw driver)": per_call_us(lambda: raw_call(ids), calls),
        "feed poll, nothing new (catalog)": per_call_us(lambda: catalog.changes_since(last), calls),
        "feed poll, nothing new (raw driver)": per_call_us(lambda: raw_poll(last), calls),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=20, help="copies of the 1,000 Towhee rows (20: 20,000 photos)")
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--database-url", help="an empty PostgreSQL database (default: start a throwaway server)")
    args = p.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        console.print("indexing the 1,000 Towhee photos once ...")
        rows = real_rows(tmp)
        server = None
        url = args.database_url
        if url is None:
            from tests.pgserver import PostgresServer

            server = PostgresServer(tmp / "pg").start()
            url = server.create_database("bench")
        try:
            catalogs = {"sqlite": Catalog.open(f"sqlite:///{tmp / 'c.sqlite'}"), "postgresql": Catalog.open(url)}
            photos = args.copies * len(rows)
            with Progress(console=console, transient=True) as progress:
                for name, catalog in catalogs.items():
                    fill(catalog, rows, args.copies, progress, name)
            sizes = Table(title=f"catalog bytes per photo ({photos:,} photos, embeddings of the default model)",
                          title_justify="left")  # fmt: skip
            for col in ("layout", *PER_PHOTO, "total per photo", "every table", "embedding column"):
                sizes.add_column(col, justify="left" if col == "layout" else "right")
            enc = np.mean([len(codec.encode(vec)) for _, vec in rows])
            legacy = legacy_bytes(rows, args.copies, tmp / "legacy.sqlite")
            before = [f"{legacy['images'] / photos:.0f}", "-", "-", f"{legacy['sources'] / photos:.0f}"]
            total = f"{sum(legacy.values()) / photos:.0f}"
            sizes.add_row("SQLite, before schema versions", *before, total, total, "5,120")
            for name, catalog in catalogs.items():
                got = catalog.table_bytes()
                total = sum(got[t] for t in PER_PHOTO)
                sizes.add_row(name, *(f"{got[t] / photos:.0f}" for t in PER_PHOTO), f"{total / photos:.0f}",
                              f"{sum(got.values()) / photos:.0f}", f"{enc:.0f}")  # fmt: skip
            console.print(sizes)

            import psycopg

            raw_pg = psycopg.connect(url.replace("postgresql://", "postgresql://", 1), autocommit=True)
            raw_lite = sqlite3.connect(tmp / "c.sqlite", check_same_thread=False)
            costs = Table(title=f"per call, microseconds (mean of {args.calls})", title_justify="left")
            costs.add_column("operation")
            for name in catalogs:
                costs.add_column(name, justify="right")
            sql_rec = "SELECT id, sha256, label, width, height, format, bytes, added_at, has_original FROM images"
            sql_src = ("SELECT s.image_id, d.path || s.name FROM sources s JOIN dirs d ON d.id = s.dir_id "
                       "WHERE s.image_id")  # fmt: skip
            sql_feed = "SELECT seq, image_id, flags FROM changes WHERE seq >"
            measured = {
                "sqlite": driver_costs(
                    catalogs["sqlite"],
                    lambda ids: (
                        raw_lite.execute(f"{sql_rec} WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall(),
                        raw_lite.execute(f"{sql_src} IN ({','.join('?' * len(ids))})", ids).fetchall(),
                    ),
                    lambda s: raw_lite.execute(f"{sql_feed} ?", (s,)).fetchall(),
                    args.calls,
                ),  # fmt: skip
                "postgresql": driver_costs(
                    catalogs["postgresql"],
                    lambda ids: (
                        raw_pg.execute(f"{sql_rec} WHERE id = ANY(%s)", (ids,)).fetchall(),
                        raw_pg.execute(f"{sql_src} = ANY(%s)", (ids,)).fetchall(),
                    ),
                    lambda s: raw_pg.execute(f"{sql_feed} %s", (s,)).fetchall(),
                    args.calls,
                ),  # fmt: skip
            }
            for op in measured["sqlite"]:
                costs.add_row(op, *(f"{measured[name][op]:.0f}" for name in catalogs))
            console.print(costs)
            raw_pg.close()
            raw_lite.close()
            for catalog in catalogs.values():
                catalog.close()
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    tune_process(Settings())  # as the CLI and the service do (lookalike.tuning)
    main()
