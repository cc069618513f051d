"""Peak memory of `lookalike serve` under a flood of huge photos, with and without the decode cap.

The query photo is an 8,000 x 8,000 PNG of one colour: 64 megapixels (under the 80 MP limit) in ~200 KB
(under the 20 MB upload limit), about 190 MB once decoded. N clients post it to /api/v1/search at once,
twice each. Peak RSS is the server's VmHWM from /proc. `cap` is the default
(LOOKALIKE_MAX_CONCURRENT_DECODES: two per core); `no cap` sets it to 256 (its maximum).

    python bench/flood.py
    python bench/flood.py --clients 32
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.services import Service, cli  # noqa: E402

TOWHEE = ROOT.parent / "shared" / "datasets" / "towhee_reverse_image_search"


def huge_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8000, 8000), (90, 140, 200)).save(buf, "PNG")
    return buf.getvalue()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def flood(service: Service, data: bytes, clients: int) -> dict:
    statuses: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=300) as c:
            for _ in range(2):
                r = c.post(f"{service.url}/api/v1/search", files={"image": ("huge.png", data, "image/png")})
                with lock:
                    statuses.append(r.status_code)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    ok = httpx.post(f"{service.url}/api/v1/search", files={"image": ("q.jpg", next((TOWHEE / "test").glob("*/*"))
                    .read_bytes())}, timeout=60).status_code  # fmt: skip
    return {"statuses": statuses, "seconds": seconds, "after": ok}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16)
    args = p.parse_args()
    data = huge_png()
    console = Console(width=150)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        home = Path(tmp_name) / "lib"
        assert cli(home, "index", str(TOWHEE / "test")).returncode == 0
        for name, cap in (("cap (default)", None), ("no cap", "256")):
            extra = {"max_concurrent_decodes": cap, "decode_wait": "120"} if cap else {"decode_wait": "120"}
            service = Service(home, **extra).start()
            try:
                base = peak_rss_mb(service.proc.pid)
                result = flood(service, data, args.clients)
                rows.append((name, base, peak_rss_mb(service.proc.pid), result))
                console.print(f"{name}: peak {rows[-1][2]:.0f} MB")
            finally:
                service.stop()
    table = Table(title=f"{args.clients} clients x 2 searches with a 64-megapixel PNG ({len(data) // 1024} KB), "
                        f"{os.cpu_count()} cores", title_justify="left")  # fmt: skip
    for col in ("decodes", "RSS before MB", "peak RSS MB", "seconds", "answers", "a search after"):
        table.add_column(col, justify="left" if col == "decodes" else "right")
    for name, base, peak, r in rows:
        answers = ", ".join(f"{n} x {code}" for code, n in sorted({c: r["statuses"].count(c)
                                                                   for c in r["statuses"]}.items()))  # fmt: skip
        table.add_row(name, f"{base:.0f}", f"{peak:.0f}", f"{r['seconds']:.1f}", answers, str(r["after"]))
    console.print(table)


if __name__ == "__main__":
    main()
