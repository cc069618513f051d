"""Filters on a photo's fields: ``brand = "acme" and price < 100 and tags contains "red"``.

One filter tree, read from a small language (the CLI's ``--where``, the page) or from JSON (the API), checked once,
then evaluated inside the vector engine (lookalike.store.payload for the embedded one) so that a filter matching 1 %
of a library still returns k photos. Never evaluated as code: the text is parsed by a grammar (lark, LALR), the JSON
by its shape, and the values stay values.

The language::

    price < 100 and (brand = "acme" or brand = "bolt") and not organic = true
    tags contains "red"          a list field holds this string
    brand in ["acme", "bolt"]    equal to one of these
    url exists                   the photo has this field

Comparisons are typed: a number compares with numbers, a string with strings (=, != and <, <=, >, >= in code point
order), true/false with booleans; a photo without the field, or with a value of another type, does not match the
comparison (``not`` of it does). JSON: ``{"and": [...]}``, ``{"or": [...]}``, ``{"not": {...}}`` and
``{"field": "price", "op": "<", "value": 100}`` (``op`` one of OPS).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from lookalike.fields import KEY, MAX_INT, MAX_LIST, MAX_TEXT, FieldValue

OPS = ("=", "!=", "<", "<=", ">", ">=", "contains", "in", "exists")
MAX_NODES = 64  # comparisons and connectives in one filter
MAX_DEPTH = 8  # nesting of and/or/not
MAX_CHARS = 4096  # of a filter's text

Scalar = str | int | float | bool


class FilterError(ValueError):
    """A filter that cannot be read or is too large: the message names the problem (a 422 over HTTP)."""


@dataclass(frozen=True)
class Compare:
    field: str
    op: str
    value: Scalar | tuple[Scalar, ...] | None = None  # a tuple for "in", None for "exists"


@dataclass(frozen=True)
class And:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    part: Filter


Filter = Compare | And | Or | Not

GRAMMAR = r"""
?start: disjunction
?disjunction: conjunction ("or"i conjunction)*   -> any_of
?conjunction: negation ("and"i negation)*        -> all_of
?negation: "not"i negation                       -> negate
         | atom
?atom: "(" disjunction ")"
     | NAME OP value                             -> compare
     | NAME "contains"i STRING                   -> contains
     | NAME "in"i "[" [value ("," value)*] "]"   -> one_of
     | NAME "exists"i                            -> exists
?value: STRING -> string
      | NUMBER -> number
      | "true"i -> true
      | "false"i -> false
OP: "!=" | "<=" | ">=" | "=" | "<" | ">"
NAME: /[A-Za-z_][A-Za-z0-9_]*/
STRING: /"(\\.|[^"\\])*"/ | /'(\\.|[^'\\])*'/
NUMBER: /[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?/
%import common.WS
%ignore WS
"""


@lru_cache(maxsize=1)
def _parser():
    from lark import Lark

    return Lark(GRAMMAR, parser="lalr", maybe_placeholders=False)


def parse(text: str) -> Filter:
    """The filter a text says, checked; FilterError naming where it stops making sense."""
    from lark import Token, Transformer, Tree
    from lark.exceptions import LarkError, UnexpectedInput, VisitError

    if len(text) > MAX_CHARS:
        raise FilterError(f"a filter has at most {MAX_CHARS} characters")
    if not text.strip():
        raise FilterError("the filter is empty")
    if _nesting(text) > MAX_DEPTH:
        raise FilterError(f"a filter nests at most {MAX_DEPTH} levels")

    class Build(Transformer):
        def string(self, items: list[Token]) -> str:
            return _unquote(str(items[0]))

        def number(self, items: list[Token]) -> int | float:
            text = str(items[0])
            value = float(text) if any(c in text for c in ".eE") else int(text)
            return _value(value)  # type: ignore[return-value]  # a number in, the number out

        def true(self, _items: list) -> bool:
            return True

        def false(self, _items: list) -> bool:
            return False

        def compare(self, items: list) -> Compare:
            return Compare(_name(str(items[0])), str(items[1]), items[2])

        def contains(self, items: list) -> Compare:
            return Compare(_name(str(items[0])), "contains", _unquote(str(items[1])))

        def one_of(self, items: list) -> Compare:
            return Compare(_name(str(items[0])), "in", _values([i for i in items[1:] if i is not None]))

        def exists(self, items: list) -> Compare:
            return Compare(_name(str(items[0])), "exists")

        def negate(self, items: list) -> Not:
            return Not(items[0])

        def all_of(self, items: list) -> Filter:
            return items[0] if len(items) == 1 else And(tuple(items))

        def any_of(self, items: list) -> Filter:
            return items[0] if len(items) == 1 else Or(tuple(items))

    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        where = getattr(exc, "column", "?")
        raise FilterError(f"cannot read the filter at column {where}: {text[max(0, exc.pos_in_stream or 0):][:30]!r} "
                          "(write e.g. brand = \"acme\" and price < 100)") from None  # fmt: skip
    except LarkError as exc:
        raise FilterError(f"cannot read the filter: {str(exc).splitlines()[0][:200]}") from None
    try:
        built = Build().transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, FilterError):
            raise exc.orig_exc from None
        raise
    except RecursionError:  # "not not not ...": deeper than anything checked would let through
        raise FilterError(f"a filter nests at most {MAX_DEPTH} levels") from None
    if isinstance(built, Tree):  # an unnamed rule left over: cannot happen with this grammar
        raise FilterError("cannot read the filter")
    return checked(built)


def _nesting(text: str) -> int:
    """The deepest nesting of parentheses outside quoted strings (checked before parsing: the tree is walked
    recursively; a long chain of ``not`` is caught as it is walked)."""
    depth = deepest = 0
    quote = None
    escaped = False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    return deepest


def from_json(data: Any) -> Filter:
    """The filter a JSON object says (see the module's docstring), checked."""
    return checked(_from_json(data, 0))


def _from_json(data: Any, depth: int) -> Filter:
    if depth > MAX_DEPTH:
        raise FilterError(f"a filter nests at most {MAX_DEPTH} levels")
    if not isinstance(data, Mapping):
        raise FilterError('a filter is an object: {"field", "op", "value"}, {"and": [...]}, {"or": [...]} '
                          'or {"not": {...}}')  # fmt: skip
    if set(data) == {"and"} or set(data) == {"or"}:
        key = next(iter(data))
        parts = data[key]
        if not isinstance(parts, list) or not parts or len(parts) > MAX_NODES:
            raise FilterError(f'"{key}" takes a list of 1 to {MAX_NODES} filters')
        built = tuple(_from_json(p, depth + 1) for p in parts)
        return And(built) if key == "and" else Or(built)
    if set(data) == {"not"}:
        return Not(_from_json(data["not"], depth + 1))
    if not {"field", "op"} <= set(data) or not set(data) <= {"field", "op", "value"}:
        raise FilterError('a comparison is {"field": NAME, "op": OP, "value": VALUE}')
    op = data["op"]
    if op not in OPS:
        raise FilterError(f"op must be one of {', '.join(OPS)}")
    field = _name(data["field"])
    value = data.get("value")
    if op == "exists":
        return Compare(field, op)
    if op == "in":
        if not isinstance(value, list):
            raise FilterError('"in" takes a list of values')
        return Compare(field, op, _values(value))
    if op == "contains" and not isinstance(value, str):
        raise FilterError('"contains" takes a string')
    return Compare(field, op, _value(value))


def checked(f: Filter) -> Filter:
    """``f`` if it is small enough and every comparison makes sense (ordering needs a number or a string)."""
    nodes = 0

    def walk(node: Filter, depth: int) -> None:
        nonlocal nodes
        nodes += 1
        if depth > MAX_DEPTH:
            raise FilterError(f"a filter nests at most {MAX_DEPTH} levels")
        if nodes > MAX_NODES:
            raise FilterError(f"a filter has at most {MAX_NODES} comparisons and connectives")
        if isinstance(node, (And, Or)):
            for part in node.parts:
                walk(part, depth + 1)
        elif isinstance(node, Not):
            walk(node.part, depth + 1)
        elif node.op in ("<", "<=", ">", ">=") and isinstance(node.value, bool):
            raise FilterError(f"{node.field} {node.op} {str(node.value).lower()}: true/false has no order")

    walk(f, 0)
    return f


def _name(name: object) -> str:
    if not isinstance(name, str) or not KEY.fullmatch(name):
        raise FilterError(f"field name {str(name)[:80]!r}: letters, digits and _, not starting with a digit")
    return name


def _value(value: object) -> Scalar:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise FilterError(f"a number in a filter is out of range (integers up to {MAX_INT})")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError("numbers in a filter must be finite")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise FilterError(f"a string in a filter has at most {MAX_TEXT} characters")
        return value
    raise FilterError("a value is a string, a number or true/false")


def _values(values: list) -> tuple[Scalar, ...]:
    if not values or len(values) > MAX_LIST:
        raise FilterError(f'"in" takes 1 to {MAX_LIST} values')
    return tuple(_value(v) for v in values)


def _unquote(token: str) -> str:
    """A quoted string's text: \\" \\' and \\\\ stand for themselves; nothing else is interpreted."""
    body, out, escaped = token[1:-1], [], False
    for ch in body:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append(ch)
    return _value("".join(out))  # type: ignore[return-value]  # a str in, a str out


# --- evaluation -----------------------------------------------------------------------------------------------
# the comparisons, for Python values and numpy columns alike (lookalike.store.fieldcolumns)
COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
def kind(value: object) -> str:
    """The column a value is kept in: "num", "text", "flag" or "list"."""
    if isinstance(value, bool):
        return "flag"
    if isinstance(value, (int, float)):
        return "num"
    return "list" if isinstance(value, list) else "text"


def matches(f: Filter, fields: Mapping[str, FieldValue]) -> bool:
    """Whether a photo's fields pass ``f``: the reference the engines' evaluations are tested against."""
    if isinstance(f, And):
        return all(matches(p, fields) for p in f.parts)
    if isinstance(f, Or):
        return any(matches(p, fields) for p in f.parts)
    if isinstance(f, Not):
        return not matches(f.part, fields)
    if f.field not in fields:
        return False
    have = fields[f.field]
    if f.op == "exists":
        return True
    if f.op == "contains":
        return isinstance(have, list) and f.value in have
    if f.op == "in":
        assert isinstance(f.value, tuple)
        return any(_same_kind(have, v) and have == v for v in f.value)
    if not _same_kind(have, f.value):
        return False
    return bool(COMPARE[f.op](have, f.value))


def _same_kind(have: object, value: object) -> bool:
    return not isinstance(have, list) and kind(have) == kind(value)


def fields_in(f: Filter) -> set[str]:
    """The field names a filter reads."""
    if isinstance(f, (And, Or)):
        return set().union(*(fields_in(p) for p in f.parts))
    if isinstance(f, Not):
        return fields_in(f.part)
    return {f.field}
