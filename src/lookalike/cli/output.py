"""What the CLI prints, and how: the two consoles, a failure's one line, values and paths as people read them."""

from __future__ import annotations

from typing import NoReturn

import typer
import typer.core

from lookalike.terminal import SafeConsole, plain

SHOWN = 20  # rows of a long list printed before "... and N more"
console = SafeConsole(stderr=True)  # control characters in what is printed are shown, never acted on
out = SafeConsole(soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[bold red]error:[/] {plain(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def readable(value: object) -> str:
    """A value as a person reads it, not as Python prints it (no braces, brackets or quotes)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {readable(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "\n".join(readable(v) for v in value)
    return str(value)


def short_path(source: str, longest: int = 40) -> str:
    """A path for a table cell: its folder and file name when it is long (``--json`` has the whole of it), so a
    row stays one line at 80 columns instead of a path folded over several."""
    if len(source) <= longest or "://" in source:
        return source
    parts = source.replace("\\", "/").rstrip("/").split("/")
    return "…/" + "/".join(parts[-2:]) if len(parts) > 2 else source
