"""Wall time of `lookalike --help` and of a search on a small library, median of several runs.

A new user types these first; every command pays Python's start-up plus what it imports. The library (100
Towhee test photos) is indexed once before timing.

    python bench/startup.py --runs 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

TOWHEE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "towhee_reverse_image_search"


def wall(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args()
    lookalike = [sys.executable, "-m", "lookalike"]
    query = str(next((TOWHEE / "test" / "goldfish").iterdir()))
    with tempfile.TemporaryDirectory() as home:
        subprocess.run([*lookalike, "--home", home, "index", str(TOWHEE / "test")], check=True, capture_output=True)
        rows = {
            "lookalike --help": [*lookalike, "--help"],
            "lookalike search PHOTO (100 photos)": [*lookalike, "--home", home, "search", query, "-k", "5"],
        }
        table = Table(title=f"wall time, median of {args.runs} runs", title_justify="left")
        for col in ("command", "median s", "min s", "max s"):
            table.add_column(col, justify="left" if col == "command" else "right")
        for name, cmd in rows.items():
            times = [wall(cmd) for _ in range(args.runs)]
            table.add_row(name, f"{statistics.median(times):.2f}", f"{min(times):.2f}", f"{max(times):.2f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
