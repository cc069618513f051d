"""``lookalike remove``, ``set`` and ``fields``: photos taken out, records changed, fields listed."""

from __future__ import annotations

import json
from typing import Annotated

import typer
import typer.core
from rich.table import Table

from lookalike.cli.app import app, open_library, user_errors
from lookalike.cli.output import fail, out
from lookalike.terminal import plain


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
    assignments: Annotated[list[str], typer.Argument(help="NAME=VALUE ... (a JSON value or text; NAME= removes)")],
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
