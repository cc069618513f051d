"""How long the first search takes once `lookalike serve` says it is ready (issue 25: 6.5 s, the keypoint index
loading on first use), and how long the service took to say so.

Each run starts a service with a fresh folder on a shared catalog (PostgreSQL: nothing of the indexes is on
disk yet, everything is built from the catalog), waits for `/healthz` to answer 200, then times three searches
of a photo that is not in the library. The catalog is filled once with the first ``--photos`` Towhee train
photos when it is empty.

    python bench/first_search.py --database-url postgresql://... --photos 800 --runs 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SHARED = Path(__file__).resolve().parents[2] / "shared"
TOWHEE = SHARED / "datasets" / "towhee_reverse_image_search"


def env(home: Path, url: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    return base | {"LOOKALIKE_HOME": str(home), "LOOKALIKE_DATABASE_URL": url, "LOOKALIKE_ALLOW_DOWNLOAD": "0",
                   "LOOKALIKE_MODELS_DIR": str(SHARED / "models")}  # fmt: skip


def fill(url: str, photos: int, work: Path) -> None:
    folder = work / "photos"
    for path in sorted((TOWHEE / "train").glob("*/*"))[:photos]:
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.parent.name)
    cmd = [sys.executable, "-m", "lookalike", "index", str(folder)]
    subprocess.run(cmd, env=env(work / "indexer", url), check=True, capture_output=True)


def one_run(url: str, work: Path, query: bytes) -> tuple[float, list[float]]:
    """(seconds until ready, seconds of three searches)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = Path(tempfile.mkdtemp(dir=work))
    cmd = [sys.executable, "-m", "lookalike", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env(home, url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base, started = f"http://127.0.0.1:{port}", time.perf_counter()
    try:
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.perf_counter() - started > 600:
                raise RuntimeError("the service did not get ready")
            time.sleep(0.1)
        ready = time.perf_counter() - started
        times = []
        for _ in range(3):
            t = time.perf_counter()
            r = httpx.post(f"{base}/api/v1/search", files={"image": ("q.jpg", query, "image/jpeg")}, timeout=300)
            r.raise_for_status()
            times.append(time.perf_counter() - t)
        return ready, times
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--photos", type=int, default=800)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lookalike-first-search-"))
    try:
        fill(args.database_url, args.photos, work)  # photos already there are found unchanged
        query = sorted((TOWHEE / "test").glob("*/*"))[5].read_bytes()
        for n in range(args.runs):
            ready, times = one_run(args.database_url, work, query)
            print(f"run {n + 1}: ready after {ready:.1f} s; searches " + ", ".join(f"{t:.3f} s" for t in times))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
