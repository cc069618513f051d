"""Peak memory of `lookalike serve` under a flood of huge photos, with and without the decode cap.

Two query photos: an 8,000 x 8,000 PNG of one colour, 64 megapixels (under the 80 MP limit) in ~200 KB
(under the 20 MB upload limit), about 190 MB once decoded; and an 8,900 x 8,900 float TIFF of zeros
(issue #24), 79 megapixels in ~570 KB, 316 MB once decoded (4 bytes a pixel). N clients post one to
/api/v1/search at once, twice each, while one more client runs a normal search a second into the flood
("normal search s"). Peak RSS is the server's VmHWM from /proc. `cap` is the default
(LOOKALIKE_MAX_CONCURRENT_DECODES: sixteen per core, and the 1 GiB LOOKALIKE_MAX_DECODE_MEMORY); `no cap`
sets the count to 256 (its maximum).

    python bench/flood.py
    python bench/flood.py --clients 32 --photo tiff
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


def huge_tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("F", (8900, 8900)).save(buf, "TIFF", compression="tiff_deflate")
    return buf.getvalue()


PHOTOS = {"png": ("64 MP PNG", huge_png, "image/png"), "tiff": ("79 MP float TIFF", huge_tiff, "image/tiff")}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def normal_search(service: Service) -> int:
    query = next((TOWHEE / "test").glob("*/*")).read_bytes()
    return httpx.post(f"{service.url}/api/v1/search", files={"image": ("q.jpg", query)}, timeout=300).status_code


def flood(service: Service, data: bytes, media_type: str, clients: int) -> dict:
    statuses: list[int] = []
    lock = threading.Lock()
    during: dict = {}

    def client() -> None:
        with httpx.Client(timeout=300) as c:
            for _ in range(2):
                r = c.post(f"{service.url}/api/v1/search", files={"image": ("huge", data, media_type)})
                with lock:
                    statuses.append(r.status_code)

    def normal() -> None:  # a person's search, a second into the flood
        time.sleep(1)
        started = time.perf_counter()
        during["status"] = normal_search(service)
        during["seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)] + [threading.Thread(target=normal)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    return {"statuses": statuses, "seconds": seconds, "during": during, "after": normal_search(service)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--photo", choices=["png", "tiff", "both"], default="both")
    args = p.parse_args()
    console = Console(width=170)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        home = Path(tmp_name) / "lib"
        assert cli(home, "index", str(TOWHEE / "test")).returncode == 0
        for kind in ("png", "tiff") if args.photo == "both" else (args.photo,):
            label, make, media_type = PHOTOS[kind]
            data = make()
            for name, cap in (("cap (default)", None), ("no cap", "256")):
                extra = {"max_concurrent_decodes": cap, "decode_wait": "120"} if cap else {"decode_wait": "120"}
                service = Service(home, **extra).start()
                try:
                    base = peak_rss_mb(service.proc.pid)
                    result = flood(service, data, media_type, args.clients)
                    rows.append((f"{label} ({len(data) // 1024} KB)", name, base, peak_rss_mb(service.proc.pid),
                                 result))  # fmt: skip
                    console.print(f"{label}, {name}: peak {rows[-1][3]:.0f} MB")
                finally:
                    service.stop()
    table = Table(title=f"{args.clients} clients x 2 searches with a huge photo, {os.cpu_count()} cores",
                  title_justify="left")  # fmt: skip
    for col in ("photo", "decodes", "RSS before MB", "peak RSS MB", "seconds", "answers", "normal search s",
                "a search after"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("photo", "decodes") else "right")
    for photo, name, base, peak, r in rows:
        answers = ", ".join(f"{n} x {code}" for code, n in sorted({c: r["statuses"].count(c)
                                                                   for c in r["statuses"]}.items()))  # fmt: skip
        during = f"{r['during']['seconds']:.1f} ({r['during']['status']})"
        table.add_row(photo, name, f"{base:.0f}", f"{peak:.0f}", f"{r['seconds']:.1f}", answers, during,
                      str(r["after"]))  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
