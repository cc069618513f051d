"""What a vector index keeps beside each vector, and the filters it answers from it.

Every backend stores the same payload so that filters run inside the engine (a Milvus boolean
expression, an Elasticsearch filter, a numpy mask in the embedded index) instead of shipping long id
lists: the photo's id, which entry of the photo this is (0 = the whole photo, 1.. = a detected subject),
the photo's label, and for subjects the detector's label, box (x1, y1, x2, y2 in original pixels) and
score; and the photo's fields (lookalike.fields), which every engine filters on (``where["fields"]``, a
lookalike.filters filter; the server engines refuse what their filter language cannot say exactly). The catalog
stays the source of truth; payloads are written from it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.filters import And, Compare, Not, Or
from lookalike.store.fieldcolumns import FieldColumns

FIELDS = ("photo_id", "object", "label", "detected_label", "box", "score", "fields")
FILTERABLE = {"photo_id": int, "object": int, "label": str, "detected_label": str}
NO_BOX = (0.0, 0.0, 0.0, 0.0)


class UnsupportedFilter(ValueError):
    """A filter this engine cannot run exactly (e.g. Milvus's 'not' on fields, Tencent's text order): said, never
    ignored."""


def whole_photo(photo_id: int, label: str | None = None, fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"photo_id": int(photo_id), "object": 0, "label": label or "", "detected_label": "", "box": NO_BOX,
            "score": 0.0, "fields": dict(fields or {})}  # fmt: skip


def normalise(payload: Mapping[str, Any] | None, vector_id: int) -> dict[str, Any]:
    """A complete payload; missing fields take the whole-photo defaults (photo id = vector id)."""
    out = whole_photo(vector_id)
    if payload:
        unknown = set(payload) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown payload field(s): {', '.join(sorted(unknown))}")
        out.update({k: v for k, v in payload.items() if v is not None})
    out["photo_id"], out["object"], out["score"] = int(out["photo_id"]), int(out["object"]), float(out["score"])
    out["label"], out["detected_label"] = str(out["label"]), str(out["detected_label"])
    out["fields"] = dict(out["fields"] or {})
    box = tuple(float(x) for x in out["box"])
    if len(box) != 4:
        raise ValueError("a payload box has 4 numbers: x1, y1, x2, y2")
    out["box"] = box
    return out


def payload_list(payloads: Iterable[Mapping[str, Any] | None] | None, ids: np.ndarray) -> list[dict[str, Any]]:
    if payloads is None:
        return [normalise(None, int(i)) for i in ids.tolist()]
    return [normalise(p, int(i)) for p, i in zip(payloads, ids.tolist(), strict=True)]


def check_where(where: Mapping[str, Any] | None, engine: str | None = None) -> dict[str, Any]:
    """Validate an equality filter {field: value}; only the filterable fields, with their types; and under
    ``"fields"`` a filter on the photos' fields, which only the embedded index runs here (``engine`` names
    another, which says it cannot: each server engine translates it before, lookalike.store.milvus.
    fields_expression, lookalike.store.elastic.fields_query, lookalike.store.tencent.fields_expression)."""
    if not where:
        return {}
    out: dict[str, Any] = {}
    for key, value in where.items():
        if key == "fields":
            if engine is not None:
                raise UnsupportedFilter(f"{engine} cannot filter on fields here: its adapter translates the filter "
                                        "before (a bug if this is seen)")  # fmt: skip
            if not isinstance(value, (Compare, And, Or, Not)):
                raise ValueError("a fields filter is a lookalike.filters filter")
            out[key] = value
            continue
        if key not in FILTERABLE:
            raise ValueError(f"cannot filter on {key!r}: one of {', '.join(FILTERABLE)}")
        kind = FILTERABLE[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"filter {key} needs a {kind.__name__}")
        out[key] = value
    return out


class PayloadTable:
    """Columnar payloads for the embedded index: numpy columns, labels interned, an id -> row map."""

    def __init__(self) -> None:
        self.rows: dict[int, int] = {}
        self.free: list[int] = []
        self.names: list[str] = [""]
        self.codes: dict[str, int] = {"": 0}
        self.cols = self._empty(0)
        self.fields = FieldColumns()

    @staticmethod
    def _empty(n: int) -> dict[str, np.ndarray]:
        return {
            "id": np.full(n, -1, dtype=np.int64),
            "photo_id": np.zeros(n, dtype=np.int64),
            "object": np.zeros(n, dtype=np.int32),
            "label": np.zeros(n, dtype=np.int32),
            "detected_label": np.zeros(n, dtype=np.int32),
            "box": np.zeros((n, 4), dtype=np.float32),
            "score": np.zeros(n, dtype=np.float32),
        }

    def __len__(self) -> int:
        return len(self.rows)

    def _code(self, name: str) -> int:
        if name not in self.codes:
            self.codes[name] = len(self.names)
            self.names.append(name)
        return self.codes[name]

    def _row(self, vector_id: int) -> int:
        row = self.rows.get(vector_id)
        if row is not None:
            return row
        if not self.free:
            size = len(self.cols["id"])
            grown = self._empty(max(1024, size * 2))
            for key, col in self.cols.items():
                grown[key][:size] = col
            self.cols = grown
            self.fields.grow(len(grown["id"]))
            self.free = list(range(len(grown["id"]) - 1, size - 1, -1))
        row = self.free.pop()
        self.rows[vector_id] = row
        return row

    def put(self, ids: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        if not len(ids):
            return
        rows = np.fromiter((self._row(i) for i in ids.tolist()), dtype=np.int64, count=len(ids))
        c = self.cols
        c["id"][rows] = ids
        c["photo_id"][rows] = [p["photo_id"] for p in payloads]
        c["object"][rows] = [p["object"] for p in payloads]
        c["label"][rows] = [self._code(p["label"]) for p in payloads]
        c["detected_label"][rows] = [self._code(p["detected_label"]) for p in payloads]
        c["box"][rows] = [p["box"] for p in payloads]
        c["score"][rows] = [p["score"] for p in payloads]
        for row, p in zip(rows.tolist(), payloads, strict=True):
            self.fields.put(row, p.get("fields"))

    def remove(self, ids: np.ndarray) -> None:
        for vector_id in ids.tolist():
            row = self.rows.pop(vector_id, None)
            if row is not None:
                self.cols["id"][row] = -1
                self.fields.clear(row)
                self.free.append(row)

    def get(self, ids: np.ndarray) -> list[dict[str, Any] | None]:
        c = self.cols
        out: list[dict[str, Any] | None] = []
        for vector_id in ids.tolist():
            row = self.rows.get(vector_id)
            if row is None:
                out.append(None)
                continue
            out.append({"photo_id": int(c["photo_id"][row]), "object": int(c["object"][row]),
                        "label": self.names[c["label"][row]], "detected_label": self.names[c["detected_label"][row]],
                        "box": tuple(float(x) for x in c["box"][row]), "score": float(c["score"][row]),
                        "fields": dict(self.fields.rows.get(row, {}))})  # fmt: skip
        return out

    def select(self, where: Mapping[str, Any]) -> np.ndarray:
        """Vector ids whose payload matches every field of ``where``."""
        c = self.cols
        mask = c["id"] >= 0
        for key, value in where.items():
            if key == "fields":
                continue  # last, on the rows the equalities left
            if key in ("label", "detected_label"):
                code = self.codes.get(value)
                if code is None:
                    return np.empty(0, dtype=np.int64)
                mask &= c[key] == code
            else:
                mask &= c[key] == value
        if "fields" in where:
            mask = self.fields.mask(where["fields"], mask)
        return np.sort(c["id"][mask])

    def select_photos(self, photo_ids: np.ndarray) -> np.ndarray:
        """Vector ids whose payload belongs to one of these photos."""
        c = self.cols
        mask = (c["id"] >= 0) & np.isin(c["photo_id"], np.asarray(photo_ids, dtype=np.int64))
        return np.sort(c["id"][mask])

    def save(self, path: Path) -> None:
        keep = self.cols["id"] >= 0
        # Any: mypy matches **columns against savez's allow_pickle: bool too (no column has that name)
        columns: dict[str, Any] = {k: v[keep] for k, v in self.cols.items()}
        rows = np.flatnonzero(keep)  # saved rows are renumbered 0..n-1 in this order
        held = self.fields.rows
        renumbered = {str(new): held[old] for new, old in enumerate(rows.tolist()) if old in held}
        with open(path, "wb") as fh:
            # the records as UTF-8 bytes: a numpy string array would hold them as UTF-32, four times the size
            records = np.frombuffer(json.dumps(renumbered, ensure_ascii=False).encode(), dtype=np.uint8)
            np.savez(fh, names=np.array(json.dumps(self.names)), fields=records, **columns)

    @classmethod
    def load(cls, path: Path) -> PayloadTable:
        table = cls()
        with np.load(path) as data:
            table.names = json.loads(str(data["names"]))
            table.codes = {name: i for i, name in enumerate(table.names)}
            table.cols = {k: data[k].copy() for k in table.cols}
            given = data["fields"].tobytes().decode() if "fields" in data else "{}"  # saved before fields: none
        table.fields = FieldColumns.loads(given, len(table.cols["id"]))
        table.rows = {int(i): row for row, i in enumerate(table.cols["id"].tolist())}
        return table
