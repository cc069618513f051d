"""The SQLite catalog: the source of truth of a library.

One row per distinct image (sha256 of its bytes) with its embedding, and one row
per source (path or URL) that pointed at it. Vector indexes are derived from
this table and can always be rebuilt from it. Writes happen in one transaction
per batch, so a killed process leaves either a whole batch or none of it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.store.payload import whole_photo

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so vector ids stay unambiguous
    sha256 TEXT NOT NULL UNIQUE,
    label TEXT,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    format TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    added_at REAL NOT NULL,
    has_original INTEGER NOT NULL DEFAULT 0,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS images_label ON images(label);
CREATE TABLE IF NOT EXISTS sources (
    source TEXT PRIMARY KEY,              -- absolute path or URL
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    label TEXT,
    size INTEGER,
    mtime_ns INTEGER,
    added_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sources_image ON sources(image_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,                 -- 1.. in detection order (best first); 0 is the whole photo
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    embedding BLOB NOT NULL,
    PRIMARY KEY (image_id, idx)
);
CREATE INDEX IF NOT EXISTS objects_label ON objects(label);
CREATE TABLE IF NOT EXISTS detections (     -- which photos the detector has run on (objects may be none)
    image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    detector TEXT NOT NULL
);
"""

OBJECT_BITS = 10  # object vector id = image_id << 10 | idx: stable across re-runs, up to 1023 objects a photo


def object_vector_id(image_id: int, idx: int) -> int:
    return (image_id << OBJECT_BITS) | idx


def split_object_vector_id(vector_id: int) -> tuple[int, int]:
    return vector_id >> OBJECT_BITS, vector_id & ((1 << OBJECT_BITS) - 1)


@dataclass(frozen=True)
class ObjectRecord:
    image_id: int
    idx: int
    box: tuple[float, float, float, float]
    label: str
    score: float


@dataclass(frozen=True)
class ImageRecord:
    id: int
    sha256: str
    label: str | None
    width: int
    height: int
    format: str
    bytes: int
    added_at: float
    has_original: bool
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class NewImage:
    """An image ready to be written: decoded, embedded, thumbnailed."""

    sha256: str
    source: str
    label: str | None
    width: int
    height: int
    format: str
    bytes: int
    size: int | None
    mtime_ns: int | None
    embedding: np.ndarray | None  # None when the bytes are already in the catalog
    has_original: bool = False


_IMAGE_COLS = "id, sha256, label, width, height, format, bytes, added_at, has_original"


class Catalog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # check_same_thread off: the service reads from worker threads; writes are serialised by SQLite.
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # meta ---------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    # reads ---------------------------------------------------------------
    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def source_state(self, source: str) -> tuple[int, int | None, int | None] | None:
        """(image_id, size, mtime_ns) recorded for a source, or None if unknown."""
        return self.db.execute("SELECT image_id, size, mtime_ns FROM sources WHERE source=?", (source,)).fetchone()

    def id_for_sha(self, sha256: str) -> int | None:
        row = self.db.execute("SELECT id FROM images WHERE sha256=?", (sha256,)).fetchone()
        return row[0] if row else None

    def get(self, image_id: int) -> ImageRecord | None:
        row = self.db.execute(f"SELECT {_IMAGE_COLS} FROM images WHERE id=?", (image_id,)).fetchone()
        if row is None:
            return None
        sources = tuple(
            r[0] for r in self.db.execute("SELECT source FROM sources WHERE image_id=? ORDER BY added_at", (image_id,))
        )
        return ImageRecord(*row[:8], bool(row[8]), sources)

    def get_many(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        return {i: rec for i in ids if (rec := self.get(int(i))) is not None}

    def embedding(self, image_id: int) -> np.ndarray | None:
        row = self.db.execute("SELECT embedding FROM images WHERE id=?", (image_id,)).fetchone()
        return np.frombuffer(row[0], dtype=np.float32).copy() if row else None

    def ids(self, label: str | None = None) -> np.ndarray:
        if label is None:
            rows = self.db.execute("SELECT id FROM images ORDER BY id")
        else:
            rows = self.db.execute("SELECT id FROM images WHERE label=? ORDER BY id", (label,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def labels(self) -> dict[str, int]:
        rows = self.db.execute("SELECT label, COUNT(*) FROM images WHERE label IS NOT NULL GROUP BY label")
        return dict(rows.fetchall())

    def iter_embeddings(self, chunk: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids, vectors) chunks in id order, for rebuilding vector indexes."""
        last = -1
        while True:
            rows = self.db.execute(
                "SELECT id, embedding FROM images WHERE id > ? ORDER BY id LIMIT ?", (last, chunk)
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            last = int(ids[-1])
            yield ids, vecs

    def embeddings_for(self, ids: np.ndarray) -> np.ndarray:
        out = []
        for i in ids.tolist():
            row = self.db.execute("SELECT embedding FROM images WHERE id=?", (i,)).fetchone()
            out.append(np.frombuffer(row[0], dtype=np.float32))
        return np.stack(out) if out else np.empty((0, 0), dtype=np.float32)

    def payloads_for(self, ids: np.ndarray) -> list[dict]:
        """Vector-index payloads of whole photos (lookalike.store.payload)."""
        out = []
        for i in ids.tolist():
            row = self.db.execute("SELECT label FROM images WHERE id=?", (i,)).fetchone()
            out.append(whole_photo(i, row[0] if row else None))
        return out

    def object_payloads_for(self, vector_ids: np.ndarray) -> list[dict]:
        """Vector-index payloads of detected subjects: photo, entry, labels, box, score."""
        out = []
        for vid in vector_ids.tolist():
            image_id, idx = split_object_vector_id(vid)
            row = self.db.execute(
                "SELECT o.x1, o.y1, o.x2, o.y2, o.label, o.score, i.label FROM objects o "
                "JOIN images i ON i.id = o.image_id WHERE o.image_id=? AND o.idx=?",
                (image_id, idx),
            ).fetchone()
            out.append({"photo_id": image_id, "object": idx, "label": row[6] or "", "detected_label": row[4],
                        "box": tuple(row[:4]), "score": float(row[5])})  # fmt: skip
        return out

    def sources_under(self, prefix: str) -> list[str]:
        """Sources recorded below a folder (prefix ends with the path separator)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self.db.execute("SELECT source FROM sources WHERE source LIKE ? ESCAPE '\\'", (escaped + "%",))
        return [r[0] for r in rows]

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())

    # objects ------------------------------------------------------------------
    def detected_with(self, image_id: int) -> str | None:
        row = self.db.execute("SELECT detector FROM detections WHERE image_id=?", (image_id,)).fetchone()
        return row[0] if row else None

    def set_objects(self, image_id: int, detector: str, objects: list[tuple[tuple, str, float, np.ndarray]]) -> None:
        """Replace a photo's objects ((box, label, score, embedding), best first) in one transaction."""
        with self.transaction():
            self.db.execute("DELETE FROM objects WHERE image_id=?", (image_id,))
            self.db.executemany(
                "INSERT INTO objects(image_id, idx, x1, y1, x2, y2, label, score, embedding) VALUES(?,?,?,?,?,?,?,?,?)",
                [
                    (image_id, i, *map(float, box), label, float(score), np.asarray(emb, np.float32).tobytes())
                    for i, (box, label, score, emb) in enumerate(objects, 1)
                ],
            )
            self.db.execute("INSERT OR REPLACE INTO detections(image_id, detector) VALUES(?, ?)", (image_id, detector))

    def objects(self, image_id: int) -> list[ObjectRecord]:
        rows = self.db.execute(
            "SELECT image_id, idx, x1, y1, x2, y2, label, score FROM objects WHERE image_id=? ORDER BY idx",
            (image_id,),
        )
        return [ObjectRecord(r[0], r[1], (r[2], r[3], r[4], r[5]), r[6], r[7]) for r in rows]

    def object_vector_ids(self, label: str | None = None, image_label: str | None = None) -> np.ndarray:
        sql, args = "SELECT o.image_id, o.idx FROM objects o", []
        where = []
        if image_label is not None:
            sql += " JOIN images i ON i.id = o.image_id"
            where.append("i.label = ?")
            args.append(image_label)
        if label is not None:
            where.append("o.label = ?")
            args.append(label)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.db.execute(sql + " ORDER BY o.image_id, o.idx", args)
        return np.fromiter((object_vector_id(r[0], r[1]) for r in rows), dtype=np.int64)

    def object_embeddings_for(self, vector_ids: np.ndarray) -> np.ndarray:
        out = []
        for vid in vector_ids.tolist():
            image_id, idx = split_object_vector_id(vid)
            row = self.db.execute(
                "SELECT embedding FROM objects WHERE image_id=? AND idx=?", (image_id, idx)
            ).fetchone()
            out.append(np.frombuffer(row[0], dtype=np.float32))
        return np.stack(out) if out else np.empty((0, 0), dtype=np.float32)

    def object_record(self, vector_id: int) -> ObjectRecord | None:
        image_id, idx = split_object_vector_id(vector_id)
        row = self.db.execute(
            "SELECT image_id, idx, x1, y1, x2, y2, label, score FROM objects WHERE image_id=? AND idx=?",
            (image_id, idx),
        ).fetchone()
        return ObjectRecord(row[0], row[1], (row[2], row[3], row[4], row[5]), row[6], row[7]) if row else None

    def object_labels(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT label, COUNT(*) FROM objects GROUP BY label").fetchall())

    # writes ----------------------------------------------------------------
    def add_batch(self, items: list[NewImage]) -> list[tuple[NewImage, int, bool]]:
        """Insert images and their sources in one transaction.

        Returns (item, image_id, is_new) per item: an item whose bytes are already in
        the catalog is attached to the existing image as one more source.
        """
        results: list[tuple[NewImage, int, bool]] = []
        now = time.time()
        with self.transaction():
            for item in items:
                existing = self.id_for_sha(item.sha256)
                if existing is None and item.embedding is None:
                    continue  # its twin was deleted meanwhile; the next run indexes it afresh
                if existing is None:
                    vec = np.ascontiguousarray(item.embedding, dtype=np.float32)
                    cur = self.db.execute(
                        "INSERT INTO images(sha256, label, width, height, format, bytes, added_at, has_original,"
                        " embedding) VALUES(?,?,?,?,?,?,?,?,?)",
                        (
                            item.sha256,
                            item.label,
                            item.width,
                            item.height,
                            item.format,
                            item.bytes,
                            now,
                            int(item.has_original),
                            vec.tobytes(),
                        ),
                    )
                    image_id, is_new = int(cur.lastrowid), True
                else:
                    image_id, is_new = existing, False
                    if item.has_original:
                        self.db.execute("UPDATE images SET has_original=1 WHERE id=?", (image_id,))
                self._attach(item.source, image_id, item.label, item.size, item.mtime_ns, now)
                results.append((item, image_id, is_new))
        return results

    def attach_source(
        self, source: str, image_id: int, label: str | None, size: int | None, mtime_ns: int | None
    ) -> None:
        with self.transaction():
            self._attach(source, image_id, label, size, mtime_ns, time.time())

    def _attach(
        self,
        source: str,
        image_id: int,
        label: str | None,
        size: int | None,
        mtime_ns: int | None,
        now: float,
    ) -> None:
        self.db.execute(
            "INSERT INTO sources(source, image_id, label, size, mtime_ns, added_at) VALUES(?,?,?,?,?,?) "
            "ON CONFLICT(source) DO UPDATE SET image_id=excluded.image_id, label=excluded.label, "
            "size=excluded.size, mtime_ns=excluded.mtime_ns",
            (source, image_id, label, size, mtime_ns, now),
        )
        if label is not None:
            self.db.execute("UPDATE images SET label=? WHERE id=? AND label IS NULL", (label, image_id))

    def orphans(self) -> list[int]:
        """Images that no source points at any more (after a source changed or vanished)."""
        rows = self.db.execute("SELECT id FROM images WHERE id NOT IN (SELECT image_id FROM sources)")
        return [r[0] for r in rows]

    def remove_sources(self, sources: Iterable[str]) -> None:
        with self.transaction():
            self.db.executemany("DELETE FROM sources WHERE source=?", ((s,) for s in sources))

    def remove_images(self, ids: Iterable[int]) -> list[ImageRecord]:
        """Delete images (and their sources); returns what was deleted."""
        removed = []
        with self.transaction():
            for i in ids:
                rec = self.get(int(i))
                if rec is not None:
                    self.db.execute("DELETE FROM images WHERE id=?", (rec.id,))
                    removed.append(rec)
        return removed

    def transaction(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
