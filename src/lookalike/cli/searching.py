"""``lookalike search``, ``duplicates`` and ``detect``: what the library holds that looks like a photo."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import typer.core
from rich.table import Table

from lookalike.cli.app import app, open_library, user_errors
from lookalike.cli.output import SHOWN, console, fail, out, short_path
from lookalike.cli.progress import progress_bar
from lookalike.moments import clock
from lookalike.terminal import plain

# the library and its dependencies (numpy, Pillow, SQLAlchemy, the model runtime) are imported by the
# commands that use them, so `lookalike --help` starts in a fraction of a second (bench/RESULTS.md)
if TYPE_CHECKING:
    from rich.console import JustifyMethod


def _box(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
        x1, y1, x2, y2 = (float(p) for p in parts)
    except ValueError:
        raise typer.BadParameter("--box takes x1,y1,x2,y2 in the photo's pixels") from None
    return x1, y1, x2, y2


def hits_table(title: str, hits, show: list[str] | None = None) -> Table:
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
    where: Annotated[
        str | None,
        typer.Option(help="only photos whose fields pass this filter, e.g. 'brand = \"acme\" and price < 100'"),
    ] = None,
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
            out.print(hits_table(title, hits, columns))
        return
    if as_json:
        out.print_json(json.dumps(result.as_dict()))
        return
    out.print(hits_table(f"{len(result.hits)} results in {result.seconds * 1000:.0f} ms", result.hits, columns))
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
        removed: list[int] = []
        left: list[int] = []  # kept photos gone (or their file) before their copies were removed: those stay
        if remove and yes and doomed:
            # each group's copies only while the photo kept in their place is still there, with its file
            removed = [rec.id for rec in lib.remove(doomed, keeping={i: r["keep"] for r in rows for i in r["remove"]})]
            gone = set(removed)
            missed = [r["keep"] for r in rows if r["remove"] and not gone.intersection(r["remove"])]
            kept = lib.catalog.get_many(missed)
            left = [k for k in missed if k not in kept or not kept[k].sources]
    except user_errors() as exc:
        fail(str(exc))
    finally:
        lib.close()
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "near_duplicates": rows,
                    "removed": removed,
                    "kept_gone": left,
                    "would_remove": doomed if remove and not yes else [],
                    "exact": [{"id": i, "sources": list(s)} for i, s in exact],
                }
            )
        )
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
        spared = [str(p["id"]) for p in r["photos"] if p["keep"] and p["id"] != r["keep"]]
        if spared and not r["changed"]:
            out.print(f"[dim]  kept too: {', '.join(spared)}: each shows more than {r['keep']}, or its pixels differ "
                      "more than an edit's (another shot of the scene?)", highlight=False)  # fmt: skip
        if r["changed"]:
            out.print(f"[yellow]  nothing proposed: the file(s) of {', '.join(map(str, r['changed']))} changed or "
                      "vanished since indexed; run `lookalike index` on them first (`lookalike doctor` for photos "
                      "no file points at)", highlight=False)  # fmt: skip
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
    if left:
        out.print(f"[yellow]not removed: the copies of {', '.join(map(str, left))}, which left the library or lost "
                  "its file since this report was made (a run replaced it); look for duplicates again", highlight=False)


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
