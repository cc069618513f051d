"""What fields a library's photos have: each field's kinds, how many photos hold it, the range of its numbers and,
when they are few, its strings (and the strings of its lists) with their counts. What a filter bar offers.

Read by the database from the records' JSON (SQLite's json_each, PostgreSQL's jsonb_each), grouped there: one pass
over the photos and a small query for each field with few strings, nothing held between calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from lookalike.store.catalog.database import Database

FEW = 20  # a text or list field with at most this many different strings lists them

# the database's name of a JSON value's type -> ours (lookalike.filters.kind)
KINDS = {"integer": "num", "real": "num", "number": "num", "text": "text", "string": "text", "true": "flag",
         "false": "flag", "boolean": "flag", "array": "list"}  # fmt: skip

SUMMARY = {
    "sqlite": """
        SELECT j.key AS name, j.type AS type, COUNT(*) AS n,
               MIN(CASE WHEN j.type IN ('integer', 'real') THEN j.value END) AS lo,
               MAX(CASE WHEN j.type IN ('integer', 'real') THEN j.value END) AS hi,
               COUNT(DISTINCT CASE WHEN j.type = 'text' THEN j.value END) AS distinct_n
        FROM images i, json_each(i.fields) j WHERE i.fields IS NOT NULL GROUP BY j.key, j.type""",
    "postgresql": """
        SELECT j.key AS name, jsonb_typeof(j.value) AS type, COUNT(*) AS n,
               MIN(CASE WHEN jsonb_typeof(j.value) = 'number' THEN (j.value #>> '{}')::double precision END) AS lo,
               MAX(CASE WHEN jsonb_typeof(j.value) = 'number' THEN (j.value #>> '{}')::double precision END) AS hi,
               COUNT(DISTINCT CASE WHEN jsonb_typeof(j.value) = 'string' THEN j.value #>> '{}' END) AS distinct_n
        FROM images i, jsonb_each(i.fields::jsonb) j WHERE i.fields IS NOT NULL GROUP BY 1, 2""",
}
TEXTS = {
    "sqlite": """SELECT j.value AS v, COUNT(*) AS n FROM images i, json_each(i.fields) j
                 WHERE i.fields IS NOT NULL AND j.key = :k AND j.type = 'text' GROUP BY j.value
                 ORDER BY n DESC, v LIMIT :few""",
    "postgresql": """SELECT j.value #>> '{}' AS v, COUNT(*) AS n FROM images i, jsonb_each(i.fields::jsonb) j
                     WHERE i.fields IS NOT NULL AND j.key = :k AND jsonb_typeof(j.value) = 'string'
                     GROUP BY 1 ORDER BY n DESC, v LIMIT :few""",
}
ITEMS = {
    "sqlite": """SELECT t.value AS v, COUNT(*) AS n FROM images i, json_each(i.fields) j, json_each(j.value) t
                 WHERE i.fields IS NOT NULL AND j.key = :k AND j.type = 'array' GROUP BY t.value
                 ORDER BY n DESC, v LIMIT :few""",
    "postgresql": """SELECT t AS v, COUNT(*) AS n FROM images i, jsonb_each(i.fields::jsonb) j,
                     jsonb_array_elements_text(j.value) t
                     WHERE i.fields IS NOT NULL AND j.key = :k AND jsonb_typeof(j.value) = 'array'
                     GROUP BY 1 ORDER BY n DESC, v LIMIT :few""",
}


@dataclass
class FieldInfo:
    name: str
    photos: dict[str, int] = field(default_factory=dict)  # kind -> photos holding a value of that kind
    low: float | None = None  # of its numbers
    high: float | None = None
    values: dict[str, int] | None = None  # its strings (or its lists' strings) -> photos, when at most FEW
    items: set[str] = field(default_factory=set)  # which of ``values`` are strings in lists (``contains`` finds them)
    texts: set[str] = field(default_factory=set)  # which of ``values`` are strings on their own (``=`` finds them)

    def as_dict(self) -> dict:
        return {"name": self.name, "photos": self.photos, "min": self.low, "max": self.high, "values": self.values,
                "items": sorted(self.items), "texts": sorted(self.texts)}  # fmt: skip


def summary(db: Database) -> list[FieldInfo]:
    """Every field of the library's photos, by name."""
    found: dict[str, FieldInfo] = {}
    with db.read() as conn:
        for row in conn.execute(sa.text(SUMMARY[db.dialect])):
            info = found.setdefault(row.name, FieldInfo(row.name))
            kind = KINDS.get(row.type)
            if kind is None:
                continue
            info.photos[kind] = info.photos.get(kind, 0) + int(row.n)
            if kind == "num" and row.lo is not None:
                info.low = float(row.lo) if info.low is None else min(info.low, float(row.lo))
                info.high = float(row.hi) if info.high is None else max(info.high, float(row.hi))
            if kind == "text" and int(row.distinct_n) <= FEW:
                texts = _counts(conn, TEXTS[db.dialect], row.name)
                info.values, info.texts = _add(info.values, texts), set(texts)
        for info in found.values():
            if "list" in info.photos:
                items = _counts(conn, ITEMS[db.dialect], info.name, FEW + 1)
                if len(items) <= FEW:
                    info.values, info.items = _add(info.values, items), set(items)
    return sorted(found.values(), key=lambda f: f.name)


def _add(counts: dict[str, int] | None, more: dict[str, int]) -> dict[str, int]:
    """Photos per string: a string that is a field's text in some photos and in its lists in others counts both."""
    out = dict(counts or {})
    for value, n in more.items():
        out[value] = out.get(value, 0) + n
    return out


def _counts(conn: sa.Connection, query: str, name: str, few: int = FEW) -> dict[str, int]:
    return {str(r.v): int(r.n) for r in conn.execute(sa.text(query), {"k": name, "few": few})}
