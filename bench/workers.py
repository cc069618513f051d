"""Index jobs run by 1 and 2 `lookalike worker` processes, and search latency while they run.

For each worker count: a fresh PostgreSQL database (a throwaway server from Debian's package, as the tests
start it), a `lookalike serve` process on it with no worker of its own holding the 100 Towhee test photos,
then N `lookalike worker --threads 1` processes and an index job of the 1,000 Towhee train photos posted to
the service. A client searches the service (k=10, one request at a time) before and during the job: back to back
by default, paced at ``--search-rate`` requests a second, or not during the job (``--search-rate -1``: the workers
alone). A search with the copy stage costs the service ~30 ms of CPU, so a back-to-back client takes most of a core
from the workers; paced, every row leaves them about the same.
images/s = photos / the job's elapsed time (from its first claimed task to its end). CPU per photo: what each
process group used from the job's post to its end (/proc; PostgreSQL: the server's processes), and the whole machine
(/proc/stat: the rest is the client, the bench and any other process).

    python bench/workers.py
    python bench/workers.py --workers 1 2 --chunk 64 --search-rate 2
    python bench/workers.py --search-rate -1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.api.test_workers import start_worker  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402
from tests.services import Service, cli  # noqa: E402

TOWHEE = ROOT.parent / "shared" / "datasets" / "towhee_reverse_image_search"
API = "/api/v1"


def search_latencies(service: Service, queries: list[bytes], stop: threading.Event | None, n: int = 0,
                     rate: float = 0.0) -> list[float]:  # fmt: skip
    """Search latencies: ``n`` searches, or until ``stop``; back to back, or one every 1/``rate`` seconds."""
    out, i = [], 0
    started = time.perf_counter()
    with httpx.Client(timeout=60) as client:
        while (stop is not None and not stop.is_set()) or (stop is None and i < n):
            if rate > 0 and (wait := started + i / rate - time.perf_counter()) > 0:
                if stop is None:
                    time.sleep(wait)
                elif stop.wait(wait):
                    break
            t = time.perf_counter()
            r = client.post(f"{service.url}{API}/search", files={"image": ("q.jpg", queries[i % len(queries)])},
                            data={"k": "10"})  # fmt: skip
            r.raise_for_status()
            out.append(time.perf_counter() - t)
            i += 1
    return out


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far, with that of their children that have ended (cutime, cstime):
    a PostgreSQL backend that exits during a run moves its CPU to the postmaster's count instead of losing it."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / TICK


def machine_seconds() -> float:
    """CPU time of the whole machine (every core, every process), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / TICK


def postgres_pids(server: PostgresServer) -> list[int]:
    """The postmaster and its children (the backends serving the service and the workers, its own helpers)."""
    master = int((server.data / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                children.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return [master, *children]


def run(server: PostgresServer, n_workers: int, chunk: int, tmp: Path, queries: list[bytes], rate: float) -> dict:
    url = server.create_database(f"bench_{n_workers}_{int(time.time())}")
    common = {"database_url": url, "job_chunk": str(chunk), "source_roots": f'["{TOWHEE}"]'}
    home = tmp / f"api-{n_workers}"
    assert cli(home, "index", str(TOWHEE / "test"), **common).returncode == 0
    service = Service(home, serve_worker="0", **common).start()
    workers = []
    try:
        idle = search_latencies(service, queries, None, n=100)
        workers = [start_worker(tmp / f"w{n_workers}-{i}", tmp / f"w{n_workers}-{i}.log", **common)
                   for i in range(n_workers)]  # fmt: skip
        time.sleep(3)  # let them load the model
        stop = threading.Event()
        during: list[float] = []
        client = threading.Thread(target=lambda: during.extend(search_latencies(service, queries, stop, rate=rate)))
        assert service.proc is not None
        groups = {"workers": lambda: [w.pid for w in workers], "service": lambda: [service.proc.pid],
                  "postgres": lambda: postgres_pids(server)}  # fmt: skip
        before = {name: cpu_seconds(pids()) for name, pids in groups.items()} | {"machine": machine_seconds()}
        job = httpx.post(f"{service.url}{API}/jobs/index", json={"paths": [str(TOWHEE / "train")]}, timeout=30)
        job_id = job.json()["id"]
        if rate >= 0:
            client.start()
        while (state := httpx.get(f"{service.url}{API}/jobs/{job_id}", timeout=30).json())["state"] not in (
            "done", "failed", "cancelled"):  # fmt: skip
            time.sleep(0.2)
        after = {name: cpu_seconds(pids()) for name, pids in groups.items()} | {"machine": machine_seconds()}
        stop.set()
        if rate >= 0:
            client.join()
        cpu = {name: (after[name] - before[name]) / max(state["done"], 1) * 1000 for name in after}
        return {"workers": n_workers, "state": state["state"], "photos": state["done"], "seconds": state["elapsed"],
                "rate": state["done"] / state["elapsed"], "idle": idle, "during": during, "cpu": cpu}  # fmt: skip
    finally:
        for w in workers:
            w.terminate()
            w.wait(30)
        service.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--chunk", type=int, default=64, help="photos per task (LOOKALIKE_JOB_CHUNK)")
    p.add_argument("--search-rate", type=float, default=0.0,
                   help="searches a second during the job (0: back to back; -1: none, the workers alone)")
    args = p.parse_args()
    console = Console(width=220)
    queries = [path.read_bytes() for path in sorted((TOWHEE / "test").glob("*/*"))]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = PostgresServer(tmp / "pg").start()
        try:
            rows = []
            for n in args.workers:
                rows.append(run(server, n, args.chunk, tmp, queries, args.search_rate))
                console.print(f"{n} worker(s): {rows[-1]['rate']:.0f} img/s")
        finally:
            server.stop()
    pace = {0: "searches back to back", -1: "no searches"}.get(args.search_rate, f"{args.search_rate:g} searches/s")
    table = Table(title=f"index job of 1,000 Towhee photos, worker processes with 1 thread each, 2 cores, {pace}",
                  title_justify="left")  # fmt: skip
    for col in ("workers", "job", "seconds", "images/s", "x 1 worker", "search p50 idle", "p99 idle",
                "search p50 during", "p99 during", "searches during", "CPU ms/photo: workers", "service",
                "postgres", "machine"):  # fmt: skip
        table.add_column(col, justify="right")
    base = rows[0]["rate"]
    for r in rows:
        ms = lambda v, q: f"{np.percentile(v, q) * 1000:.0f} ms" if v else "-"  # noqa: E731
        table.add_row(str(r["workers"]), r["state"], f"{r['seconds']:.1f}", f"{r['rate']:.0f}",
                      f"{r['rate'] / base:.2f}", ms(r["idle"], 50), ms(r["idle"], 99), ms(r["during"], 50),
                      ms(r["during"], 99), str(len(r["during"])),
                      *(f"{r['cpu'][g]:.1f}" for g in ("workers", "service", "postgres", "machine")))  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
