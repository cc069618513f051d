"""Index jobs run by 1 and 2 `lookalike worker` processes, and search latency while they run.

For each worker count: a fresh PostgreSQL database (a throwaway server from Debian's package, as the tests
start it), a `lookalike serve` process on it with no worker of its own holding the 100 Towhee test photos,
then N `lookalike worker --threads 1` processes and an index job of the 1,000 Towhee train photos posted to
the service. A client searches the service (k=10, one request at a time) before and during the job.
images/s = photos / the job's elapsed time (from its first claimed task to its end).

    python bench/workers.py
    python bench/workers.py --workers 1 2 --chunk 64
"""

from __future__ import annotations

import argparse
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


def search_latencies(service: Service, queries: list[bytes], stop: threading.Event | None, n: int = 0) -> list[float]:
    out, i = [], 0
    with httpx.Client(timeout=60) as client:
        while (stop is not None and not stop.is_set()) or (stop is None and i < n):
            t = time.perf_counter()
            r = client.post(f"{service.url}{API}/search", files={"image": ("q.jpg", queries[i % len(queries)])},
                            data={"k": "10"})  # fmt: skip
            r.raise_for_status()
            out.append(time.perf_counter() - t)
            i += 1
    return out


def run(server: PostgresServer, n_workers: int, chunk: int, tmp: Path, queries: list[bytes]) -> dict:
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
        client = threading.Thread(target=lambda: during.extend(search_latencies(service, queries, stop)))
        job = httpx.post(f"{service.url}{API}/jobs/index", json={"paths": [str(TOWHEE / "train")]}, timeout=30)
        job_id = job.json()["id"]
        client.start()
        while (state := httpx.get(f"{service.url}{API}/jobs/{job_id}", timeout=30).json())["state"] not in (
            "done", "failed", "cancelled"):  # fmt: skip
            time.sleep(0.2)
        stop.set()
        client.join()
        return {"workers": n_workers, "state": state["state"], "photos": state["done"], "seconds": state["elapsed"],
                "rate": state["done"] / state["elapsed"], "idle": idle, "during": during}  # fmt: skip
    finally:
        for w in workers:
            w.terminate()
            w.wait(30)
        service.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--chunk", type=int, default=64, help="photos per task (LOOKALIKE_JOB_CHUNK)")
    args = p.parse_args()
    console = Console(width=150)
    queries = [path.read_bytes() for path in sorted((TOWHEE / "test").glob("*/*"))]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = PostgresServer(tmp / "pg").start()
        try:
            rows = []
            for n in args.workers:
                rows.append(run(server, n, args.chunk, tmp, queries))
                console.print(f"{n} worker(s): {rows[-1]['rate']:.0f} img/s")
        finally:
            server.stop()
    table = Table(title="index job of 1,000 Towhee photos, worker processes with 1 thread each, 2 cores",
                  title_justify="left")  # fmt: skip
    for col in ("workers", "job", "seconds", "images/s", "x 1 worker", "search p50 idle", "p99 idle",
                "search p50 during", "p99 during", "searches during"):  # fmt: skip
        table.add_column(col, justify="right")
    base = rows[0]["rate"]
    for r in rows:
        ms = lambda v, q: f"{np.percentile(v, q) * 1000:.0f} ms" if v else "-"  # noqa: E731
        table.add_row(str(r["workers"]), r["state"], f"{r['seconds']:.1f}", f"{r['rate']:.0f}",
                      f"{r['rate'] / base:.2f}", ms(r["idle"], 50), ms(r["idle"], 99), ms(r["during"], 50),
                      ms(r["during"], 99), str(len(r["during"])))  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
