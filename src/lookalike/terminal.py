"""What the CLI prints cannot drive the operator's terminal (issue #24, point 11).

Labels, file names and URLs can come from anyone who may upload over HTTP. Printed raw, ``\\x1b[2J`` clears the
screen, ``\\x1b]0;`` retitles the window and ``\\x1b]8;;`` makes a link that shows one address and opens another.
Every string the CLI's consoles render has its control characters (C0 but newline and tab, DEL, C1) and the
bidirectional overrides shown as visible escapes; JSON output is ASCII (``\\u001b``); rich markup in a value
is shown as text, never interpreted (``[link=...]`` would be a link again).
"""

from __future__ import annotations

import re

from rich.console import Console
from rich.markup import escape

UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """``text`` with every character that could act on a terminal shown as an escape (\\x1b, \\u202e)."""
    return UNSAFE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


def plain(value: object) -> str:
    """A value from the library (a label, a source) for a markup string or a table cell: shown as it is."""
    return escape(visible(str(value)))


class SafeConsole(Console):
    """A rich console that makes control characters visible in everything it renders from a string."""

    def render_str(self, text: str, **kwargs):
        return super().render_str(visible(text), **kwargs)

    def print_json(self, json: str | None = None, **kwargs) -> None:
        super().print_json(json, **{**kwargs, "ensure_ascii": True})
