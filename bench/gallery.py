"""Thumbnail latency while others search: the gallery of the web page, browsed during searches.

Starts ``lookalike serve`` on 127.0.0.1 with a fresh library of the shared Towhee train photos (1,000), then
runs three phases of ``--seconds`` each: 8 clients loading thumbnails (GET /api/v1/images/{id}/thumbnail,
each request a different photo, no If-None-Match: every one is read and sent), 4 clients searching (POST
/api/v1/search with a test photo uploaded), and both at once. Prints thumbnail p50/p95/p99 latency,
thumbnails/s and searches/s of each phase. The clients run in this process, on the same cores as the server.

    python bench/gallery.py [--seconds 10] [--thumbnail-clients 8] [--search-clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from serve import SHARED, TOWHEE, Send, drive, ready, start, uploads  # bench/serve.py, beside this script

API = "/api/v1"


def thumbnails(ids: list[int]) -> Send:
    """GET a thumbnail, each request a different photo (no If-None-Match: every one is read and sent)."""
    return lambda http, n: http.get(f"{API}/images/{ids[n % len(ids)]}/thumbnail")


async def phase(base: str, ids: list[int], queries: list[bytes], args, thumbs: bool, search: bool) -> dict:
    started = time.perf_counter()
    jobs = []
    if thumbs:
        jobs.append(drive(base, thumbnails(ids), args.thumbnail_clients, args.seconds))
    if search:
        jobs.append(drive(base, uploads(queries), args.search_clients, args.seconds))
    results = await asyncio.gather(*jobs)
    elapsed = time.perf_counter() - started
    latencies, thumb_errors = results[0] if thumbs else ([], 0)
    answered, search_errors = results[-1] if search else ([], 0)
    searched = len(answered)
    if thumb_errors or search_errors:
        print(f"failed: {thumb_errors} thumbnails, {search_errors} searches", file=sys.stderr)
    return {"latencies": latencies, "searches": searched, "elapsed": elapsed}


def row(table: Table, name: str, result: dict) -> None:
    ms = np.asarray(result["latencies"]) * 1000
    elapsed = result["elapsed"]
    pct = [f"{np.percentile(ms, q):.1f}" if len(ms) else "-" for q in (50, 95, 99)]
    table.add_row(name, str(len(ms)), *pct, f"{len(ms) / elapsed:.0f}" if len(ms) else "-",
                  f"{result['searches'] / elapsed:.2f}" if result["searches"] else "-")  # fmt: skip


async def library_ids(base: str) -> list[int]:
    ids: list[int] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        while True:
            page = (await http.get(f"{API}/images", params={"limit": 500, "offset": len(ids)})).json()
            ids += [image["id"] for image in page["images"]]
            if not page["images"] or len(ids) >= page["total"]:
                return ids


async def main_async(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lookalike-gallery-bench-"))
    env = {**os.environ, "LOOKALIKE_HOME": str(tmp / "home")}
    if "LOOKALIKE_MODELS_DIR" not in env and (SHARED / "models").exists():
        env["LOOKALIKE_MODELS_DIR"] = str(SHARED / "models")
    try:
        subprocess.run([sys.executable, "-m", "lookalike", "index", str(TOWHEE / "train"), "--json"], env=env,
                       check=True, capture_output=True)  # fmt: skip
        server, base = start(env)
        try:
            await ready(base)
            ids = await library_ids(base)
            queries = [p.read_bytes() for p in sorted((TOWHEE / "test").glob("*/*"))]
            warm = argparse.Namespace(**{**vars(args), "seconds": 2.0})
            await phase(base, ids, queries[:10], warm, thumbs=True, search=True)
            table = Table(
                title=f"{len(ids)} photos; {args.thumbnail_clients} clients loading thumbnails, "
                f"{args.search_clients} searching; {args.seconds:g} s a phase; {os.cpu_count()} cores"
            )
            for col in ("phase", "thumbnails", "p50 ms", "p95 ms", "p99 ms", "thumbnails/s", "searches/s"):
                table.add_column(col, justify="left" if col == "phase" else "right")
            row(table, "thumbnails only", await phase(base, ids, queries, args, thumbs=True, search=False))
            row(table, "searches only", await phase(base, ids, queries, args, thumbs=False, search=True))
            row(table, "thumbnails + searches", await phase(base, ids, queries, args, thumbs=True, search=True))
            Console(width=120).print(table)
        finally:
            server.terminate()
            server.wait(10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of each phase")
    parser.add_argument("--thumbnail-clients", type=int, default=8)
    parser.add_argument("--search-clients", type=int, default=4)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
