"""`make demo` on a fresh home: it builds a library of its own and leaves the user's library untouched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_make_demo_uses_its_own_library(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    if not (venv / ".installed").exists() or shutil.which("make") is None:
        pytest.skip("needs the Makefile's installed virtual environment and make")
    home = tmp_path / "user"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")} | {"HOME": str(home)}
    run = subprocess.run(["make", "-C", str(ROOT), "demo", f"VENV={venv}", f"DEMO_HOME={tmp_path / 'demo'}"],
                         env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "precision@10" in run.stdout and "goldfish" in run.stdout
    assert not (home / ".local" / "share" / "lookalike").exists()  # the user's library: untouched
    assert (tmp_path / "demo" / "catalog.sqlite").exists()
