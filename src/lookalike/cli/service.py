"""The long-running parts: ``lookalike worker``, ``jobs`` and ``serve``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import typer.core
from rich.table import Table

from lookalike.cli.app import State, app, open_library, open_when_reachable, settings, user_errors
from lookalike.cli.indexing import field_kinds
from lookalike.cli.output import console, fail, out
from lookalike.terminal import plain


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
    lib = open_when_reachable(role="worker")  # processes that search follow the change feed; a worker only writes
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
    prune_empty: Annotated[
        bool, typer.Option("--prune-empty", help="--prune, even in a folder (named or below) that lists no file at all")
    ] = False,
    objects: Annotated[bool, typer.Option("--objects", help="also index each detected subject")] = False,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field", help="a CSV field column's type, NAME:TYPE (str, int, float, bool, list); else inferred"
        ),
    ] = None,
) -> None:
    """Queue an index job for `lookalike worker` processes (or the service's worker) to run."""
    from lookalike.ingest.sources import iter_expand
    from lookalike.jobs.worker import host_affinity

    lib = open_library()
    try:
        kinds = field_kinds(field)
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
