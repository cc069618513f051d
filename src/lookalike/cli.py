"""The ``lookalike`` command: a thin layer over ``Library``; every command maps to one library call."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
import typer.core
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from lookalike.moments import clock
from lookalike.terminal import SafeConsole, plain

# the library and its dependencies (numpy, Pillow, SQLAlchemy, the model runtime) are imported by the
# commands that use them, so `lookalike --help` starts in a fraction of a second (bench/RESULTS.md)
if TYPE_CHECKING:
    from rich.console import JustifyMethod

    from lookalike.config import Settings
    from lookalike.ingest.pipeline import IndexReport
    from lookalike.library import Library, Role


def user_errors() -> tuple[type[Exception], ...]:
    """The errors that mean "tell the user" (evaluated only when an exception is being matched)."""
    from lookalike.fields import FieldError
    from lookalike.filters import FilterError
    from lookalike.imaging import BadImage
    from lookalike.ingest.sources import SourceError
    from lookalike.library import LibraryError
    from lookalike.models.files import ModelFileError
    from lookalike.models.registry import UnknownModelError
    from lookalike.store.catalog.database import DatabaseError
    from lookalike.store.errors import DependencyError, EngineError
    from lookalike.store.payload import UnsupportedFilter

    return (LibraryError, ModelFileError, BadImage, SourceError, UnknownModelError, EngineError, DatabaseError,
            DependencyError, FieldError, FilterError, UnsupportedFilter)  # fmt: skip


class _Commands(typer.core.TyperGroup):
    """Every command's user errors (an unreachable engine, catalog or store; a bad file) become one clear line
    and exit status 1, wherever in the command they escape; a traceback is left for bugs."""

    def invoke(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except user_errors() as exc:
            fail(str(exc))


app = typer.Typer(
    cls=_Commands,
    help="Lookalike: index photos, then search them by image.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
SHOWN = 20  # rows of a long list printed before "... and N more"
console = SafeConsole(stderr=True)  # control characters in what is printed are shown, never acted on
out = SafeConsole(soft_wrap=True)


class State:
    overrides: dict = {}


def settings() -> Settings:
    from lookalike.config import Settings

    return Settings(**State.overrides)


@app.callback()
def main(
    home: Annotated[Path | None, typer.Option(help="library directory (env LOOKALIKE_HOME)")] = None,
    model: Annotated[str | None, typer.Option(help="embedding model for a new library (env LOOKALIKE_MODEL)")] = None,
    models_dir: Annotated[Path | None, typer.Option(help="model files directory (env LOOKALIKE_MODELS_DIR)")] = None,
) -> None:
    State.overrides = {
        k: v for k, v in {"home": home, "model": model, "models_dir": models_dir}.items() if v is not None
    }


def fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[bold red]error:[/] {plain(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _tuned(role: Role = "cli") -> Library:
    """A library for this process, the process tuned first (lookalike.tuning: the CLI is an entry point)."""
    from lookalike.library import Library
    from lookalike.tuning import tune_process

    tune_process(settings())
    return Library(settings(), role=role)


def open_library() -> Library:
    try:
        return _tuned()
    except user_errors() as exc:
        fail(str(exc))
        raise AssertionError from exc  # unreachable; fail raises


def _open_when_reachable(role: Role = "cli") -> Library:
    """The library, once the catalog (and the image store) answer: a long-running process started during an
    outage, or before its database, waits for them with capped backoff instead of exiting."""
    from lookalike.store import retry
    from lookalike.store.errors import Unavailable

    try:
        return retry.again(lambda: _tuned(role), lambda exc: isinstance(exc, Unavailable), float("inf"))
    except user_errors() as exc:
        fail(str(exc))
        raise AssertionError from exc  # unreachable; fail raises


class LogProgress(Progress):
    """Progress where there is no terminal to draw a bar on (a log, a pipe, CI): a plain line on stderr every
    ``PERIOD`` seconds and at the end, so long work never runs silent."""

    PERIOD = 10.0

    def __init__(self, description: str) -> None:
        super().__init__(console=console, disable=True)  # the tasks are kept; nothing is drawn
        self.description, self.last = description, time.monotonic()

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._due(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._due(task_id)

    def _due(self, task_id: TaskID) -> None:
        if time.monotonic() - self.last >= self.PERIOD:
            self.report(task_id)

    def report(self, task_id: TaskID) -> None:
        self.last = time.monotonic()
        task = self._tasks[task_id]
        done, total, elapsed = int(task.completed), task.total, task.elapsed or 0.0
        share = f" ({done / total:.0%})" if total else ""
        rate = f", {done / elapsed:.1f}/s" if elapsed > 0 and done else ""
        left = f", about {task.time_remaining:.0f} s left" if task.time_remaining else ""
        what = self.description
        if task.description not in ("", self.description):
            what += f", {task.description}"
        console.print(f"{what}: {done}{f'/{int(total)}' if total else ''}{share}{rate}, {elapsed:.0f} s{left}",
                      highlight=False, soft_wrap=True)  # fmt: skip

    def stop(self) -> None:
        super().stop()
        for task_id in self.task_ids:  # where the work was long enough to have said something: how it ended
            task = self._tasks[task_id]
            if task.completed and (task.elapsed or 0.0) >= self.PERIOD:
                self.report(task_id)


def progress_bar(description: str) -> Progress:
    if not console.is_terminal:
        return LogProgress(description)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=False,
    )


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
    paths: Annotated[list[str], typer.Argument(
        help="folders, CSV files (path,label + any field columns), JSON-lines manifests, URL lists, files or URLs")],
    label: Annotated[str | None, typer.Option(help="label for every photo (default: CSV label or folder name)")] = None,
    field: Annotated[list[str] | None, typer.Option(
        "--field", help="a CSV field column's type, NAME:TYPE (str, int, float, bool, list); else inferred")] = None,
    prune: Annotated[bool, typer.Option(help="remove photos whose files vanished from the named folders")] = False,
    prune_empty: Annotated[bool, typer.Option(
        "--prune-empty", help="--prune, even in a named folder that lists no file at all (left alone by --prune: an "
        "unmounted disk looks the same)")] = False,
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
    kinds = _kinds(field)
    lib = open_library()
    try:
        report = _run_index(lib, paths, label, prune or prune_empty, quiet=as_json, objects=objects,
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
        return
    _print_report(report, prune or prune_empty)


def _kinds(specs: list[str] | None) -> dict[str, str] | None:
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
        + (f"; {r.subjects} subjects found" + (f" ({r.detected} indexed photos got theirs)" if r.detected else "")
           if r.subjects or r.detected else "")
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
    left = r.kept if prune else r.vanished
    if left:
        why = "kept: their folder lists nothing (see above)" if prune else "run with --prune to remove them"
        out.print(f"[yellow]{len(left)} indexed file(s) no longer exist; {why}")
        for v in left[:10]:
            out.print(f"  {plain(v)}", highlight=False)


def _box(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
        x1, y1, x2, y2 = (float(p) for p in parts)
    except ValueError:
        raise typer.BadParameter("--box takes x1,y1,x2,y2 in the photo's pixels") from None
    return x1, y1, x2, y2


def short_path(source: str, longest: int = 40) -> str:
    """A path for a table cell: its folder and file name when it is long (``--json`` has the whole of it), so a
    row stays one line at 80 columns instead of a path folded over several."""
    if len(source) <= longest or "://" in source:
        return source
    parts = source.replace("\\", "/").rstrip("/").split("/")
    return "…/" + "/".join(parts[-2:]) if len(parts) > 2 else source


def _hits_table(title: str, hits, show: list[str] | None = None) -> Table:
    """Hits in the ranking's order; the one number shown is the similarity (what --min-score filters on), as on the
    page; a verdict is a word with how sure it is (the ranking's own score is in --json). ``show``: fields of the
    photos' records as columns before the source (empty where a photo has no such field)."""
    from lookalike.fields import render

    table = Table(title=title, title_justify="left")
    show = show or []
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("#", "right"), ("id", "right"), ("similarity", "right"), ("label", "left"), ("matched", "left"),
        *((name, "left") for name in show), ("source", "left"))  # fmt: skip
    for col, just in columns:  # the source on one line (shortened), the verdict in words that fold whole
        if col == "source":  # narrower when fields take room: a record says more than a path
            table.add_column(col, justify=just, overflow="ellipsis", no_wrap=True, max_width=20 if show else 34)
        elif col in show:
            table.add_column(col, justify=just, overflow="ellipsis", no_wrap=True, min_width=len(col))
        else:
            table.add_column(col, justify=just, overflow="fold", min_width=16 if col == "matched" else None)
    for rank, hit in enumerate(hits, 1):
        matched = "whole"  # the whole photo (one word: a row stays one line)
        if hit.box:  # the detector's guess of the subject's class, with how sure it was: never read as a label
            sure = f", {hit.detected_score:.0%} sure" if hit.detected_score is not None else ""
            matched = f"subject ({hit.detected_label}?{sure}) at {[round(v) for v in hit.box]}"
        box = hit.verdict.match_box if hit.verdict is not None else None  # only the surest copy has a region
        at = f" at {[round(v) for v in box]}" if box is not None else ""
        if hit.copy:
            mirrored = ", mirrored" if hit.verdict.mirrored else ""
            matched = f"SAME PHOTO ({hit.verdict.confidence:.0%} sure{mirrored}){at}"
        elif hit.same_object:
            matched = f"SAME OBJECT ({hit.verdict.confidence:.0%} sure){at}"
        source = short_path(hit.sources[0]) if hit.sources else ""
        if hit.video is not None and hit.t is not None:  # a video's frame: the video and the moment
            source = f"{short_path(hit.video)} @ {clock(hit.t)}"
            if hit.frames:  # its other frames that matched, less well (--json has them all)
                more = ", ".join(clock(f.t) for f in hit.frames[:3]) + (" ..." if len(hit.frames) > 3 else "")
                matched += f"; also at {more}"
        shown = [plain(render(hit.fields[name])) if name in hit.fields else "" for name in show]
        table.add_row(str(rank), str(hit.id), f"{hit.similarity:.2f}", plain(hit.label or ""), plain(matched),
                      *shown, plain(source))  # fmt: skip
    return table


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="a photo file, an http(s) URL, or an indexed image id")] = None,
    text: Annotated[
        str | None, typer.Option("--text", help="search by a description instead (CLIP-style models only)")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="number of results")] = 10,
    min_score: Annotated[float | None, typer.Option(help="drop results less similar than this (cosine, -1..1)")] = None,
    label: Annotated[str | None, typer.Option(help="only photos with this label")] = None,
    match: Annotated[
        str | None, typer.Option(help="compare with: whole, objects or both (default: whole; both for --box)")
    ] = None,
    detected_label: Annotated[
        str | None, typer.Option(help="only photos with a detected object of this COCO label (e.g. dog)")
    ] = None,
    box: Annotated[str | None, typer.Option(help="search by this region of the query: x1,y1,x2,y2")] = None,
    objects: Annotated[
        bool, typer.Option("--objects", help="detect the query's subjects; results per subject")
    ] = False,
    copies_only: Annotated[
        bool, typer.Option("--copies", help="only the same picture (exact or edited copies), with the matched region")
    ] = False,
    hide_copies: Annotated[
        bool, typer.Option("--hide-copies", help="one result per picture: leave out copies of a better result")
    ] = False,
    where: Annotated[str | None, typer.Option(
        help='only photos whose fields pass this filter, e.g. \'brand = "acme" and price < 100\'')] = None,
    show: Annotated[str | None, typer.Option(help="fields to show as columns, e.g. title,price")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print results as JSON")] = False,
) -> None:
    """Find the indexed photos most similar to QUERY, or matching --text (one result per photo, best entry wins).
    Copies of QUERY (the same picture, even edited) come first and say so."""
    if (query is None) == (text is None):
        fail('give a photo (file, URL or image id) or --text "a description", one of the two')
    if text is not None and (objects or box or match or detected_label or copies_only):
        fail("--text searches whole photos: drop --objects, --box, --match, --detected-label and --copies")
    columns = [c.strip() for c in show.split(",") if c.strip()] if show else []
    from lookalike.filters import FilterError, parse

    try:
        condition = parse(where) if where is not None else None
    except FilterError as exc:
        fail(str(exc))
    lib = open_library()
    try:
        empty = lib.catalog.count() == 0
        if label is not None and not empty and label not in (known := lib.catalog.labels()):
            shown = ", ".join(sorted(known)[:SHOWN]) + (" ..." if len(known) > SHOWN else "")
            fail(f"no photo has the label {label!r}; labels: {shown or 'none'} (`lookalike stats`)")
        if text is not None:
            result = lib.search_text(text, k=k, min_score=min_score, label=label, where=condition)
        else:
            assert query is not None
            q: str | int | bytes = int(query) if query.isdigit() and not Path(query).exists() else query
            if objects:
                if isinstance(q, int):
                    q = lib.original_bytes(q)
                groups = lib.search_objects(q, k=k, min_score=min_score, label=label, match=match or "both",
                                            where=condition)  # fmt: skip
            else:
                result = lib.search(q, k=k, min_score=min_score, label=label, box=_box(box), match=match,
                                    detected_label=detected_label, copies_only=copies_only,
                                    hide_copies=hide_copies, where=condition)  # fmt: skip
    except user_errors() as exc:
        fail(str(exc))
    finally:
        lib.close()
    if objects:
        if as_json:
            data = [{"object": det.as_dict(), "hits": [h.as_dict() for h in hits]} for det, hits in groups]
            out.print_json(json.dumps({"objects": data}))
            return
        if not groups:
            out.print("no subjects detected in the query photo (try without --objects)")
        for det, hits in groups:
            title = f"{det.label} ({det.score:.2f}) at {[round(v) for v in det.box]}: {len(hits)} results"
            out.print(_hits_table(title, hits, columns))
        return
    if as_json:
        out.print_json(json.dumps(result.as_dict()))
        return
    out.print(_hits_table(f"{len(result.hits)} results in {result.seconds * 1000:.0f} ms", result.hits, columns))
    if not result.hits and copies_only and not empty:
        console.print("no copy of this photo in the library (drop --copies for similar photos)")
    elif not result.hits:
        console.print("the library is empty: add photos with `lookalike index FOLDER`" if empty else
                      "nothing matched: try without --min-score, --label or --detected-label")  # fmt: skip


@app.command()
def duplicates(
    threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="least copy confidence for a near-duplicate (0: the copy verdict)")
    ] = 0.0,
    remove: Annotated[
        bool, typer.Option("--remove", help="remove all but the largest photo of each group (a dry run without --yes)")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="with --remove: really remove them")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the groups as JSON")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="print one row per photo: group,id,keep,source")] = False,
) -> None:
    """Group the library's duplicates: the same bytes under several paths, and the same picture edited."""
    lib = open_library()
    try:
        with progress_bar("duplicates") as bar:
            task = bar.add_task("checking neighbours", total=lib.catalog.count(), rate="")
            found = lib.duplicates(threshold, lambda d, t: bar.update(task, completed=d, total=t))
        rows, exact = found["groups"], [(e["id"], e["sources"]) for e in found["exact"]]
        doomed = [i for r in rows for i in r["remove"]]
        removed = []
        if remove and yes and doomed:
            removed = [r.id for r in lib.remove(doomed)]
    except user_errors() as exc:
        fail(str(exc))
    finally:
        lib.close()
    if as_json:
        out.print_json(json.dumps({"near_duplicates": rows, "removed": removed, "would_remove": doomed if remove and
                                   not yes else [], "exact": [{"id": i, "sources": list(s)} for i, s in exact]}))
        return
    if as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["group", "id", "keep", "source", "width", "height"])
        for r in rows:
            for p in r["photos"]:
                writer.writerow([r["group"], p["id"], int(p["keep"]), p["source"], p["width"], p["height"]])
        for image_id, sources in exact:  # the same bytes under several paths: kept once already, one row per path
            for source in sources:
                writer.writerow(["exact", image_id, 1, source, "", ""])
        return
    for r in rows:
        table = Table(title=f"group {r['group']}: {len(r['photos'])} copies of one picture", title_justify="left")
        for col in ("id", "keep", "size", "confidence", "source"):
            table.add_column(col, overflow="fold")
        for p in r["photos"]:
            table.add_row(str(p["id"]), "keep" if p["keep"] else "remove", f"{p['width']}x{p['height']}",
                          f"{p['confidence']:.0%} sure", plain(p["source"] or ""))  # fmt: skip
        out.print(table)
        if r["changed"]:
            out.print(f"[yellow]  nothing proposed: the file(s) of {', '.join(map(str, r['changed']))} changed or "
                      "vanished since indexed; run `lookalike index` on them first", highlight=False)  # fmt: skip
    if exact:
        table = Table(title="the same bytes under several paths (stored once)", title_justify="left")
        table.add_column("id")
        table.add_column("paths", overflow="fold")
        for image_id, sources in exact[:SHOWN]:
            table.add_row(str(image_id), "\n".join(plain(x) for x in sources))
        out.print(table)
        if len(exact) > SHOWN:
            out.print(f"  ... and {len(exact) - SHOWN} more (--json or --csv lists all)", highlight=False)
    out.print(f"{len(rows)} groups of near-duplicates ({len(doomed)} photos proposed for removal); "
              f"{len(exact)} photos found under several paths (stored once)", highlight=False)  # fmt: skip
    if remove and not yes:
        more = f" ... and {len(doomed) - SHOWN} more (--json lists all)" if len(doomed) > SHOWN else ""
        out.print(f"dry run: --remove --yes would remove {len(doomed)} photos (the rows marked remove): "
                  f"{', '.join(map(str, doomed[:SHOWN]))}{more}", highlight=False)  # fmt: skip
    elif removed:
        out.print(f"removed {len(removed)} photos", highlight=False)


@app.command()
def detect(
    photo: Annotated[str, typer.Argument(help="a photo file or URL")],
    draw: Annotated[
        Path | None, typer.Option(help="write a copy of the photo with the boxes drawn (.jpg, .png, .webp ...)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the subjects as JSON")] = False,
) -> None:
    """Detect the subjects of a photo (COCO classes) and print their boxes (needs no embedding model)."""
    if draw is not None:  # a bad output name fails before any work
        from PIL import Image

        if draw.suffix.lower() not in Image.registered_extensions():
            fail(f"--draw {draw}: unknown image type {draw.suffix or '(no extension)'}; use .jpg, .png or .webp")
        if not draw.parent.is_dir():
            fail(f"--draw {draw}: the folder {draw.parent} does not exist")
    lib = open_library()
    try:
        detections, decoded = lib.detect(photo)
        if draw is not None:
            from lookalike.drawing import draw_boxes

            draw_boxes(lib.read_query(photo), detections, lib.settings.max_pixels).save(draw, quality=90)
    except user_errors() as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"--draw {draw}: cannot write it: {exc.strerror or exc}")
    finally:
        lib.close()
    if as_json:
        out.print_json(json.dumps({"width": decoded.width, "height": decoded.height,
                                   "objects": [d.as_dict() for d in detections]}))  # fmt: skip
        return
    table = Table(title=f"{len(detections)} subjects in {decoded.width}x{decoded.height}", title_justify="left")
    for col in ("class (the detector's guess)", "sure", "x1", "y1", "x2", "y2"):
        table.add_column(col, justify="left" if col.startswith("class") else "right")
    for d in detections:
        table.add_row(d.label, f"{d.score:.0%}", *(f"{v:.0f}" for v in d.box))
    out.print(table)
    if draw is not None:
        out.print(f"drawn to {draw}")


@app.command()
def remove(ids: Annotated[list[int], typer.Argument(help="image ids to remove")]) -> None:
    """Remove photos from the library (catalog, vectors and thumbnails); their files stay out of later index runs
    (`index --include-removed` takes them back)."""
    lib = open_library()
    try:
        removed = {r.id for r in lib.remove(ids)}
    finally:
        lib.close()
    unknown = [i for i in ids if i not in removed]
    if removed:
        out.print(f"removed {len(removed)} image(s); `lookalike index` leaves their files out from now on "
                  "(--include-removed adds them back)")  # fmt: skip
    if unknown:
        fail(f"no image with id {', '.join(map(str, unknown))}")


@app.command("set")
def set_fields(
    image_id: Annotated[int, typer.Argument(help="image id")],
    assignments: Annotated[list[str], typer.Argument(help='NAME=VALUE ... (a JSON value or text; NAME= removes)')],
    as_json: Annotated[bool, typer.Option("--json", help="print the photo's fields as JSON")] = False,
) -> None:
    """Change a photo's fields (its record: title, url, price...) without re-indexing it."""
    from lookalike.fields import FieldError, parse_assignment

    try:
        changes = dict(parse_assignment(a) for a in assignments)
    except FieldError as exc:
        fail(str(exc))
    lib = open_library()
    try:
        rec = lib.set_fields(image_id, changes)
    except user_errors() as exc:
        fail(str(exc))
    finally:
        lib.close()
    if as_json:
        out.print_json(json.dumps({"id": rec.id, "fields": dict(rec.fields)}))
        return
    from lookalike.fields import render

    table = Table(title=f"image {rec.id}", title_justify="left")
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for name, value in sorted(rec.fields.items()):
        table.add_row(plain(name), plain(render(value)))
    out.print(table)


@app.command("fields")
def fields_cmd(as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False) -> None:
    """The fields of the library's photos: their kinds, how many photos hold them, ranges and few values."""
    lib = open_library()
    try:
        found = [f.as_dict() for f in lib.catalog.field_summary()]
    except user_errors() as exc:
        fail(str(exc))
    finally:
        lib.close()
    if as_json:
        out.print_json(json.dumps(found))
        return
    if not found:
        out.print("no photo has fields: index a CSV with columns besides path and label (`lookalike index --help`)")
        return
    table = Table(title="fields (filter with `lookalike search PHOTO --where ...`)", title_justify="left")
    for col in ("field", "photos", "range", "values"):
        table.add_column(col, overflow="fold", justify="right" if col == "photos" else "left")
    for f in found:
        kinds = ", ".join(f"{n} {kind}" for kind, n in f["photos"].items())
        span = f"{f['min']:g} to {f['max']:g}" if f["min"] is not None else ""
        values = ", ".join(f"{v} ({n})" for v, n in (f["values"] or {}).items())
        table.add_row(plain(f["name"]), kinds, span, plain(values))
    out.print(table)


@app.command()
def stats(as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False) -> None:
    """What the library holds: photos, model, index type, disk use."""
    lib = open_library()
    try:
        info = lib.stats()
    finally:
        lib.close()
    if as_json:
        out.print_json(json.dumps(info))
        return
    table = Table(show_header=False)
    for key, value in info.items():
        if key == "disk_bytes":
            value = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in value.items())
        elif key == "copies_to_describe" and value:
            value = f"{value} (`lookalike copies` describes them)"
        table.add_row(key.replace("_", " "), plain(readable(value)))
    out.print(table)


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


@app.command()
def models(
    check: Annotated[
        bool, typer.Option("--check", help="also load each ready model and run it once (inputs, outputs, dimension)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
) -> None:
    """List the built-in models and the model folders in models_dir, with their status."""
    from lookalike.models import registry

    s = settings()
    rows = []
    for spec in registry.all_specs(s):
        status = spec.status(s)
        if check and status == "ready":
            try:
                spec.load(s)
            except user_errors() as exc:
                status = f"broken: {exc}"
        rows.append({
            "name": spec.name,
            "dim": spec.dim,
            "text": spec.text,
            "files": [f.name for f in spec.files],
            "folder": str(spec.folder.path) if spec.folder is not None else None,
            "status": status,
            "default": spec.name == type(s).model_fields["model"].default,
            "description": spec.description,
            "licence": spec.folder.manifest.licence if spec.folder and spec.folder.manifest else None,
            "source": spec.folder.manifest.source if spec.folder and spec.folder.manifest else None,
        })  # fmt: skip
    if as_json:
        out.print_json(json.dumps(rows))
        return
    broken = {r["name"]: r["status"] for r in rows if r["folder"] and r["status"] != "ready"}
    table = Table(title=f"models (models_dir: {s.resolved_models_dir})", title_justify="left")
    for col in ("name", "dim", "text", "file", "status", "description"):
        table.add_column(col, overflow="fold")
    for r in rows:
        about = r["description"] + (f" (licence: {r['licence']}; source: {r['source']})" if r["licence"] else "")
        table.add_row(
            r["name"] + (" *" if r["default"] else ""),
            str(r["dim"] or "?"),
            "yes" if r["text"] else "",
            r["folder"] or ", ".join(r["files"]) or "(in package)",
            Text(
                r["status"] if r["name"] not in broken else "broken: see below",
                style="red" if r["name"] in broken else "",
            ),
            Text(about),
        )
    out.print(table)
    for name, problem in broken.items():  # in full, not folded into a narrow column
        console.print(Text.assemble((f"{name}: ", "bold red"), problem))
    if not check:
        console.print("model folders: manifests and files checked; `lookalike models --check` also runs each once")


@app.command()
def reindex(
    to: Annotated[
        str | None,
        typer.Option(
            help="move to a vector backend: embedded, milvus-lite:///file.db, http(s)://milvus:19530, "
            "elasticsearch+http(s)://es:9200, tcvectordb+http(s)://host:port"
        ),  # fmt: skip
    ] = None,
) -> None:
    """Rebuild the vector index from the catalog's stored embeddings (no re-embedding)."""
    lib = open_library()
    try:
        info = lib.reindex(to)
    except Exception as exc:  # a backend that cannot be reached or created
        fail(f"reindex failed: {type(exc).__name__}: {exc}")
    finally:
        lib.close()
    out.print(
        f"rebuilt {info['index']} index with {info['vectors']} vectors of {info['dim']} dimensions "
        f"(whitening: {info['whitening']}) in {info['seconds']:.2f} s"
    )


@app.command()
def copies(
    recompute: Annotated[
        bool, typer.Option(help="compute every photo's copy descriptor again (after LOOKALIKE_COPY_SIDE changed)")
    ] = False,
) -> None:
    """Give the photos indexed without a copy descriptor one (resumable; from the originals, else the thumbnails)."""
    lib = open_library()
    try:
        with progress_bar("copy descriptors") as bar:
            task = bar.add_task("copy descriptors", total=None, rate="")
            report = lib.backfill_copies(recompute, lambda d, t: bar.update(task, completed=d, total=t))
    except user_errors() as exc:
        fail(str(exc))
        raise AssertionError from exc  # unreachable; fail raises
    finally:
        lib.close()
    out.print(f"copy descriptors stored for {report.done} photos ({report.from_thumbnail} from their thumbnail)")
    for image_id, reason in report.failed[:SHOWN]:
        out.print(f"  [red]skipped[/] {image_id}: {reason}")
    if len(report.failed) > SHOWN:
        out.print(f"  ... and {len(report.failed) - SHOWN} more")


@app.command()
def doctor(
    fix: Annotated[bool, typer.Option("--fix", help="repair: the catalog is the truth")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the findings as JSON")] = False,
) -> None:
    """Compare the catalog with the vector engine and the image store; with --fix, repair the differences.

    Exits with 1 when differences remain (none found is 0), so it can run from a health check.
    """
    lib = open_library()
    try:
        found = lib.check()
        if fix and found.problems:
            found = lib.repair(found)
            after = lib.check()
    except Exception as exc:  # an engine or store that cannot be reached
        fail(f"doctor failed: {type(exc).__name__}: {exc}")
    finally:
        lib.close()
    remaining = after.problems if fix and found.problems else found.problems
    if as_json:
        out.print_json(json.dumps(found.as_dict() | {"remaining": remaining}))
    else:
        table = Table(title=f"doctor: {found.problems} difference(s)", title_justify="left")
        table.add_column("finding")
        table.add_column("count", justify="right")
        table.add_column("first ids", overflow="fold")
        for key, value in found.as_dict().items():
            if isinstance(value, list) and key != "unfixable":
                table.add_row(key.replace("_", " "), str(len(value)), ", ".join(map(str, value[:8])))
        out.print(table)
        if fix and found.problems:
            fixed = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (found.fixed or {}).items())
            out.print(f"fixed: {fixed or 'nothing'}; remaining differences: {remaining}", highlight=False)
            for line in found.unfixable:
                out.print(f"[yellow]cannot fix:[/] {line}", highlight=False)
        elif found.problems:
            out.print("run `lookalike doctor --fix` to repair (the catalog is the truth)")
    if remaining:
        raise typer.Exit(1)


@app.command("eval")
def evaluate_cmd(
    directory: Annotated[Path, typer.Argument(help="train/ + test/ folders, or one labelled folder (leave-one-out)")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="cut-off for precision@k and mAP@k")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    fresh: Annotated[bool, typer.Option(help="rebuild the evaluation library from scratch")] = False,
    objects: Annotated[bool, typer.Option("--objects", help="also index detected subjects")] = False,
    match: Annotated[str, typer.Option(help="gallery entries compared: whole, objects or both")] = "whole",
    query: Annotated[str, typer.Option(help="query by the whole photo or by its best detected object")] = "whole",
) -> None:
    """Measure retrieval quality on labelled photos: precision@k, mAP@k, top-1, queries/s.

    Uses its own library under HOME/eval/, so your photo library is never touched.
    """
    from lookalike.evaluate import evaluate
    from lookalike.tuning import tune_process

    tune_process(settings())
    with progress_bar("eval") as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, rate="")
            bar.update(tasks[stage], completed=done, total=total)

        try:
            result = evaluate(directory, settings(), k=k, fresh=fresh, on_progress=None if as_json else update,
                              objects=objects, match=match, query=query)  # fmt: skip
        except user_errors() + (ValueError,) as exc:  # mypy reads a starred tuple display as no exception type
            fail(str(exc))
    if as_json:
        out.print_json(json.dumps(result))
        return
    table = Table(title=f"eval: {result['dataset']} ({result['mode']})", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("model", "match", "query", "indexed", "rejected", "photos_with_objects", "queries", "answered",
                "unlabelled", f"precision@{k}",
                f"precision@{k}_ceiling", f"recall@{k}", f"mAP@{k}", "top1", "queries_per_second",
                "query_timing"):  # fmt: skip
        v = result[key]
        table.add_row(key, f"{v:.4f}" if isinstance(v, float) else str(v))
    out.print(table)


@app.command()
def worker(
    threads: Annotated[int, typer.Option(help="decode and inference threads (0: one per core)")] = 0,
    once: Annotated[bool, typer.Option("--once", help="exit when no task is left instead of waiting")] = False,
    name: Annotated[str | None, typer.Option(help="name shown in job progress (default host:pid:random)")] = None,
) -> None:
    """Run index jobs from the library's queue (start any number, on any machines sharing the catalog).

    Claims chunks of queued jobs (`lookalike jobs add`, POST /api/v1/jobs/index, uploads), holds each with a
    lease it renews, and hands it back by stopping: a worker killed at any point loses nothing, another
    worker finishes its chunk once the lease (LOOKALIKE_JOB_LEASE) has expired. SIGTERM or Ctrl-C: finish
    the current chunk, then exit. An outage of the database, the engine or the store does not end it: it
    keeps its chunk, waits for the part to come back and carries on (started before its database, it waits).
    """
    import logging
    import signal

    from lookalike.memory import return_freed_memory

    return_freed_memory()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if threads:
        State.overrides |= {"workers": threads, "threads": 1}
    lib = _open_when_reachable(role="worker")  # processes that search follow the change feed; a worker only writes
    runner = lib.worker(name)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.stop())
    console.print(f"worker {runner.name} on {lib.where}: waiting for index jobs")
    try:
        runner.run(once=once)
    finally:
        lib.close()
    console.print(f"worker {runner.name}: {runner.tasks_done} task(s) done")


jobs_app = typer.Typer(help="Durable index jobs: list, add, show, cancel.", no_args_is_help=False)
app.add_typer(jobs_app, name="jobs")


@jobs_app.callback(invoke_without_command=True)
def jobs_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
) -> None:
    """List index jobs, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    lib = open_library()
    try:
        jobs = [j.as_dict() for j in lib.jobs.list(limit)]
    finally:
        lib.close()
    if as_json:
        out.print_json(json.dumps(jobs))
        return
    table = Table(title=f"{len(jobs)} job(s)", title_justify="left")
    for col in ("id", "state", "done", "added", "rejected", "rate", "paths"):
        table.add_column(col, justify="left" if col in ("state", "paths") else "right", overflow="fold")
    for j in jobs:
        done = f"{j['done']}/{j['total'] if j['total'] is not None else '?'}"
        table.add_row(str(j["id"]), j["state"], done, str(j["added"]), str(j["rejected"]), f"{j['rate']:.0f}/s",
                      plain(", ".join(j["paths"]) or j["kind"]))  # fmt: skip
    out.print(table)


@jobs_app.command("add")
def jobs_add(
    paths: Annotated[list[str], typer.Argument(help="folders, s3:// prefixes, CSV files, URL lists, files or URLs")],
    label: Annotated[str | None, typer.Option(help="label for every photo")] = None,
    prune: Annotated[bool, typer.Option(help="remove photos whose files vanished from the named folders")] = False,
    prune_empty: Annotated[bool, typer.Option(
        "--prune-empty", help="--prune, even in a named folder that lists no file at all")] = False,
    objects: Annotated[bool, typer.Option("--objects", help="also index each detected subject")] = False,
    field: Annotated[list[str] | None, typer.Option(
        "--field", help="a CSV field column's type, NAME:TYPE (str, int, float, bool, list); else inferred")] = None,
) -> None:
    """Queue an index job for `lookalike worker` processes (or the service's worker) to run."""
    from lookalike.ingest.sources import iter_expand
    from lookalike.jobs.worker import host_affinity

    lib = open_library()
    try:
        kinds = _kinds(field)
        for p in paths:  # names that do not exist (or a CSV --field does not fit) fail now, not in a worker
            iter_expand(p, s3=lib.s3, kinds=kinds)
        local = any(not p.startswith(("http://", "https://", "s3://")) for p in paths)
        params = {"paths": [p if "://" in p else str(Path(p).expanduser().resolve()) for p in paths],
                  "label": label, "prune": prune or prune_empty, "prune_empty": prune_empty, "objects": objects,
                  "kinds": kinds}  # fmt: skip
        job_id = lib.jobs.submit("index", params, affinity=host_affinity() if local else None)
    except user_errors() as exc:
        fail(str(exc))
    finally:
        lib.close()
    out.print(f"queued job {job_id}; follow it with `lookalike jobs show {job_id}`")


@jobs_app.command("show")
def jobs_show(job_id: Annotated[int, typer.Argument(help="job id")]) -> None:
    """A job's progress and errors, as JSON."""
    lib = open_library()
    try:
        job = lib.jobs.get(job_id)
    finally:
        lib.close()
    if job is None:
        fail(f"no job with id {job_id}")
    out.print_json(json.dumps(job.as_dict()))


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[int, typer.Argument(help="job id")]) -> None:
    """Stop a job: no more of it is started; chunks in progress stop at their next batch."""
    lib = open_library()
    try:
        known = lib.jobs.get(job_id, details=False) is not None
        cancelled = known and lib.jobs.cancel(job_id)
    finally:
        lib.close()
    if not known:
        fail(f"no job with id {job_id}")
    out.print(f"job {job_id} cancelled" if cancelled else f"job {job_id} had already ended")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on (not loopback: needs an API key)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    allow_anonymous: Annotated[
        bool, typer.Option("--allow-anonymous", help="serve a non-loopback address without an API key")
    ] = False,
) -> None:
    """Start the HTTP API and the web page (http://HOST:PORT/)."""
    from lookalike.api import server
    from lookalike.api.app import create_app
    from lookalike.api.security import anonymous_refusal, weak_key
    from lookalike.tuning import tune_process

    s = settings()
    tune_process(s)
    refusal = weak_key(s) or anonymous_refusal(host, s, allow_anonymous or s.allow_anonymous)
    if refusal:
        fail(refusal)
    try:
        app_ = create_app(s)
    except user_errors() as exc:
        fail(str(exc))
    reads = "reads need it too" if s.api_key_for_reads else "reads are open (LOOKALIKE_API_KEY_FOR_READS=0)"
    access = f"API key required for writes, {reads}" if s.api_key else "no API key: anyone who can connect may write"
    console.print(f"Lookalike on http://{host}:{port}/  (API docs at /docs; {access})")
    server.run(app_, host, port, s)


def run() -> None:  # pragma: no cover - console entry for `python -m lookalike`
    sys.exit(app())
