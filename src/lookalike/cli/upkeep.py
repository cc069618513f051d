"""The library's upkeep: ``stats``, ``models``, ``reindex``, ``copies``, ``doctor`` and ``eval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import typer.core
from rich.progress import (
    TaskID,
)
from rich.table import Table
from rich.text import Text

from lookalike.cli.app import app, open_library, settings, user_errors
from lookalike.cli.output import SHOWN, console, fail, out, readable
from lookalike.cli.progress import progress_bar
from lookalike.terminal import plain


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
            if isinstance(value, list) and key not in ("unfixable", "notes"):
                table.add_row(key.replace("_", " "), str(len(value)), ", ".join(map(str, value[:8])))
        out.print(table)
        for line in found.notes:
            out.print(f"[yellow]note:[/] {line}", highlight=False)
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
