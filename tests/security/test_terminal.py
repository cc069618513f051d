"""Issue #24, point 11: labels and file names (which HTTP callers choose) cannot drive the operator's terminal."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from rich.table import Table

from tests.conftest import photo
from tests.services import cli

# a red background, a window title, a hidden link (OSC 8), a screen clear, a C1 CSI, a bidi override, markup
HOSTILE = "\x1b[41mred\x1b]0;pwned\x07 \x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\ \x1b[2J \x9b31m \u202eabc"
MARKUP = "[link=http://evil.example]click[/link]"


def test_control_characters_are_printed_as_visible_escapes(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(photo("goldfish", 0), folder / "fish\x1b[2J\x1b]0;title\x07.jpg")
    home = tmp_path / "home"
    assert cli(home, "index", str(folder), "--label", HOSTILE + MARKUP).returncode == 0
    for args in (("search", str(photo("goldfish", 0))), ("search", str(photo("goldfish", 0)), "--json"),
                 ("duplicates",), ("jobs",), ("index", str(folder))):  # fmt: skip
        run = cli(home, *args)
        assert run.returncode == 0, (args, run.stderr[-1500:])
        printed = run.stdout + run.stderr
        for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert raw not in printed, (args, raw, printed[:600])
        if args[0] == "search":
            assert ("\\x1b" in printed or "\\u001b" in printed) and "fish" in printed, printed[:600]


def test_on_a_real_terminal_markup_in_a_value_is_not_turned_into_a_link() -> None:
    """rich makes OSC 8 links of [link=...] markup on a terminal: a label's markup is shown as typed."""
    from lookalike.terminal import SafeConsole, plain

    buffer = io.StringIO()
    console = SafeConsole(file=buffer, force_terminal=True, width=400)
    table = Table()
    table.add_column("label")
    table.add_row(plain(MARKUP + HOSTILE))
    console.print(table)
    console.print(f"[bold]error:[/] {plain(MARKUP)}", highlight=False)
    printed = buffer.getvalue()
    assert "\x1b]" not in printed  # no OSC sequence at all: no link, no window title
    assert "\x1b[2J" not in printed and "\x1b[41m" not in printed and "\x9b" not in printed
    assert printed.count(MARKUP) == 2 and "\\x1b[41m" in printed
