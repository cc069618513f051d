"""The photos' fields as numpy columns, so that the embedded index evaluates a filter (lookalike.filters) on
every vector at once: a filter matching 1 % of the library gives the index that 1 % as its allowed set before
it searches (no post-filtering that could leave fewer than k hits).

Each field has up to four columns, one per kind of value (a field may hold numbers in some photos and text in
others): numbers (float64, NaN where none), text (int32 codes of interned strings, -1 where none), booleans (int8,
-1 where none), and lists of strings as postings (string code -> rows). Rows are the payload table's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from lookalike.filters import COMPARE as _OPS
from lookalike.filters import And, Compare, Filter, Not, Or, kind


class FieldColumns:
    def __init__(self) -> None:
        self.size = 0
        self.num: dict[str, np.ndarray] = {}
        self.text: dict[str, np.ndarray] = {}
        self.flag: dict[str, np.ndarray] = {}
        self.lists: dict[str, dict[int, set[int]]] = {}
        self.listed: dict[str, np.ndarray] = {}  # rows holding a list in this field (for "exists")
        self.names: list[str] = []
        self.codes: dict[str, int] = {}
        self.rows: dict[int, dict[str, Any]] = {}  # each row's fields as given (to clear them, and to save)

    def grow(self, size: int) -> None:
        """Room for ``size`` rows (the payload table grew)."""
        if size <= self.size:
            return
        for columns, fill, dtype in ((self.num, np.nan, np.float64), (self.text, -1, np.int32),
                                     (self.flag, -1, np.int8), (self.listed, False, bool)):  # fmt: skip
            for name, col in columns.items():
                grown = np.full(size, fill, dtype=dtype)
                grown[: self.size] = col
                columns[name] = grown
        self.size = size

    def _code(self, text: str) -> int:
        if text not in self.codes:
            self.codes[text] = len(self.names)
            self.names.append(text)
        return self.codes[text]

    def _column(self, columns: dict[str, np.ndarray], name: str, fill: Any, dtype: Any) -> np.ndarray:
        if name not in columns:
            columns[name] = np.full(self.size, fill, dtype=dtype)
        return columns[name]

    def put(self, row: int, fields: Mapping[str, Any] | None) -> None:
        """Row ``row`` holds these fields now (none: it holds none)."""
        self.clear(row)
        if not fields:
            return
        self.rows[row] = dict(fields)
        for name, value in fields.items():
            k = kind(value)
            if k == "num":
                self._column(self.num, name, np.nan, np.float64)[row] = float(value)
            elif k == "text":
                self._column(self.text, name, -1, np.int32)[row] = self._code(value)
            elif k == "flag":
                self._column(self.flag, name, -1, np.int8)[row] = int(value)
            else:
                self._column(self.listed, name, False, bool)[row] = True
                postings = self.lists.setdefault(name, {})
                for item in set(value):
                    postings.setdefault(self._code(item), set()).add(row)

    def clear(self, row: int) -> None:
        old = self.rows.pop(row, None)
        if not old:
            return
        for name, value in old.items():
            k = kind(value)
            if k == "num":
                self.num[name][row] = np.nan
            elif k == "text":
                self.text[name][row] = -1
            elif k == "flag":
                self.flag[name][row] = -1
            else:
                self.listed[name][row] = False
                postings = self.lists[name]
                for item in set(value):
                    rows = postings.get(self.codes[item])
                    if rows is not None:
                        rows.discard(row)

    # --- evaluation --------------------------------------------------------------------------------------------
    def mask(self, f: Filter, live: np.ndarray) -> np.ndarray:
        """Rows (of the ``live`` ones) whose fields pass ``f``; the same answer as ``lookalike.filters.matches``."""
        if isinstance(f, And):
            out = live.copy()
            for part in f.parts:
                out &= self.mask(part, live)
            return out
        if isinstance(f, Or):
            out = np.zeros_like(live)
            for part in f.parts:
                out |= self.mask(part, live)
            return out
        if isinstance(f, Not):
            return live & ~self.mask(f.part, live)
        return live & self._compare(f)

    def _compare(self, c: Compare) -> np.ndarray:
        none = np.zeros(self.size, dtype=bool)
        if c.op == "exists":
            out = none.copy()
            if c.field in self.num:
                out |= ~np.isnan(self.num[c.field])
            for columns in (self.text, self.flag):
                if c.field in columns:
                    out |= columns[c.field] >= 0
            if c.field in self.listed:
                out |= self.listed[c.field]
            return out
        if c.op == "contains":
            out = none.copy()
            code = self.codes.get(c.value) if isinstance(c.value, str) else None
            rows = self.lists.get(c.field, {}).get(code, set()) if code is not None else set()
            if rows:
                out[np.fromiter(rows, dtype=np.int64, count=len(rows))] = True
            return out
        if c.op == "in":
            assert isinstance(c.value, tuple)
            out = none.copy()
            for each in c.value:
                out |= self._compare(Compare(c.field, "=", each))
            return out
        value = c.value
        assert value is not None and not isinstance(value, tuple)  # "exists" and "in" are answered above
        k = kind(value)
        if k == "num":
            col = self.num.get(c.field)
            if col is None:
                return none
            with np.errstate(invalid="ignore"):
                return _OPS[c.op](col, float(value)) & ~np.isnan(col)
        if k == "flag":
            col = self.flag.get(c.field)
            return none if col is None else (col >= 0) & _OPS[c.op](col, int(value))
        col = self.text.get(c.field)
        if col is None:
            return none
        if c.op in ("=", "!="):
            code = self.codes.get(str(value))
            if code is None:
                return none if c.op == "=" else col >= 0
            return _OPS[c.op](col, code) & (col >= 0)
        # an order on text: the codes of the strings that pass, then the rows holding one of them
        passing = np.fromiter((i for i, name in enumerate(self.names) if _OPS[c.op](name, value)), dtype=np.int32)
        return np.isin(col, passing) & (col >= 0)

    # --- persistence -------------------------------------------------------------------------------------------
    @classmethod
    def loads(cls, text: str, size: int) -> FieldColumns:
        """Columns for ``size`` rows from the rows' fields as saved (JSON: row -> fields)."""
        columns = cls()
        columns.grow(size)
        for row, fields in json.loads(text).items():
            columns.put(int(row), fields)
        return columns
