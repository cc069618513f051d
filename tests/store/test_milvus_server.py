"""The Milvus backend against a real Milvus standalone server, in a private network namespace.

`milvus-server` binds every interface and has no setting to stop it, so this test re-runs the Milvus
tests (the shared vector-index conformance suite, the move of a library to Milvus, and replicas sharing
a PostgreSQL catalog, the Milvus server and a SeaweedFS bucket) under `unshare -n` with only loopback
up; there the session fixtures start the servers on 127.0.0.1 (PostgreSQL on a unix socket).
"""

from __future__ import annotations

import os
import re
import shutil

import pytest

from tests import milvusserver


@pytest.mark.slow
def test_conformance_and_migration_against_a_milvus_standalone_server() -> None:
    if os.environ.get(milvusserver.INSIDE):
        pytest.skip("this is the run inside the namespace")
    missing = [why for ok, why in [
        (os.geteuid() == 0, "root (for unshare -n)"),
        (shutil.which("unshare") and shutil.which("ip"), "unshare and ip (util-linux, iproute2)"),
        (milvusserver.server_binary(), "milvus-server (pip install 'milvus==2.3.5')"),
    ] if not ok]  # fmt: skip
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Milvus server tests; missing: {', '.join(missing)}")
        pytest.skip(f"needs {', '.join(missing)}")
    args = ["-q", "-p", "no:cacheprovider", "-o", "addopts=-ra", "-k", "milvus_server",
            "tests/store/test_vectors.py", "tests/test_library.py", "tests/api/test_replicas.py",
            "tests/api/test_outage.py"]  # fmt: skip
    run = milvusserver.run_in_private_network(args)
    output = run.stdout[-6000:] + run.stderr[-3000:]
    assert run.returncode == 0, output
    summary = run.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    # (7 + 5 conformance tests) x HNSW, IVF; the migration; two replicas, a killed replica (Milvus + S3); a job
    # through a Milvus restart
    assert passed >= 28 and "skipped" not in summary, output
