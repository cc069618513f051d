"""A photo's fields: the user's record beside the photo (title, link, price, brand, tags), shown on every hit.

Fields come from the extra columns of a CSV, the ``fields`` of a JSON-lines manifest, an upload's ``fields``, or
are set later (``lookalike set``, ``PATCH /api/v1/images/{id}``). A value is a string, a number (int or float), a
boolean or a list of strings; nothing else, so that every vector engine can filter on it. Limits keep one photo's
record small (it travels with every hit and into every engine's payload): see the constants.

Types of CSV columns are inferred per column (every non-empty cell of a column an integer: int; a number: float;
true/false: bool; else str) and can be given (``--field price:float``, ``--field tags:list``: a list is written
``a|b|c`` in a cell).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

FieldValue = str | int | float | bool | list[str]
Fields = dict[str, FieldValue]

MAX_FIELDS = 64  # per photo
MAX_KEY = 64  # characters of a field's name
MAX_TEXT = 2000  # characters of a string value, and of each string in a list
MAX_LIST = 100  # strings in a list
MAX_BYTES = 16_384  # a photo's fields as JSON
MAX_INT = 2**53  # integers beyond this are not exact as the float64 a filter compares (lookalike.store.fieldcolumns)
INT = re.compile(r"-?(0|[1-9][0-9]*)")  # a cell read as an int: no leading zeros (a code, an EAN stays text), no +, _
FLOAT = re.compile(r"-?(0|[1-9][0-9]*)?\.[0-9]+([eE][-+]?[0-9]+)?|-?(0|[1-9][0-9]*)[eE][-+]?[0-9]+")
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
RESERVED = frozenset({"path", "label", "fields"})  # what a CSV row or a manifest line says besides fields
KINDS = ("str", "int", "float", "bool", "list")
LIST_SEPARATOR = "|"
TRUE, FALSE = frozenset({"true", "yes"}), frozenset({"false", "no"})


class FieldError(ValueError):
    """A field or a set of fields that cannot be stored (bad name, type or size): the message names it."""


NOT_UNICODE = "not valid Unicode text (it holds a lone UTF-16 surrogate, such as the JSON escape \\ud800)"


def valid_unicode(text: str) -> bool:
    """Whether ``text`` can be stored and sent as UTF-8: JSON may hold a lone surrogate escape ("\\ud800"), which
    Python reads into a string no database, engine or JSON answer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def replace_surrogates(value: Any) -> Any:
    """``value`` (JSON: strings, lists, dicts, numbers) with each lone surrogate as its escape ('\\ud800'), so that
    something stored before surrogates were refused can still be shown."""
    if isinstance(value, str):
        return value if valid_unicode(value) else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {replace_surrogates(k): replace_surrogates(v) for k, v in value.items()}
    return value


def check_key(key: object) -> str:
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise FieldError(f"field name {str(key)[:80]!r}: letters, digits and _, not starting with a digit, "
                         f"at most {MAX_KEY} characters")  # fmt: skip
    if key in RESERVED:
        raise FieldError(f"field name {key!r} is reserved ({', '.join(sorted(RESERVED))})")
    return key


def check_value(key: str, value: object) -> FieldValue:
    """``value`` as a field value, or FieldError naming ``key``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise FieldError(f"field {key!r}: integers up to {MAX_INT} (a longer code is text: quote it)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FieldError(f"field {key!r}: numbers must be finite")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise FieldError(f"field {key!r}: at most {MAX_TEXT} characters")
        if "\x00" in value:
            raise FieldError(f"field {key!r}: a NUL character")
        if not valid_unicode(value):
            raise FieldError(f"field {key!r}: {NOT_UNICODE}")
        return value
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            raise FieldError(f"field {key!r}: at most {MAX_LIST} items in a list")
        if not all(isinstance(v, str) for v in value):
            raise FieldError(f"field {key!r}: a list holds strings only")
        return [str(check_value(key, v)) for v in value]
    raise FieldError(f"field {key!r}: a string, a number, true/false or a list of strings, not {type(value).__name__}")


def check_fields(fields: object) -> Fields:
    """A validated copy of a photo's fields (a JSON object), or FieldError."""
    if not isinstance(fields, Mapping):
        raise FieldError("fields must be an object of name: value")
    if len(fields) > MAX_FIELDS:
        raise FieldError(f"at most {MAX_FIELDS} fields per photo, got {len(fields)}")
    out = {check_key(k): check_value(k, v) for k, v in fields.items()}
    if len((dumps(out) or "").encode()) > MAX_BYTES:
        raise FieldError(f"a photo's fields take at most {MAX_BYTES} bytes as JSON")
    return out


def merged(fields: Mapping[str, FieldValue], changes: Mapping[str, FieldValue | None]) -> Fields:
    """``fields`` with ``changes`` applied key by key (a None deletes the key), checked."""
    out = dict(fields)
    for key, value in changes.items():
        if value is None:
            out.pop(check_key(key), None)
        else:
            out[check_key(key)] = check_value(key, value)
    return check_fields(out)


def dumps(fields: Mapping[str, FieldValue] | None) -> str | None:
    """The catalog's text of a photo's fields (None for none): compact, keys sorted, so equal fields compare equal."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False) if fields else None


def loads(text: str | None) -> Fields:
    return json.loads(text) if text else {}


# --- text (CSV cells, `lookalike set key=value`) into typed values ---------------------------------------------
def parse_kinds(specs: Iterable[str]) -> dict[str, str]:
    """``["price:float", "tags:list"]`` -> {"price": "float", "tags": "list"}, or FieldError."""
    out = {}
    for spec in specs:
        key, sep, kind = spec.partition(":")
        if not sep or kind not in KINDS:
            raise FieldError(f"--field {spec!r}: write NAME:TYPE with TYPE one of {', '.join(KINDS)}")
        out[check_key(key.strip())] = kind
    return out


def kind_of(cell: str) -> str:
    """The narrowest kind a non-empty cell can be read as."""
    text = cell.strip()
    if text.lower() in TRUE | FALSE:
        return "bool"
    if INT.fullmatch(text):
        return "int" if abs(int(text)) <= MAX_INT else "str"
    if FLOAT.fullmatch(text) and math.isfinite(float(text)):
        return "float"
    return "str"


def infer_kind(cells: Iterable[str]) -> str:
    """A column's kind from its non-empty cells: the narrowest that reads every one (int < float < str)."""
    return common_kind({kind_of(c) for c in cells if c.strip()})


def common_kind(kinds: set[str]) -> str:
    """The narrowest kind that reads cells of all these kinds."""
    if len(kinds) == 1:
        return next(iter(kinds))
    return "float" if kinds == {"int", "float"} else "str"


def parse_cell(key: str, cell: str, kind: str) -> FieldValue:
    """A cell read as ``kind``, or FieldError naming the field."""
    text = cell.strip()
    try:
        if kind == "int":
            return check_value(key, int(text))
        if kind == "float":
            return check_value(key, float(text))
        if kind == "bool":
            if text.lower() not in TRUE | FALSE:
                raise ValueError(text)
            return text.lower() in TRUE
        if kind == "list":
            return check_value(key, [part.strip() for part in text.split(LIST_SEPARATOR) if part.strip()])
    except (ValueError, OverflowError):
        raise FieldError(f"field {key!r}: {text[:40]!r} is not a {kind}") from None
    return check_value(key, cell)


def parse_assignment(text: str) -> tuple[str, FieldValue | None]:
    """``key=value`` from the command line: a JSON value when it reads as one (12.5, true, ["a","b"],
    "quoted"), else the text itself; ``key=`` deletes the field."""
    key, sep, value = text.partition("=")
    if not sep:
        raise FieldError(f"{text[:80]!r}: write NAME=VALUE (NAME= removes the field)")
    key = check_key(key.strip())
    if value == "":
        return key, None
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    if parsed is None or isinstance(parsed, dict):
        parsed = value
    return key, check_value(key, parsed)


def render(value: Any) -> str:
    """A field's value for a table cell."""
    if isinstance(value, list):
        return ", ".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
