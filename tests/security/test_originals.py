"""Issue #24, points 14 and 15: big originals are read off the event loop; photos behind a read key are not
for shared caches."""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from lookalike.api.app import create_app
from lookalike.config import Settings
from lookalike.library import Library
from tests.services import Service, cli

KEY = "k" * 32


def test_clients_fetching_a_big_original_do_not_stall_the_service(tmp_path: Path) -> None:
    big = tmp_path / "big.png"  # 60 MB of noise, stored without compression
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (4500, 4500, 3), dtype=np.uint8)).save(
        big, compress_level=0
    )
    home = tmp_path / "home"
    assert cli(home, "index", str(big)).returncode == 0
    service = Service(home).start()
    # the fetching clients are curl processes: in this process they would slow the measuring client itself
    loop = f"while true; do curl -s -o /dev/null {service.url}/api/v1/images/1/original || exit; done"
    fetchers = [subprocess.Popen(["sh", "-c", loop]) for _ in range(8)]
    latencies = []
    try:
        time.sleep(2)
        with httpx.Client(timeout=60) as client:
            for _ in range(40):
                started = time.perf_counter()
                assert client.get(f"{service.url}/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.05)
    finally:
        for proc in fetchers:
            proc.kill()
            proc.wait(10)
        service.stop()
    print(f"healthz median {statistics.median(latencies) * 1000:.1f} ms")
    assert statistics.median(latencies) < 0.15, sorted(latencies)  # it was 0.4 s with 8 clients


def test_photos_behind_a_read_key_are_private_to_caches(settings, embedder, photo_dir: Path) -> None:
    s = Settings(**{**settings.model_dump(), "api_key": KEY, "api_key_for_reads": True})
    with Library(s, embedder=embedder) as lib, TestClient(create_app(s, library=lib)) as c:
        lib.index([str(photo_dir)])
        image_id = int(lib.catalog.ids()[0])
        for kind in ("thumbnail", "original"):
            r = c.get(f"/api/v1/images/{image_id}/{kind}", headers={"X-API-Key": KEY})
            assert r.status_code == 200 and r.headers["cache-control"].startswith("private"), kind
