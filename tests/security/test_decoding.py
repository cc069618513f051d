"""Issue #24, point 3: small files of large float, 32-bit and 16-bit photos must not blow up memory.

The photos are made here with Pillow (zeros compress to a few hundred KB); each is decoded in a fresh process
so that its peak memory (ru_maxrss) is its own."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.services import Service

SIDE = 8900  # 79 megapixels, under the default max_pixels (80 M)
MB = 2**20

PEAK = """
import resource, sys
from lookalike.imaging import decode
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
decoded = decode(open(sys.argv[1], "rb").read(), 80_000_000, 256)
assert decoded.image.mode == "RGB" and min(decoded.image.size) >= 512, decoded.image.size
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""


def make(path: Path, mode: str, fmt: str, side: int = SIDE) -> Path:
    Image.new(mode, (side, side)).save(path, fmt, **({"compression": "tiff_deflate"} if fmt == "TIFF" else {}))
    return path


@pytest.mark.parametrize(("mode", "fmt"), [("F", "TIFF"), ("I", "TIFF"), ("I;16", "PNG"), ("I;16", "TIFF")])
def test_a_large_float_or_deep_photo_is_decoded_within_its_own_size(tmp_path: Path, mode: str, fmt: str) -> None:
    path = make(tmp_path / f"zeros.{fmt.lower()}", mode, fmt)
    assert path.stat().st_size < 2 * MB
    run = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    grown = int(run.stdout.split()[-1])
    in_memory = SIDE * SIDE * (2 if mode == "I;16" else 4)  # what Pillow holds for the decoded photo itself
    assert grown < in_memory + 150 * MB, (mode, fmt, grown // MB)  # it was 5x that: float64 copies before reducing


def peak_rss(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_concurrent_decodes_share_one_memory_budget(tmp_path: Path) -> None:
    """Six clients send a 159 MB-when-decoded float TIFF at once; the service holds at most 300 MB of decodes (one
    such photo at a time), and a photo that alone needs more is refused."""
    tiff = make(tmp_path / "zeros.tiff", "F", "TIFF", side=6300).read_bytes()
    service = Service(tmp_path / "home", max_decode_memory=str(300 * MB)).start()
    try:
        before = peak_rss(service.proc.pid)
        statuses: list[int] = []

        def search() -> None:
            r = httpx.post(f"{service.url}/api/v1/search", files={"image": ("z.tiff", tiff, "image/tiff")},
                           timeout=300)  # fmt: skip
            statuses.append(r.status_code)

        threads = [threading.Thread(target=search) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert statuses == [200] * 6, statuses
        grown = peak_rss(service.proc.pid) - before
        assert grown < 600 * MB, grown // MB  # 300 MB of decodes, and the rest of six searches
        too_big = make(tmp_path / "big.tiff", "F", "TIFF", side=SIDE).read_bytes()  # 316 MB alone: over 300 MB
        r = httpx.post(f"{service.url}/api/v1/search", files={"image": ("b.tiff", too_big, "image/tiff")}, timeout=60)
        assert r.status_code == 413 and "max_decode_memory" in r.json()["detail"]
    finally:
        service.stop()
