"""``lookalike index``: photos into the library, and the report of what happened to each."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
import typer.core
from rich.table import Table

from lookalike.cli.app import State, app, open_library, user_errors
from lookalike.cli.output import SHOWN, console, fail, out
from lookalike.cli.progress import progress_bar
from lookalike.terminal import plain

# the library and its dependencies (numpy, Pillow, SQLAlchemy, the model runtime) are imported by the
# commands that use them, so `lookalike --help` starts in a fraction of a second (bench/RESULTS.md)
if TYPE_CHECKING:
    from lookalike.ingest.pipeline import IndexReport
    from lookalike.library import Library


def _run_index(lib: Library, paths: list[str], label: str | None, prune: bool, quiet: bool, objects: bool = False,
               include_removed: bool = False, kinds: dict[str, str] | None = None,
               prune_empty: bool = False) -> IndexReport:  # fmt: skip
    with progress_bar("indexing") as bar:
        task = bar.add_task("indexing", total=None, rate="")

        def update(done: int, total: int, report: IndexReport) -> None:
            elapsed = bar.tasks[task].elapsed or 0
            processed = done - report.unchanged
            rate = f"{processed / elapsed:.0f} img/s" if elapsed > 0 and processed else ""
            bar.update(task, completed=done, total=total, rate=rate)

        return lib.index(paths, label=label, prune=prune, on_progress=None if quiet else update, objects=objects,
                         include_removed=include_removed, kinds=kinds, prune_empty=prune_empty)  # fmt: skip


@app.command()
def index(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="folders, CSV files (path,label + any field columns), JSON-lines manifests, URL lists, files or URLs"
        ),
    ],
    label: Annotated[str | None, typer.Option(help="label for every photo (default: CSV label or folder name)")] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field", help="a CSV field column's type, NAME:TYPE (str, int, float, bool, list); else inferred"
        ),
    ] = None,
    prune: Annotated[bool, typer.Option(help="remove photos whose files vanished from the named folders")] = False,
    prune_empty: Annotated[
        bool,
        typer.Option(
            "--prune-empty",
            help="--prune, even in a folder (named or below it) that lists no file at all (left alone by "
            "--prune: an unmounted disk looks the same)",
        ),
    ] = False,
    objects: Annotated[bool, typer.Option("--objects", help="also index each detected subject of each photo")] = False,
    include_removed: Annotated[
        bool, typer.Option("--include-removed", help="also index files removed before with `lookalike remove`")
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(help="embedding model of a new library: a built-in or a model folder (`lookalike models`)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Index photos (incremental: unchanged files are skipped, duplicates stored once, removed files left out)."""
    if model is not None:
        State.overrides["model"] = model
    kinds = field_kinds(field)
    prune = prune or prune_empty  # --prune-empty is --prune that also empties a folder that lists nothing
    lib = open_library()
    try:
        report = _run_index(lib, paths, label, prune, quiet=as_json, objects=objects,
                            include_removed=include_removed, kinds=kinds, prune_empty=prune_empty)  # fmt: skip
    except user_errors() as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: everything committed so far is kept; run the same command to resume")
        raise typer.Exit(130) from None
    finally:
        lib.close()
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        _print_report(report, prune)
    if nothing_indexed(report):
        raise typer.Exit(1)  # a script must not read a run that took none of its files as done


def nothing_indexed(r: IndexReport) -> bool:
    """Whether every file a run listed was rejected: none added, updated, known or unchanged."""
    return bool(r.rejected) and not (r.added or r.updated or r.duplicates or r.unchanged or r.videos or r.frames
                                     or r.detected)  # fmt: skip


def field_kinds(specs: list[str] | None) -> dict[str, str] | None:
    from lookalike.fields import FieldError, parse_kinds

    try:
        return parse_kinds(specs) if specs else None
    except FieldError as exc:
        fail(str(exc))


def _print_report(r: IndexReport, prune: bool = False) -> None:
    if r.excluded:
        shown = ", ".join(plain(x) for x in r.excluded[:3]) + (f" and {len(r.excluded) - 3} more" if len(r.excluded) > 3
                                                               else "")  # fmt: skip
        out.print(f"[dim]left out {len(r.excluded)} file(s) removed before with `lookalike remove` ({shown}); "
                  "`index --include-removed` adds them back", highlight=False)  # fmt: skip
    if r.total == 0 and not r.excluded:  # (files that were there but removed before are said above)
        console.print("nothing to index: no files there (hidden files and folders are skipped)")
    if r.total == 0 and not r.vanished and not r.rejected:
        return
    out.print(
        f"[bold]{len(r.added)}[/] added, {r.updated} updated, {len(r.duplicates)} duplicates, "
        f"{r.unchanged} unchanged, {len(r.rejected)} rejected, {len(r.vanished)} vanished"
        + (f" ({r.pruned} pruned)" if r.pruned else "")
        + (f"; {r.videos} video(s) with {r.frames} new frames" if r.videos else "")
        + (
            f"; {r.subjects} subjects found" + (f" ({r.detected} indexed photos got theirs)" if r.detected else "")
            if r.subjects or r.detected
            else ""
        )
        + f" in {r.seconds:.1f} s ({r.rate:.0f} img/s)",
        highlight=False,
    )
    if r.near_duplicates:
        out.print(f"[dim]near-duplicates (the same picture as a photo already indexed): {len(r.near_duplicates)}")
        for d in r.near_duplicates[:SHOWN]:
            out.print(f"  {plain(d.source)} (image {d.image_id}): the same picture as image {d.of} (copy confidence "
                      f"{d.confidence:.2f}; `lookalike duplicates` says which to keep)", highlight=False)  # fmt: skip
        if len(r.near_duplicates) > SHOWN:
            out.print(f"  ... and {len(r.near_duplicates) - SHOWN} more (--json lists all; `lookalike duplicates`)")
    if r.duplicates:
        out.print(f"[dim]duplicates (stored once): {len(r.duplicates)}")
        for dup in r.duplicates[:SHOWN]:
            out.print(f"  {plain(dup.source)} = image {dup.image_id}", highlight=False)
        if len(r.duplicates) > SHOWN:
            out.print(f"  ... and {len(r.duplicates) - SHOWN} more (--json lists all)")
    if r.rejected:
        table = Table(title="rejected (skipped)", title_justify="left")
        table.add_column("source", overflow="fold")
        table.add_column("reason", overflow="fold")
        for rej in r.rejected:
            table.add_row(plain(rej.source), plain(rej.reason))
        out.print(table)
    gone = r.doomed if prune else []
    if gone:  # what --prune took out of the library is said by name, as what it kept is
        out.print(f"{len(gone)} indexed file(s) no longer exist and were pruned:", highlight=False)
        for v in gone[:10]:
            out.print(f"  {plain(v)}", highlight=False)
        if len(gone) > 10:
            out.print(f"  ... and {len(gone) - 10} more (--json lists all)", highlight=False)
    left = r.kept if prune else r.vanished
    if left:
        why = "kept: their folder lists nothing (see above)" if prune else "run with --prune to remove them"
        out.print(f"[yellow]{len(left)} indexed file(s) no longer exist; {why}")
        for v in left[:10]:
            out.print(f"  {plain(v)}", highlight=False)
