"""The catalog: the source of truth of a library, in SQLite (default) or PostgreSQL (shared).

One row per distinct image (sha256 of its bytes) with its embedding, one row per source (path, URL,
bucket key or upload) that pointed at it, the detected subjects, learned transforms by version, and a
change feed. Vector indexes are derived from it: every write appends the touched photo ids to
``changes`` in the same transaction, and every process follows that feed to bring its indexes (or the
shared engine) to the catalog's state. Ids come from the database and are never reused, so a vector id
always means one photo. Writes are batched in one transaction each, so a killed process leaves a whole
batch or none of it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lookalike import fields
from lookalike.fields import FieldValue
from lookalike.store.catalog import codec, fieldsummary
from lookalike.store.catalog.database import Database
from lookalike.store.catalog.fieldsummary import FieldInfo
from lookalike.store.catalog.migrations import migrate, split_source
from lookalike.store.catalog.records import (
    COPY,
    OBJECTS,
    PHOTO,
    SOURCES,
    BatchResult,
    Change,
    ImageRecord,
    NewImage,
    NewVideo,
    ObjectRecord,
    SourceState,
    StoredTransform,
    Vectors,
    VideoState,
    object_vector_id,
    split_object_vector_id,
)
from lookalike.store.payload import whole_photo

log = logging.getLogger("lookalike")
CHUNK = 5000  # ids per IN list: well under SQLite's and PostgreSQL's parameter limits
IMAGE_COLS = "id, sha256, label, width, height, format, bytes, added_at, has_original, fields"
# a subject and its photo's label (the payload's label: filters apply to both kinds of vectors alike)
OBJECT_COLS = ("o.image_id, o.idx, o.x1, o.y1, o.x2, o.y2, o.label, o.score, i.label AS image_label, "
               "i.fields AS image_fields")


def _sql(text: str, *expanding: str) -> sa.TextClause:
    clause = sa.text(text)
    return clause.bindparams(*(sa.bindparam(name, expanding=True) for name in expanding)) if expanding else clause


def _chunks(values: list, size: int = CHUNK) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _like_escape(text: str) -> str:
    """``text`` as itself in a LIKE pattern with ESCAPE '\\': its %, _ and \\ are plain characters."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _by_folder(sources: Iterable[str]) -> dict[str, set[str]]:
    """Sources grouped by folder (folder -> file names): the catalog is asked once per folder, not per source."""
    out: dict[str, set[str]] = {}
    for source in sources:
        folder, name = split_source(source)
        out.setdefault(folder, set()).add(name)
    return out


def _ints(ids: Iterable) -> list[int]:
    return [int(i) for i in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]


def _record(row: sa.Row, sources: tuple[str, ...] = ()) -> ImageRecord:
    """A row of ``IMAGE_COLS`` -> its record."""
    return ImageRecord(int(row.id), bytes(row.sha256).hex(), row.label, int(row.width), int(row.height), row.format,
                       int(row.bytes), float(row.added_at), bool(row.has_original), sources,
                       fields.loads(row.fields))  # fmt: skip


def _object_payload(row: sa.Row) -> dict:
    """A row of ``OBJECT_COLS`` -> the object's index payload."""
    return {"photo_id": int(row.image_id), "object": int(row.idx), "label": row.image_label or "",
            "detected_label": row.label, "box": (float(row.x1), float(row.y1), float(row.x2), float(row.y2)),
            "score": float(row.score), "fields": fields.loads(row.image_fields)}  # fmt: skip


def _object_record(row: sa.Row) -> ObjectRecord:
    """A row of (image_id, idx, x1, y1, x2, y2, label, score) of ``objects`` -> its record."""
    return ObjectRecord(int(row.image_id), int(row.idx), (row.x1, row.y1, row.x2, row.y2), row.label, float(row.score))


def _vectors(ids: list[int], rows: dict[int, sa.Row]) -> Vectors:
    """Rows of (id, label, fields, vector) -> the vectors of the ids that have one, in the order asked."""
    present = [i for i in ids if i in rows]
    return Vectors(np.asarray(present, dtype=np.int64), codec.decode_many([rows[i].vector for i in present]),
                   [whole_photo(i, rows[i].label, fields.loads(rows[i].fields)) for i in present])  # fmt: skip


class Catalog:
    """Everything a library knows, behind one small API; the same code on SQLite and PostgreSQL."""

    def __init__(self, db: Database) -> None:
        self.db = db
        migrate(db)
        self._dirs: dict[str, int] = {}  # folder -> id: a cache of rows that never change

    @classmethod
    def open(cls, url: str, schema: str | None = None, read_patience: float = 0.0) -> Catalog:
        """``read_patience``: seconds a read waits for a database that blinks (lookalike.store.catalog.database)."""
        return cls(Database(url, schema, read_patience=read_patience))

    @property
    def dialect(self) -> str:
        return self.db.dialect

    def close(self) -> None:
        self.db.close()

    def lock(self, name: str, wait: bool = True):
        return self.db.lock(name, wait)

    # meta -------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self.db.read() as conn:
            return conn.execute(sa.text("SELECT value FROM meta WHERE key = :k"), {"k": key}).scalar()

    def set_meta(self, key: str, value: str) -> None:
        with self.db.write() as conn:
            self._set_meta(conn, key, value)

    @staticmethod
    def _set_meta(conn: Connection, key: str, value: str) -> None:
        upsert = "INSERT INTO meta(key, value) VALUES (:k, :v) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        conn.execute(sa.text(upsert), {"k": key, "v": value})

    def set_metas(self, values: dict[str, str]) -> None:
        """Several keys in one transaction: readers see all of them changed or none."""
        with self.db.write() as conn:
            for key, value in values.items():
                self._set_meta(conn, key, value)

    def setdefault_meta(self, key: str, value: str) -> str:
        """Store ``value`` unless the key exists; returns what is stored (the first writer wins)."""
        with self.db.write() as conn:
            conn.execute(sa.text("INSERT INTO meta(key, value) VALUES (:k, :v) ON CONFLICT(key) DO NOTHING"),
                         {"k": key, "v": value})  # fmt: skip
            return conn.execute(sa.text("SELECT value FROM meta WHERE key = :k"), {"k": key}).scalar_one()

    def meta_items(self, prefix: str) -> dict[str, str]:
        with self.db.read() as conn:
            rows = conn.execute(sa.text("SELECT key, value FROM meta WHERE key LIKE :p"), {"p": prefix + "%"})
            return {k: v for k, v in rows}

    def delete_meta(self, key: str) -> None:
        with self.db.write() as conn:
            conn.execute(sa.text("DELETE FROM meta WHERE key = :k"), {"k": key})

    # photos: reads ---------------------------------------------------------------------------------
    def count(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute(sa.text("SELECT COUNT(*) FROM images")).scalar_one())

    def counts(self) -> dict[str, int]:
        """Photos, sources, detected subjects and photos with subjects, videos and their frames (among the photos)."""
        with self.db.read() as conn:
            one = lambda sql: int(conn.execute(sa.text(sql)).scalar_one())  # noqa: E731
            return {"images": one("SELECT COUNT(*) FROM images"), "sources": one("SELECT COUNT(*) FROM sources"),
                    "objects": one("SELECT COUNT(*) FROM objects"),
                    "photos_with_objects": one("SELECT COUNT(DISTINCT image_id) FROM objects"),
                    "detected": one("SELECT COUNT(*) FROM detections"), "videos": one("SELECT COUNT(*) FROM videos"),
                    "frames": one("SELECT COUNT(*) FROM frames")}  # fmt: skip

    def get(self, image_id: int) -> ImageRecord | None:
        return self.get_many([image_id]).get(int(image_id))

    def get_many(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        """Records with their sources (oldest first); unknown ids are left out."""
        ids = [i for i in _ints(ids) if 0 < i < 2**63]
        out: dict[int, ImageRecord] = {}
        with self.db.read() as conn:
            for chunk in _chunks(ids):
                rows = conn.execute(_sql(f"SELECT {IMAGE_COLS} FROM images WHERE id IN :ids", "ids"), {"ids": chunk})
                found = {int(r.id): r for r in rows}
                sources: dict[int, list[str]] = {i: [] for i in found}
                if found:
                    for image_id, source in conn.execute(_sql(
                        "SELECT s.image_id, d.path || s.name FROM sources s JOIN dirs d ON d.id = s.dir_id "
                        "WHERE s.image_id IN :ids ORDER BY s.added_at, d.path, s.name", "ids"), {"ids": list(found)}
                    ):  # fmt: skip
                        sources[int(image_id)].append(source)
                out.update({i: _record(r, tuple(sources[i])) for i, r in found.items()})
        return out

    def id_for_sha(self, sha256: str) -> int | None:
        with self.db.read() as conn:
            return conn.execute(
                sa.text("SELECT id FROM images WHERE sha256 = :s"), {"s": bytes.fromhex(sha256)}
            ).scalar()

    def ids_for_shas(self, shas: Iterable[str]) -> dict[str, int]:
        """The photos holding these bytes (sha256 hex -> id), in one query per ``CHUNK``; unknown ones left out.
        Indexing asks once per group of photos instead of once per photo (bench/RESULTS.md, issue #29)."""
        wanted = sorted({bytes.fromhex(s) for s in shas})
        out: dict[str, int] = {}
        if not wanted:
            return out
        with self.db.read() as conn:
            for chunk in _chunks(wanted):
                q = _sql("SELECT sha256, id FROM images WHERE sha256 IN :shas", "shas")
                out.update({bytes(sha).hex(): int(image_id) for sha, image_id in conn.execute(q, {"shas": chunk})})
        return out

    def embedding(self, image_id: int) -> np.ndarray | None:
        if not 0 < int(image_id) < 2**63:
            return None
        with self.db.read() as conn:
            blob = conn.execute(sa.text("SELECT embedding FROM images WHERE id = :i"), {"i": int(image_id)}).scalar()
        return None if blob is None else codec.decode(blob)

    def vectors(self, ids: Iterable[int]) -> Vectors:
        """Whole-photo embeddings and payloads of the ids that exist (in the order asked)."""
        ids = _ints(ids)
        rows: dict[int, sa.Row] = {}
        with self.db.read() as conn:
            for chunk in _chunks(ids):
                q = _sql("SELECT id, label, fields, embedding AS vector FROM images WHERE id IN :ids", "ids")
                rows.update({int(r.id): r for r in conn.execute(q, {"ids": chunk})})
        return _vectors(ids, rows)

    def object_vectors(self, image_ids: Iterable[int]) -> Vectors:
        """Detected-subject embeddings and payloads of these photos."""
        ids, vecs, payloads = [], [], []
        with self.db.read() as conn:
            for chunk in _chunks(_ints(image_ids)):
                q = _sql(f"SELECT {OBJECT_COLS}, o.embedding FROM objects o JOIN images i ON i.id = o.image_id "
                         "WHERE o.image_id IN :ids ORDER BY o.image_id, o.idx", "ids")  # fmt: skip
                for r in conn.execute(q, {"ids": chunk}):
                    ids.append(object_vector_id(int(r.image_id), int(r.idx)))
                    vecs.append(r.embedding)
                    payloads.append(_object_payload(r))
        return Vectors(np.asarray(ids, dtype=np.int64), codec.decode_many(vecs), payloads)

    def iter_vectors(self, objects: bool = False, chunk: int = 4096) -> Iterator[Vectors]:
        """Every whole-photo (or subject) vector in id order, in chunks: for building an index."""
        for ids in self._id_chunks("SELECT id FROM images WHERE id > :last ORDER BY id LIMIT :n", chunk):
            found = self.object_vectors(ids) if objects else self.vectors(ids)
            if len(found):
                yield found

    def _id_chunks(self, query: str, chunk: int) -> Iterator[list[int]]:
        """Ids in order, ``chunk`` at a time, each chunk read in its own short transaction (keyset paging)."""
        last = 0
        while True:
            with self.db.read() as conn:
                ids = [int(r[0]) for r in conn.execute(sa.text(query), {"last": last, "n": chunk})]
            if not ids:
                return
            last = ids[-1]
            yield ids

    def sample_ids(self, n: int, seed: int = 0) -> list[int]:
        """At most ``n`` photo ids drawn at random (reproducibly): a bounded sample to learn from."""
        ids = self.ids().tolist()
        if len(ids) <= n:
            return ids
        return sorted(random.Random(seed).sample(ids, n))

    def ids(self, label: str | None = None) -> np.ndarray:
        with self.db.read() as conn:
            if label is None:
                rows = conn.execute(sa.text("SELECT id FROM images ORDER BY id"))
            else:
                rows = conn.execute(sa.text("SELECT id FROM images WHERE label = :l ORDER BY id"), {"l": label})
            return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def list_images(self, sort: str = "newest", label: str | None = None, limit: int = 50,
                    offset: int = 0, name: str | None = None) -> tuple[int, list[ImageRecord]]:  # fmt: skip
        """A page of the library: (how many match, their records). ``sort``: newest, oldest or name (the
        file name of the photo's first source); ``name``: only photos with a file name containing it (any case)."""
        conditions: list[str] = []
        args: dict[str, str] = {}
        if label is not None:
            conditions.append("i.label = :l")
            args["l"] = label
        if name and "\0" in name:  # no file name holds a NUL (and SQLite's LIKE would stop reading there)
            return 0, []
        if name:
            pattern = "%" + _like_escape(name.lower()) + "%"
            conditions.append("EXISTS (SELECT 1 FROM sources f WHERE f.image_id = i.id AND LOWER(f.name) LIKE :p "
                              "ESCAPE '\\')")  # fmt: skip
            args["p"] = pattern
        where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
        order = {"newest": "i.id DESC", "oldest": "i.id", "name": "n, i.id"}[sort]
        first_name = "(SELECT MIN(s.name) FROM sources s WHERE s.image_id = i.id)" if sort == "name" else "NULL"
        with self.db.read() as conn:
            total = int(conn.execute(sa.text(f"SELECT COUNT(*) FROM images i {where}"), args).scalar_one())
            q = sa.text(f"SELECT i.id, {first_name} AS n FROM images i {where} ORDER BY {order} LIMIT :lim "
                        "OFFSET :off")  # fmt: skip
            ids = [int(r[0]) for r in conn.execute(q, args | {"lim": int(limit), "off": int(offset)})]
        records = self.get_many(ids)
        return total, [records[i] for i in ids if i in records]

    def field_summary(self) -> list[FieldInfo]:
        """The photos' fields: kinds, counts, number ranges, the strings of fields with few (fieldsummary)."""
        return fieldsummary.summary(self.db)

    def labels(self) -> dict[str, int]:
        with self.db.read() as conn:
            rows = conn.execute(sa.text("SELECT label, COUNT(*) FROM images WHERE label IS NOT NULL GROUP BY label"))
            return {label: int(n) for label, n in rows}

    # sources ------------------------------------------------------------------------------------------
    def source_state(self, source: str) -> SourceState | None:
        """What is recorded for a source, or None if unknown."""
        return self.source_states([source]).get(source)

    def written_since(self, sources: Iterable[str], since: float) -> dict[str, int]:
        """Those of these sources whose photo was added at ``since`` or later (source -> image id): what an earlier
        attempt of a job's chunk wrote before it was cut off."""
        select = "SELECT name, image_id, i.added_at FROM sources JOIN images i ON i.id = sources.image_id"
        return {src: int(image_id) for src, (image_id, added_at) in self._rows_per_folder(sources, select)
                if float(added_at) >= since}  # fmt: skip

    def source_states(self, sources: Iterable[str]) -> dict[str, SourceState]:
        """What is recorded for many sources at once, a query per folder (an index run asks for thousands)."""
        rows = self._rows_per_folder(sources, "SELECT name, image_id, size, mtime_ns, label, fields FROM sources")
        return {src: SourceState(int(image_id), size, mtime_ns, label, given)
                for src, (image_id, size, mtime_ns, label, given) in rows}  # fmt: skip

    def _rows_per_folder(self, sources: Iterable[str], select: str) -> Iterator[tuple[str, tuple]]:
        """(source, the rest of its row) for the sources among these that ``select`` (a table's rows, ``name``
        first, of one folder: ``WHERE dir_id = :d`` is added) finds: a query per folder, not per source."""
        with self.db.read() as conn:
            for folder, names in _by_folder(sources).items():
                dir_id = self._dir_id(conn, folder)
                if dir_id is None:
                    continue
                for name, *rest in conn.execute(sa.text(f"{select} WHERE dir_id = :d"), {"d": dir_id}):
                    if name in names:
                        yield folder + name, tuple(rest)

    def removed_sizes(self, sources: Iterable[str]) -> dict[str, int | None]:
        """The sources among these that a user removed (``remove_images(remember=True)``), a query per folder, with
        their file's size then (None: removed before the catalog kept it, or a source without one)."""
        rows = self._rows_per_folder(sources, "SELECT name, size FROM removed")
        return {src: None if size is None else int(size) for src, (size,) in rows}

    def forget_removed(self, sources: Iterable[str]) -> int:
        """Let these sources be indexed again (``index --include-removed``); returns how many were removed."""
        keys = [split_source(s) for s in sources]

        def write(conn: Connection) -> int:
            forgotten = 0
            for folder, name in keys:
                dir_id = self._dir_id(conn, folder)
                if dir_id is not None:
                    forgotten += conn.execute(sa.text("DELETE FROM removed WHERE dir_id = :d AND name = :n"),
                                              {"d": dir_id, "n": name}).rowcount  # fmt: skip
            return forgotten

        return self.db.retrying(write) if keys else 0

    def sources_under(self, prefix: str) -> list[str]:
        """Sources recorded below a folder (prefix ends with the path separator)."""
        escaped = _like_escape(prefix)
        with self.db.read() as conn:
            # LIKE narrows the rows; the exact prefix decides: SQLite's LIKE ignores case, and ``index Photos
            # --prune`` took the photos of a sibling folder ``photos/`` for vanished ones and deleted them
            rows = conn.execute(sa.text("SELECT d.path || s.name FROM dirs d JOIN sources s ON s.dir_id = d.id "
                                        "WHERE d.path LIKE :p ESCAPE '\\' AND substr(d.path, 1, :n) = :prefix"),
                                {"p": escaped + "%", "n": len(prefix), "prefix": prefix})  # fmt: skip
            return [r[0] for r in rows]

    def _dir_id(self, conn: Connection, folder: str) -> int | None:
        if folder in self._dirs:
            return self._dirs[folder]
        found = conn.execute(sa.text("SELECT id FROM dirs WHERE path = :p"), {"p": folder}).scalar()
        if found is not None:
            self._dirs[folder] = int(found)
        return found

    def _ensure_dir(self, conn: Connection, folder: str, learned: dict[str, int]) -> int:
        if folder in self._dirs:
            return self._dirs[folder]
        if folder not in learned:
            conn.execute(sa.text("INSERT INTO dirs(path) VALUES (:p) ON CONFLICT(path) DO NOTHING"), {"p": folder})
            found = conn.execute(sa.text("SELECT id FROM dirs WHERE path = :p"), {"p": folder}).scalar_one()
            learned[folder] = int(found)
        return learned[folder]

    # videos ----------------------------------------------------------------------------------------------
    def video_states(self, sources: Iterable[str]) -> dict[str, VideoState]:
        """What is recorded of these video files (only those whose frames were all written), a query per folder."""
        rows = self._rows_per_folder(sources, "SELECT name, sha256, size, mtime_ns, frames, sampling FROM videos")
        return {src: VideoState(bytes(sha).hex(), size, mtime_ns, int(count), float(interval))
                for src, (sha, size, mtime_ns, count, interval) in rows}  # fmt: skip

    def finish_video(self, video: NewVideo, guard: Callable[[Connection], None] | None = None) -> list[int]:
        """Record a video whose chosen frames are all written, and forget the frames an earlier version of the file
        had (its frame sources not among ``video.frames``), in one transaction (``guard`` as for ``add_batch``);
        returns the images those pointed at (candidates for removal)."""
        folder, name = split_source(video.source)
        keep = {split_source(f)[1] for f in video.frames}
        learned: dict[str, int] = {}

        def write(conn: Connection) -> list[int]:
            if guard is not None:
                guard(conn)
            dir_id = self._ensure_dir(conn, folder, learned)
            conn.execute(sa.text(
                "INSERT INTO videos(dir_id, name, sha256, size, mtime_ns, duration, width, height, frames, sampling, "
                "added_at) VALUES (:d, :n, :sha, :s, :m, :dur, :w, :h, :f, :i, :at) "
                "ON CONFLICT(dir_id, name) DO UPDATE SET "
                "sha256 = excluded.sha256, size = excluded.size, mtime_ns = excluded.mtime_ns, "
                "duration = excluded.duration, width = excluded.width, height = excluded.height, "
                "frames = excluded.frames, sampling = excluded.sampling, added_at = excluded.added_at"),
                {"d": dir_id, "n": name, "sha": bytes.fromhex(video.sha256), "s": video.size, "m": video.mtime_ns,
                 "dur": video.duration, "w": video.width, "h": video.height, "f": len(video.frames),
                 "i": video.interval, "at": time.time()})  # fmt: skip
            return self._drop_frames(conn, dir_id, name, keep)

        touched = self.db.retrying(write)
        self._dirs.update(learned)
        return touched

    def frame_sources(self, video: str) -> list[str]:
        """The sources of a video's frames (``video#t=...``) the catalog holds, in no particular order."""
        folder, name = split_source(video)
        with self.db.read() as conn:
            dir_id = self._dir_id(conn, folder)
            return [] if dir_id is None else [folder + n for n, _ in self._frame_rows(conn, dir_id, name)]

    def _frame_rows(self, conn: Connection, dir_id: int, name: str) -> list[tuple[str, int]]:
        """(source name, image id) of the frames of the video ``name`` in a folder."""
        q = sa.text("SELECT name, image_id FROM sources WHERE dir_id = :d AND name LIKE :p ESCAPE '\\' "
                    "AND substr(name, 1, :n) = :prefix")  # exactly: SQLite's LIKE ignores case (Clip.mp4, clip.mp4)
        prefix = name + "#t="
        rows = conn.execute(q, {"d": dir_id, "p": _like_escape(prefix) + "%", "n": len(prefix), "prefix": prefix})
        return [(n, int(i)) for n, i in rows]

    def _drop_frames(self, conn: Connection, dir_id: int, name: str, keep: set[str]) -> list[int]:
        """Delete the frame sources (``name#t=...``) of a video but those in ``keep``; the images they pointed at."""
        stale = [(n, i) for n, i in self._frame_rows(conn, dir_id, name) if n not in keep]
        for chunk in _chunks([n for n, _ in stale]):
            conn.execute(_sql("DELETE FROM sources WHERE dir_id = :d AND name IN :names", "names"),
                         {"d": dir_id, "names": chunk})  # fmt: skip
        touched = sorted({i for _, i in stale})
        self._feed(conn, [(i, SOURCES) for i in touched])
        return touched

    def forget_videos(self, sources: Iterable[str]) -> list[int]:
        """Forget video files (vanished and pruned) and their frames' sources; returns the images those pointed at."""
        keys = [split_source(s) for s in sources]

        def write(conn: Connection) -> list[int]:
            touched: list[int] = []
            for folder, name in keys:
                dir_id = self._dir_id(conn, folder)
                if dir_id is not None:
                    conn.execute(sa.text("DELETE FROM videos WHERE dir_id = :d AND name = :n"),
                                 {"d": dir_id, "n": name})  # fmt: skip
                    touched += self._drop_frames(conn, dir_id, name, set())
            return touched

        return sorted(set(self.db.retrying(write))) if keys else []

    def frame_times(self, image_ids: Iterable[int]) -> dict[int, float]:
        """The second of each image that is a video's frame (the others are left out)."""
        out: dict[int, float] = {}
        with self.db.read() as conn:
            for chunk in _chunks(_ints(image_ids)):
                q = _sql("SELECT image_id, t FROM frames WHERE image_id IN :ids", "ids")
                out.update({int(i): float(t) for i, t in conn.execute(q, {"ids": chunk})})
        return out

    # subjects --------------------------------------------------------------------------------------------
    def detected_with(self, image_id: int) -> str | None:
        with self.db.read() as conn:
            return conn.execute(sa.text("SELECT detector FROM detections WHERE image_id = :i"),
                                {"i": int(image_id)}).scalar()  # fmt: skip

    def objects(self, image_id: int) -> list[ObjectRecord]:
        with self.db.read() as conn:
            rows = conn.execute(sa.text("SELECT image_id, idx, x1, y1, x2, y2, label, score FROM objects "
                                        "WHERE image_id = :i ORDER BY idx"), {"i": int(image_id)})  # fmt: skip
            return [_object_record(r) for r in rows]

    def object_records(self, vector_ids: Iterable[int]) -> dict[int, ObjectRecord]:
        wanted = _ints(vector_ids)
        images = sorted({split_object_vector_id(v)[0] for v in wanted})
        found: dict[int, ObjectRecord] = {}
        with self.db.read() as conn:
            for chunk in _chunks(images):
                q = _sql(
                    "SELECT image_id, idx, x1, y1, x2, y2, label, score FROM objects WHERE image_id IN :ids", "ids"
                )
                for r in conn.execute(q, {"ids": chunk}):
                    found[object_vector_id(int(r.image_id), int(r.idx))] = _object_record(r)
        return {v: found[v] for v in wanted if v in found}

    def object_record(self, vector_id: int) -> ObjectRecord | None:
        return self.object_records([vector_id]).get(int(vector_id))

    def object_vector_ids(self) -> np.ndarray:
        with self.db.read() as conn:
            rows = conn.execute(sa.text("SELECT image_id, idx FROM objects ORDER BY image_id, idx"))
            return np.fromiter((object_vector_id(int(a), int(b)) for a, b in rows), dtype=np.int64)

    def object_labels(self) -> dict[str, int]:
        with self.db.read() as conn:
            return {k: int(n) for k, n in conn.execute(sa.text("SELECT label, COUNT(*) FROM objects GROUP BY label"))}

    def set_objects(self, image_id: int, detector: str, objects: list[tuple[tuple, str, float, np.ndarray]]) -> bool:
        """Replace a photo's subjects ((box, label, score, embedding), best first); False if the photo is gone."""

        def write(conn: Connection) -> bool:
            if conn.execute(sa.text("SELECT 1 FROM images WHERE id = :i"), {"i": image_id}).scalar() is None:
                return False
            conn.execute(sa.text("DELETE FROM objects WHERE image_id = :i"), {"i": image_id})
            if objects:
                conn.execute(sa.text(
                    "INSERT INTO objects(image_id, idx, x1, y1, x2, y2, label, score, embedding) "
                    "VALUES (:i, :idx, :x1, :y1, :x2, :y2, :label, :score, :emb)"), [
                    {"i": image_id, "idx": n, "x1": float(box[0]), "y1": float(box[1]), "x2": float(box[2]),
                     "y2": float(box[3]), "label": label, "score": float(score), "emb": codec.encode(emb)}
                    for n, (box, label, score, emb) in enumerate(objects, 1)])  # fmt: skip
            conn.execute(sa.text("INSERT INTO detections(image_id, detector) VALUES (:i, :d) "
                                 "ON CONFLICT(image_id) DO UPDATE SET detector = excluded.detector"),
                         {"i": image_id, "d": detector})  # fmt: skip
            self._feed(conn, [(image_id, OBJECTS)])
            return True

        return self.db.retrying(write)

    # writes ------------------------------------------------------------------------------------------------
    def add_batch(self, items: list[NewImage], guard: Callable[[Connection], None] | None = None) -> BatchResult:
        """Insert images and their sources in one transaction.

        ``guard`` runs first in that transaction and may raise to leave the batch unwritten (a worker checks
        there that it still holds its task: checked and written atomically, no write after a lost lease).

        An item whose bytes are already in the catalog (inserted by anyone, even concurrently) is
        attached to that image as one more source: ``ON CONFLICT`` on sha256 stores each photo once.
        Items are written in sha256 order, so two processes writing overlapping batches cannot deadlock.
        """
        learned: dict[str, int] = {}
        blobs = {id(it): codec.encode(it.embedding) for it in items if it.embedding is not None}
        copy_blobs = {id(it): codec.encode_int8(it.copy_vector) for it in items if it.copy_vector is not None}
        part_blobs = {id(it): codec.encode_int8(it.part_vector) for it in items if it.part_vector is not None}

        key_share = " FOR KEY SHARE" if self.db.dialect == "postgresql" else ""

        def write(conn: Connection) -> BatchResult:
            if guard is not None:
                guard(conn)
            learned.clear()
            result, changes, now = BatchResult(), [], time.time()
            attach: list[tuple[NewImage, int]] = []
            for item in sorted(items, key=lambda it: (it.sha256, it.source)):
                sha = bytes.fromhex(item.sha256)
                image_id = None
                if item.embedding is not None:
                    image_id = conn.execute(sa.text(
                        "INSERT INTO images(sha256, label, width, height, format, bytes, added_at, has_original, "
                        "embedding, fields) VALUES (:sha, :label, :w, :h, :fmt, :bytes, :at, :orig, :emb, :fields) "
                        "ON CONFLICT(sha256) DO NOTHING RETURNING id"),
                        {"sha": sha, "label": item.label, "w": item.width, "h": item.height, "fmt": item.format,
                         "bytes": item.bytes, "at": now, "orig": int(item.has_original),
                         "emb": blobs[id(item)], "fields": fields.dumps(item.fields)}).scalar()  # fmt: skip
                is_new = image_id is not None
                if image_id is not None:
                    changes.append((int(image_id), PHOTO))
                    if id(item) in copy_blobs:
                        conn.execute(sa.text("INSERT INTO copy_vectors(image_id, data, centre) VALUES (:i, :d, :p)"),
                                     {"i": image_id, "d": copy_blobs[id(item)],
                                      "p": part_blobs.get(id(item))})  # fmt: skip
                    if item.video is not None:  # a video's frame: which video, which second, in the same commit
                        conn.execute(sa.text("INSERT INTO frames(image_id, video, t) VALUES (:i, :v, :t)"),
                                     {"i": image_id, "v": bytes.fromhex(item.video), "t": item.t})  # fmt: skip
                else:
                    # PostgreSQL: wait for a removal of the twin in flight, so that a twin being deleted is not
                    # found (its source's foreign key then failed the whole batch, review); SQLite writes one at a time
                    image_id = conn.execute(sa.text("SELECT id FROM images WHERE sha256 = :s" + key_share),
                                            {"s": sha}).scalar()  # fmt: skip
                    if image_id is None:
                        continue  # its twin was deleted meanwhile: reported by the pipeline (TWIN_REMOVED)
                    if item.has_original:
                        conn.execute(sa.text("UPDATE images SET has_original = 1 WHERE id = :i AND has_original = 0"),
                                     {"i": image_id})  # fmt: skip
                    relabelled = item.label is not None and conn.execute(
                        sa.text("UPDATE images SET label = :l WHERE id = :i AND label IS NULL"),
                        {"l": item.label, "i": image_id},
                    ).rowcount
                    if self._merge_fields(conn, int(image_id), None, item.fields, item.source) or relabelled:
                        changes.append((int(image_id), PHOTO | OBJECTS))  # a first label, new fields: payloads
                    else:
                        changes.append((int(image_id), SOURCES))  # one more path to the same photo
                attach.append((item, int(image_id)))
                result.rows.append((item, int(image_id), is_new))
            result.displaced = self._attach_many(conn, attach, now, learned)
            # a path moved away from these photos (a file's new bytes); one that still has others takes its label
            # from them, as when its sources are pruned (review)
            moved_labels = set(self._label_from_sources(conn, result.displaced))
            changes += [(i, SOURCES | (PHOTO | OBJECTS if i in moved_labels else 0)) for i in result.displaced]
            self._feed(conn, changes)
            return result

        result = self.db.retrying(write)
        self._dirs.update(learned)  # only ids of committed rows are cached
        order = {id(item): n for n, item in enumerate(items)}
        result.rows.sort(key=lambda row: order[id(row[0])])
        return result

    def attach_source(self, source: str, image_id: int, label: str | None, size: int | None,
                      mtime_ns: int | None) -> None:  # fmt: skip
        item = NewImage("", source, label, 0, 0, "", 0, size, mtime_ns, None)
        learned: dict[str, int] = {}
        self.db.retrying(lambda conn: self._attach_many(conn, [(item, image_id)], time.time(), learned))
        self._dirs.update(learned)

    def _attach_many(self, conn: Connection, pairs: list[tuple[NewImage, int]], now: float,
                     learned: dict[str, int]) -> list[int]:  # fmt: skip
        """Point sources at images (one statement per folder and kind); returns the images some of them
        pointed at before (candidates for removal when nothing points at them now)."""
        by_folder: dict[int, dict[str, tuple[NewImage, int]]] = {}
        for item, image_id in pairs:
            folder, name = split_source(item.source)
            by_folder.setdefault(self._ensure_dir(conn, folder, learned), {})[name] = (item, image_id)
        displaced, rows = [], []
        for dir_id in sorted(by_folder):
            named = by_folder[dir_id]
            q = _sql("SELECT name, image_id FROM sources WHERE dir_id = :d AND name IN :names", "names")
            old = {n: int(i) for n, i in conn.execute(q, {"d": dir_id, "names": sorted(named)})}
            for name in sorted(named):
                item, image_id = named[name]
                if name in old and old[name] != image_id:
                    displaced.append(old[name])
                rows.append({"d": dir_id, "n": name, "i": image_id, "l": item.label, "s": item.size,
                             "m": item.mtime_ns, "at": now, "f": fields.dumps(item.fields)})  # fmt: skip
        if rows:
            conn.execute(sa.text(
                "INSERT INTO sources(dir_id, name, image_id, label, size, mtime_ns, added_at, fields) "
                "VALUES (:d, :n, :i, :l, :s, :m, :at, :f) ON CONFLICT(dir_id, name) DO UPDATE SET "
                "image_id = excluded.image_id, label = excluded.label, size = excluded.size, "
                "mtime_ns = excluded.mtime_ns, fields = excluded.fields"), rows)  # fmt: skip
        return displaced

    def relabel_sources(self, labels: dict[str, str | None]) -> list[int]:
        """Give sources new labels (a re-run under the label rule, a corrected CSV, ``--label``); each photo's
        label becomes that of its oldest labelled source. Returns the photos whose label changed."""

        def write(conn: Connection) -> list[int]:
            touched = set()
            for source, label in labels.items():
                folder, name = split_source(source)
                dir_id = self._dir_id(conn, folder)
                if dir_id is None:
                    continue
                q = sa.text("UPDATE sources SET label = :l WHERE dir_id = :d AND name = :n RETURNING image_id")
                row = conn.execute(q, {"l": label, "d": dir_id, "n": name}).fetchone()
                if row is not None:
                    touched.add(int(row[0]))
            changed = self._label_from_sources(conn, touched)
            self._feed(conn, [(i, PHOTO | OBJECTS) for i in changed])
            return changed

        return self.db.retrying(write)

    def _label_from_sources(self, conn: Connection, image_ids: Iterable[int]) -> list[int]:
        """Each photo's label becomes that of its oldest labelled source (none if no source has one); returns the
        photos whose label changed. A photo no source points at keeps its label (it is about to go). One statement
        per chunk of photos (a prune of a million sources: a query per photo held the write lock for minutes)."""
        # a photo whose label a source left still carries keeps it (sources added in one run share their added_at:
        # the oldest would be a tie, and the label could flip to another folder's for no reason: review)
        oldest = ("(SELECT s.label FROM sources s WHERE s.image_id = images.id AND s.label IS NOT NULL "
                  "ORDER BY s.added_at, s.dir_id, s.name LIMIT 1)")  # fmt: skip
        differs = "IS DISTINCT FROM" if self.dialect == "postgresql" else "IS NOT"  # NULL-aware comparison
        q = _sql(f"UPDATE images SET label = {oldest} WHERE id IN :ids AND label {differs} {oldest} "
                 "AND EXISTS (SELECT 1 FROM sources s WHERE s.image_id = images.id) "
                 "AND NOT EXISTS (SELECT 1 FROM sources s WHERE s.image_id = images.id AND s.label = images.label) "
                 "RETURNING id", "ids")  # fmt: skip
        changed: list[int] = []
        for chunk in _chunks(sorted(set(_ints(image_ids)))):
            changed += [int(r[0]) for r in conn.execute(q, {"ids": chunk})]
        return sorted(changed)

    def _locked_fields(self, conn: Connection, image_id: int) -> sa.Row | None:
        """The photo's fields row, locked until the transaction ends (PostgreSQL: two writers merging into one
        photo's record at once would otherwise lose one's keys; SQLite has one writer at a time already)."""
        # NO KEY UPDATE: writers merging fields wait for each other, not for a run attaching a source (FOR KEY SHARE,
        # which the same run may hold already: two of them deadlocked, review)
        lock = " FOR NO KEY UPDATE" if self.dialect == "postgresql" else ""
        return conn.execute(sa.text(f"SELECT fields FROM images WHERE id = :i{lock}"), {"i": image_id}).fetchone()

    def _merge_fields(self, conn: Connection, image_id: int, before: str | None,
                      given: Mapping[str, FieldValue] | None, source: str = "") -> bool:  # fmt: skip
        """A source's fields into its photo's, key by key, the last written winning; a key the source gave
        ``before`` (its earlier fields) and no longer gives, where the photo still holds that value, takes the value
        the photo's other sources give (the newest source's), or goes when none gives it. A value that is not the
        source's earlier one (set by hand, or by another source since) stays. True when the photo's fields changed."""
        earlier = fields.loads(before)
        if given is None and not earlier:
            return False
        row = self._locked_fields(conn, image_id)
        old_text = row[0] if row is not None else None
        old = fields.loads(old_text)
        dropped = {k for k, v in old.items() if k in earlier and not (given and k in given) and earlier[k] == v}
        now = {k: v for k, v in old.items() if k not in dropped}
        if dropped:  # what the other sources still give (this one's row holds what it gives now, none of these)
            others = conn.execute(sa.text("SELECT fields FROM sources WHERE image_id = :i AND fields IS NOT NULL "
                                          "ORDER BY added_at, dir_id, name"), {"i": image_id})  # fmt: skip
            for (text,) in others:
                now |= {k: v for k, v in fields.loads(text).items() if k in dropped}
        try:
            new = fields.check_fields(now | dict(given or {}))
        except fields.FieldError as exc:  # this source's record does not fit beside the others': the photo keeps its
            log.warning("photo %d keeps its fields: those of %s do not fit with them (%s)", image_id, source, exc)
            return False
        if fields.dumps(new) == old_text:
            return False
        conn.execute(sa.text("UPDATE images SET fields = :f WHERE id = :i"), {"f": fields.dumps(new), "i": image_id})
        return True

    def refield_sources(self, given: Mapping[str, Mapping[str, FieldValue] | None]) -> list[int]:
        """Sources whose record changed while their photo did not (a corrected CSV row): each source keeps its new
        fields, merged into its photo's (see ``_merge_fields``). Returns the photos whose fields changed."""

        def write(conn: Connection) -> list[int]:
            changed = set()
            for source, new in given.items():
                folder, name = split_source(source)
                dir_id = self._dir_id(conn, folder)
                if dir_id is None:
                    continue
                row = conn.execute(sa.text("SELECT image_id, fields FROM sources WHERE dir_id = :d AND name = :n"),
                                   {"d": dir_id, "n": name}).fetchone()  # fmt: skip
                if row is None:
                    continue
                conn.execute(sa.text("UPDATE sources SET fields = :f WHERE dir_id = :d AND name = :n"),
                             {"f": fields.dumps(new), "d": dir_id, "n": name})  # fmt: skip
                if self._merge_fields(conn, int(row.image_id), row.fields, new or {}, source):
                    changed.add(int(row.image_id))
            self._feed(conn, [(i, PHOTO | OBJECTS) for i in sorted(changed)])
            return sorted(changed)

        return self.db.retrying(write)

    def set_fields(self, image_id: int, changes: Mapping[str, FieldValue | None]) -> ImageRecord | None:
        """Change a photo's fields (a None removes one), checked as a whole (``lookalike.fields``); None when
        there is no such photo. The next index run keeps them unless a source's own fields change."""

        def write(conn: Connection) -> bool:
            text = self._locked_fields(conn, int(image_id))
            if text is None:
                return False
            new = fields.dumps(fields.merged(fields.loads(text[0]), changes))
            if new != text[0]:
                conn.execute(sa.text("UPDATE images SET fields = :f WHERE id = :i"), {"f": new, "i": int(image_id)})
                self._feed(conn, [(int(image_id), PHOTO | OBJECTS)])
            return True

        return self.get(image_id) if self.db.retrying(write) else None

    def remove_sources(self, sources: Iterable[str]) -> list[int]:
        """Forget sources; returns the images they pointed at (they may now be orphans)."""
        by_folder: dict[str, list[str]] = {}
        for source in sources:
            folder, name = split_source(source)
            by_folder.setdefault(folder, []).append(name)

        def write(conn: Connection) -> list[int]:
            touched = []
            for folder, names in by_folder.items():
                dir_id = self._dir_id(conn, folder)
                if dir_id is None:
                    continue
                for chunk in _chunks(names):
                    q = _sql("DELETE FROM sources WHERE dir_id = :d AND name IN :names RETURNING image_id", "names")
                    touched += [int(r[0]) for r in conn.execute(q, {"d": dir_id, "names": chunk})]
            # a photo whose labelled source went (its folder renamed: the old path pruned) takes its label from the
            # sources left, as relabel_sources does: it kept the old folder's name for good (hostile probe)
            relabelled = set(self._label_from_sources(conn, touched))
            flags = {i: SOURCES | (PHOTO | OBJECTS if i in relabelled else 0) for i in touched}
            self._feed(conn, sorted(flags.items()))
            return touched

        return sorted(set(self.db.retrying(write)))

    def orphans(self, candidates: Iterable[int] | None = None) -> list[int]:
        """Images no source points at any more; only among ``candidates`` when given (cheap per run)."""
        q = "SELECT id FROM images WHERE NOT EXISTS (SELECT 1 FROM sources s WHERE s.image_id = images.id)"
        with self.db.read() as conn:
            if candidates is None:
                return [int(r[0]) for r in conn.execute(sa.text(q + " ORDER BY id"))]
            out = []
            for chunk in _chunks(sorted(set(_ints(candidates)))):
                out += [int(r[0]) for r in conn.execute(_sql(q + " AND id IN :ids", "ids"), {"ids": chunk})]
            return out

    def copy_vectors(self, ids: Iterable[int], parts: bool = False) -> Vectors:
        """Copy descriptors and whole-photo payloads of the ids that have one (in the order asked); with ``parts``,
        the descriptors of the photos' centres instead (photos stored before them have none)."""
        ids = _ints(ids)
        column = "c.centre" if parts else "c.data"
        rows: dict[int, sa.Row] = {}
        with self.db.read() as conn:
            for chunk in _chunks(ids):
                q = _sql(f"SELECT i.id, i.label, i.fields, {column} AS vector FROM copy_vectors c JOIN images i "
                         f"ON i.id = c.image_id WHERE c.image_id IN :ids AND {column} IS NOT NULL", "ids")  # fmt: skip
                rows.update({int(r.id): r for r in conn.execute(q, {"ids": chunk})})
        return _vectors(ids, rows)

    def iter_copy_vectors(self, chunk: int = 4096, parts: bool = False) -> Iterator[Vectors]:
        """Every copy descriptor (or centre's, ``parts``) in id order, in chunks: for building the collection."""
        column = "centre" if parts else "data"
        q = f"SELECT image_id FROM copy_vectors WHERE image_id > :last AND {column} IS NOT NULL ORDER BY image_id " \
            "LIMIT :n"
        for ids in self._id_chunks(q, chunk):
            found = self.copy_vectors(ids, parts)
            if len(found):
                yield found

    def copy_vector_ids(self, parts: bool = False) -> np.ndarray:
        column = "centre" if parts else "data"
        with self.db.read() as conn:
            rows = conn.execute(sa.text(f"SELECT image_id FROM copy_vectors WHERE {column} IS NOT NULL "
                                        "ORDER BY image_id"))  # fmt: skip
            return np.asarray([int(r[0]) for r in rows], dtype=np.int64)

    # a photo's copy descriptors are complete with its centre's (photos stored before schema version 5 lack it)
    _COMPLETE = "SELECT 1 FROM copy_vectors c WHERE c.image_id = {table}.id AND c.centre IS NOT NULL"

    def without_copy_vector(self, after: int = 0, limit: int = 256) -> list[int]:
        """Photos whose copy descriptors are missing or incomplete (indexed before version 4 or 5, or with the copy
        stage off), in id order after ``after``: what the backfill works through, resumable from any point."""
        with self.db.read() as conn:
            q = sa.text(f"SELECT id FROM images WHERE id > :a AND NOT EXISTS ({self._COMPLETE.format(table='images')})"
                        " ORDER BY id LIMIT :n")  # fmt: skip
            return [int(r[0]) for r in conn.execute(q, {"a": int(after), "n": int(limit)})]

    def count_without_copy_vector(self) -> int:
        with self.db.read() as conn:
            q = f"SELECT COUNT(*) FROM images i WHERE NOT EXISTS ({self._COMPLETE.format(table='i')})"
            return int(conn.execute(sa.text(q)).scalar_one())

    def set_copy_vectors(self, vectors: dict[int, np.ndarray], parts: dict[int, np.ndarray] | None = None) -> int:
        """Store copy descriptors and their centres' of existing photos (the backfill); photos deleted meanwhile are
        skipped. A photo in ``parts`` only keeps its whole descriptor and gets its centre's (schema version 8)."""
        blobs = {int(i): codec.encode_int8(v) for i, v in vectors.items()}
        part_blobs = {int(i): codec.encode_int8(v) for i, v in (parts or {}).items()}
        wanted = sorted(set(blobs) | set(part_blobs))

        def write(conn: Connection) -> int:
            present = []
            for chunk in _chunks(wanted):
                present += [int(r[0]) for r in conn.execute(_sql("SELECT id FROM images WHERE id IN :ids", "ids"),
                                                            {"ids": chunk})]  # fmt: skip
            whole = [i for i in present if i in blobs]
            centre_only = [i for i in present if i not in blobs]
            if whole:
                conn.execute(sa.text("INSERT INTO copy_vectors(image_id, data, centre) VALUES (:i, :d, :p) "
                                     "ON CONFLICT(image_id) DO UPDATE SET data = excluded.data, "
                                     "centre = excluded.centre"),
                             [{"i": i, "d": blobs[i], "p": part_blobs.get(i)} for i in whole])  # fmt: skip
            if centre_only:
                conn.execute(sa.text("UPDATE copy_vectors SET centre = :p WHERE image_id = :i"),
                             [{"i": i, "p": part_blobs[i]} for i in centre_only])  # fmt: skip
            self._feed(conn, [(i, COPY) for i in present])
            return len(present)

        return self.db.retrying(write)

    def remove_images(self, ids: Iterable[int], remember: bool = False, orphans_only: bool = False,
                      keeping: Mapping[int, int] | None = None) -> list[ImageRecord]:  # fmt: skip
        """Delete images with their sources and subjects; returns the records this call deleted. ``remember``: a
        user removed them, so their sources are recorded as removed (``removed_sizes``) and indexing leaves them out.
        ``orphans_only``: only those no source points at, checked in the delete itself (a photo found sourceless a
        moment before may have been given a source by another run since: deleting it lost that run's file).
        ``keeping``: each id is a copy of the photo it maps to, removed only while that photo is still there with a
        file (``_with_sources``), checked in the same transaction; an id it does not map is not removed."""
        records = self.get_many(ids)
        where = " AND NOT EXISTS (SELECT 1 FROM sources s WHERE s.image_id = images.id)" if orphans_only else ""

        def write(conn: Connection) -> list[int]:
            doomed = sorted(records)
            if keeping is not None:
                doomed = [i for i in doomed if i in keeping]
                if self.db.dialect == "postgresql":
                    # the copies' rows first, in the order an index run locks photos (by sha256), then the kept
                    # photos' sources: the other way round a run holding a copy and moving a kept photo's path
                    # deadlocked with this (review)
                    for chunk in _chunks(sorted(doomed, key=lambda i: records[i].sha256)):
                        conn.execute(_sql("SELECT id FROM images WHERE id IN :ids ORDER BY sha256 FOR UPDATE", "ids"),
                                     {"ids": chunk})  # fmt: skip
                kept = self._with_sources(conn, {keeping[i] for i in doomed} - set(doomed))
                doomed = [i for i in doomed if keeping[i] in kept]
            gone: list[int] = []
            if remember:
                now = time.time()
                for chunk in _chunks(doomed):
                    q = _sql("INSERT INTO removed(dir_id, name, removed_at, size) SELECT dir_id, name, :t, size "
                             "FROM sources WHERE image_id IN :ids ON CONFLICT(dir_id, name) DO UPDATE SET "
                             "removed_at = excluded.removed_at, size = excluded.size", "ids")  # fmt: skip
                    conn.execute(q, {"ids": chunk, "t": now})
            delete = _sql(f"DELETE FROM images WHERE id IN :ids{where} RETURNING id", "ids")
            # in the order a run attaching sources locks photos (add_batch: by sha256), so the two never deadlock
            for chunk in _chunks(sorted(doomed, key=lambda i: records[i].sha256)):
                if orphans_only and self.db.dialect == "postgresql":
                    # wait for a run attaching a source to one of them (its insert holds the photo's row) and judge
                    # in a statement of its own, which sees that source once committed: READ COMMITTED judged the
                    # DELETE's NOT EXISTS on a snapshot from before it waited (review)
                    conn.execute(_sql("SELECT id FROM images WHERE id IN :ids ORDER BY sha256 FOR UPDATE", "ids"),
                                 {"ids": chunk})  # fmt: skip
                gone += [int(r[0]) for r in conn.execute(delete, {"ids": chunk})]
            self._feed(conn, [(i, PHOTO | OBJECTS) for i in gone])
            return gone

        return [records[i] for i in self.db.retrying(write)]

    def _with_sources(self, conn: Connection, image_ids: Iterable[int]) -> set[int]:
        """Those of these photos some source still points at. A run that wrote other bytes over a photo's file moves
        its source to the new photo at once and deletes the old one only at its end: a photo kept in place of its
        copies is there for good only while it has a file. On PostgreSQL the source rows are locked (FOR SHARE)
        until the transaction ends: no run can move or delete them meanwhile."""
        lock = " FOR SHARE" if self.dialect == "postgresql" else ""  # (not with DISTINCT: duplicates dropped here)
        found: set[int] = set()
        for chunk in _chunks(sorted(set(_ints(image_ids)))):
            q = _sql(f"SELECT image_id FROM sources WHERE image_id IN :ids{lock}", "ids")
            found |= {int(r[0]) for r in conn.execute(q, {"ids": chunk})}
        return found

    # the change feed -----------------------------------------------------------------------------------------
    def _feed(self, conn: Connection, changes: list[tuple[int, int]]) -> None:
        if not changes:
            return
        self.db.order_feed(conn)
        now = time.time()
        conn.execute(sa.text("INSERT INTO changes(image_id, flags, at) VALUES (:i, :f, :t)"),
                     [{"i": i, "f": f, "t": now} for i, f in changes])  # fmt: skip

    def touch(self, image_ids: Iterable[int], flags: int = PHOTO | OBJECTS) -> None:
        """Append changes without changing rows: makes every follower re-read these photos (repairs)."""
        ids = _ints(image_ids)
        if ids:
            self.db.retrying(lambda conn: self._feed(conn, [(i, flags) for i in ids]))

    def last_seq(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute(sa.text("SELECT COALESCE(MAX(seq), 0) FROM changes")).scalar_one())

    def changes_since(self, seq: int, limit: int = 10_000) -> list[Change]:
        with self.db.read() as conn:
            q = sa.text("SELECT seq, image_id, flags FROM changes WHERE seq > :s ORDER BY seq LIMIT :n")
            rows = conn.execute(q, {"s": int(seq), "n": limit})
            return [Change(int(a), int(b), int(c)) for a, b, c in rows]

    def pruned_upto(self) -> int:
        """Changes numbered below this were deleted: a follower further behind must re-read everything."""
        return int(self.get_meta("changes_pruned_upto") or 0)

    def prune_changes(self, keep_from: int, older_than: float) -> int:
        """Delete changes numbered below ``keep_from`` and older than ``older_than`` seconds; the newest
        change always stays (it carries the feed's high-water mark)."""

        def write(conn: Connection) -> int:
            last = int(conn.execute(sa.text("SELECT COALESCE(MAX(seq), 0) FROM changes")).scalar_one())
            upto = min(int(keep_from), last)
            cutoff = time.time() - older_than
            gone = conn.execute(sa.text("DELETE FROM changes WHERE seq < :u AND at < :c"), {"u": upto, "c": cutoff})
            if gone.rowcount:
                first = conn.execute(sa.text("SELECT MIN(seq) FROM changes")).scalar_one()
                self._set_meta(conn, "changes_pruned_upto", str(int(first)))
            return int(gone.rowcount)

        return self.db.retrying(write)

    # learned transforms -------------------------------------------------------------------------------------------
    def add_transform(self, kind: str, dim: int, fitted_on: int, data: bytes) -> int:
        def write(conn: Connection) -> int:
            return int(conn.execute(sa.text(
                "INSERT INTO transforms(kind, dim, fitted_on, created_at, data) "
                "VALUES (:k, :d, :f, :t, :data) RETURNING version"),
                {"k": kind, "d": dim, "f": fitted_on, "t": time.time(), "data": data}).scalar_one())  # fmt: skip

        return self.db.retrying(write)

    def transform(self, version: int) -> StoredTransform | None:
        """A stored transform, or None when that version is gone."""
        with self.db.read() as conn:
            row = conn.execute(sa.text("SELECT kind, dim, fitted_on, data FROM transforms WHERE version = :v"),
                               {"v": int(version)}).fetchone()  # fmt: skip
        return None if row is None else StoredTransform(row.kind, int(row.dim), int(row.fitted_on), bytes(row.data))

    def delete_transforms(self, keep: Iterable[int]) -> int:
        keep = _ints(keep) or [0]
        with self.db.write() as conn:
            return int(conn.execute(_sql("DELETE FROM transforms WHERE version NOT IN :k", "k"), {"k": keep}).rowcount)

    # sizes ----------------------------------------------------------------------------------------------------------
    def disk_bytes(self) -> int:
        return self.db.disk_bytes()

    def table_bytes(self) -> dict[str, int]:
        return self.db.table_bytes(("images", "copy_vectors", "dirs", "sources", "objects", "detections", "changes",
                                    "transforms", "meta"))  # fmt: skip
