"""Process-wide tuning applied by the entry points (lookalike.tuning)."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, sys
from lookalike.config import Settings
from lookalike.tuning import tune_process
tune_process(Settings())
import numpy
from threadpoolctl import threadpool_info
blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
print(json.dumps({"blas": blas, "switch": sys.getswitchinterval()}))
"""


def test_tuning_before_numpy_is_imported_still_limits_its_blas() -> None:
    """The CLI tunes the process before anything imported numpy: the limit must still reach OpenBLAS (it did not:
    threadpoolctl limits only loaded libraries, and a search spent twice the CPU in spinning BLAS threads)."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True,
                         env={"LOOKALIKE_BLAS_THREADS": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    found = json.loads(out.stdout)
    assert found["blas"] and all(n == 1 for n in found["blas"]), found
    assert found["switch"] == 0.001
