"""Search latency under concurrent load, idle and while an index job runs, against a real server.

Starts ``lookalike serve`` on 127.0.0.1 with a fresh library holding half of the
shared Towhee photos, then runs N concurrent clients that upload test photos to
POST /api/v1/search: first with nothing else running, then while a background
index job (POST /api/v1/jobs/index) adds the other half. Prints p50/p95/p99
latency and requests/s for both phases.

With ``--copy-stage``, the cost of the copy stage instead: the same library served with the defaults and with
``LOOKALIKE_COPY_CANDIDATES=0``, idle, in turns (on, off, on, off: a loaded machine drifts), and the ratio of
their requests/s (and with the query's regional views off, ``LOOKALIKE_COPY_VIEWS=false``).

    python bench/serve.py [--clients 8] [--seconds 20] [--copy-stage]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TOWHEE = SHARED / "datasets" / "towhee_reverse_image_search"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


Send = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


async def drive(base: str, send: Send, clients: int, seconds: float,
                stop_when: Callable[[], bool] | None = None) -> tuple[list[float], int]:  # fmt: skip
    """(latencies of the answered requests, failed ones): ``clients`` clients for ``seconds``, client i making
    requests i, i + clients, i + 2 clients ... with ``send(http, n)``; a 200 with a body counts as answered."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            n = i
            while time.perf_counter() < deadline and not (stop_when and stop_when()):
                t = time.perf_counter()
                r = await send(http, n)
                n += clients
                if r.status_code == 200 and r.content:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies, errors


def uploads(queries: list[bytes]) -> Send:
    """POST /api/v1/search with the query photos in turn."""

    def send(http: httpx.AsyncClient, n: int) -> Awaitable[httpx.Response]:
        data = queries[n % len(queries)]
        return http.post("/api/v1/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={"k": "10"})

    return send


async def load(base: str, queries: list[bytes], clients: int, seconds: float, stop_when=None) -> tuple[list, float]:
    started = time.perf_counter()
    latencies, errors = await drive(base, uploads(queries), clients, seconds, stop_when)
    if errors:
        print(f"{errors} failed requests", file=sys.stderr)
    return latencies, time.perf_counter() - started


def row(table: Table, name: str, latencies: list[float], elapsed: float, note: str = "") -> None:
    ms = np.asarray(latencies) * 1000
    table.add_row(
        name,
        str(len(ms)),
        f"{np.percentile(ms, 50):.0f}",
        f"{np.percentile(ms, 95):.0f}",
        f"{np.percentile(ms, 99):.0f}",
        f"{len(ms) / elapsed:.1f}",
        note,
    )


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user + system, all threads): what a request costs, whatever else the machine
    runs (req/s alone drifts with the load of the other core)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "lookalike", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return server, f"http://127.0.0.1:{port}"


async def ready(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as http:
        for _ in range(600):
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not start")


async def copy_stage(args, env: dict, tmp: Path) -> None:
    queries = [p.read_bytes() for p in sorted((TOWHEE / "test").glob("*/*"))]
    table = Table(title=f"POST /api/v1/search, {args.clients} concurrent clients, {os.cpu_count()} cores, idle")
    for col in ("copy stage", "requests", "p50 ms", "p95 ms", "p99 ms", "req/s", "server CPU ms/request"):
        table.add_column(col, justify="left" if col == "copy stage" else "right")
    rates: dict[str, list[float]] = {"on": [], "whole photo only": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "whole photo only": [], "off": []}
    try:
        for _ in range(2):
            for stage, extra in (("on", {}), ("whole photo only", {"LOOKALIKE_COPY_VIEWS": "false"}),
                                 ("off", {"LOOKALIKE_COPY_CANDIDATES": "0"})):
                server, base = start({**env, **extra})
                try:
                    await ready(base)
                    await load(base, queries[:10], 2, 2)  # warm-up
                    before = cpu_seconds(server.pid)
                    lat, elapsed = await load(base, queries, args.clients, args.seconds)
                    cpu[stage].append((cpu_seconds(server.pid) - before) / max(len(lat), 1) * 1000)
                    row(table, stage, lat, elapsed, f"{cpu[stage][-1]:.1f}")
                    rates[stage].append(len(lat) / elapsed)
                finally:
                    server.terminate()
                    server.wait(10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    Console().print(table)
    print(f"requests/s with the copy stage / without: {np.mean(rates['on']) / np.mean(rates['off']):.2f}x")
    print(f"... without the query's regional views (LOOKALIKE_COPY_VIEWS=false) / without the copy stage: "
          f"{np.mean(rates['whole photo only']) / np.mean(rates['off']):.2f}x")
    print(f"server CPU per request without the copy stage / with it: {np.mean(cpu['off']) / np.mean(cpu['on']):.2f}x "
          "(what requests/s come to on a machine whose cores the service has to itself)")


async def main_async(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lookalike-serve-bench-"))
    half_a, half_b = tmp / "a", tmp / "b"
    for i, d in enumerate(sorted((TOWHEE / "train").iterdir())):
        shutil.copytree(d, (half_a if i % 2 == 0 else half_b) / d.name)
    env = {**os.environ, "LOOKALIKE_HOME": str(tmp / "home"), "LOOKALIKE_SOURCE_ROOTS": f'["{tmp}"]'}
    if "LOOKALIKE_MODELS_DIR" not in env and (SHARED / "models").exists():
        env["LOOKALIKE_MODELS_DIR"] = str(SHARED / "models")
    subprocess.run(
        [sys.executable, "-m", "lookalike", "index", str(half_a), "--json"], env=env, check=True, capture_output=True
    )
    if args.copy_stage:
        await copy_stage(args, env, tmp)
        return
    server, base = start(env)
    try:
        await ready(base)
        async with httpx.AsyncClient(base_url=base) as http:
            queries = [p.read_bytes() for p in sorted((TOWHEE / "test").glob("*/*"))]
            await load(base, queries[:10], 2, 2)  # warm-up
            table = Table(title=f"POST /api/v1/search, {args.clients} concurrent clients, {os.cpu_count()} cores")
            for col in ("phase", "requests", "p50 ms", "p95 ms", "p99 ms", "req/s", "index job"):
                table.add_column(col, justify="left" if col in ("phase", "index job") else "right")
            lat, elapsed = await load(base, queries, args.clients, args.seconds)
            row(table, "idle", lat, elapsed)
            job = (await http.post("/api/v1/jobs/index", json={"paths": [str(half_b)]})).json()
            state = {"done": False}

            async def watch() -> dict:
                while True:
                    info = (await http.get(f"/api/v1/jobs/{job['id']}")).json()
                    if info["state"] in ("done", "failed"):
                        state["done"] = True
                        return info
                    await asyncio.sleep(0.25)

            watcher = asyncio.create_task(watch())
            lat, elapsed = await load(base, queries, args.clients, args.seconds * 10, stop_when=lambda: state["done"])
            info = await watcher
            row(
                table,
                "during index job",
                lat,
                elapsed,
                f"{info['added']} photos at {info['rate']:.0f} img/s ({info['state']})",
            )
            Console().print(table)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--copy-stage", action="store_true", help="compare with the copy stage off (see above)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
