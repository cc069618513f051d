"""A real Milvus standalone server for the tests: PyPI `milvus` 2.3.5 ('embedded Milvus', `milvus-server`).

The server has no listen-address setting and binds every interface, so it is only ever started inside a
private network namespace that has nothing but loopback: `run_in_private_network` re-runs pytest under
`unshare -n` (root) and the tests there start the server on 127.0.0.1. Stopping the `milvus-server` wrapper
leaves its `milvus run standalone` child running, so both are stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

INSIDE = "TESTS_IN_PRIVATE_NETNS"  # set inside the namespace (not LOOKALIKE_*: the tests clear those)
PORT = 19530


def server_binary() -> str | None:
    candidate = Path(sys.executable).parent / "milvus-server"
    return str(candidate) if candidate.exists() else shutil.which("milvus-server")


def only_loopback() -> bool:
    """True when this process's network namespace has no interface but lo."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]  # per namespace, unlike /sys/class/net
    return [line.split(":")[0].strip() for line in lines] == ["lo"]


def run_in_private_network(pytest_args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Run pytest in a new network namespace with only loopback up (needs root and util-linux unshare)."""
    script = 'ip link set lo up && exec "$@"'
    env = os.environ | {INSIDE: "1"}
    cmd = ["unshare", "-n", "--", "sh", "-c", script, "sh", sys.executable, "-m", "pytest", *pytest_args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


SESSION_TTL = 120  # seconds


def start(directory: Path, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """Start `milvus-server --data DIR`; returns (wrapper process, URI) once a client can list collections."""
    if not only_loopback():
        raise RuntimeError("refusing to start milvus-server outside a private network namespace: it binds *")
    binary = server_binary()
    if binary is None:
        raise RuntimeError("milvus-server is missing: pip install 'milvus==2.3.5' 'setuptools<70'")
    from pymilvus import MilvusClient

    directory.mkdir(parents=True, exist_ok=True)
    log = (directory / "milvus-server.log").open("wb")
    # a frozen server (tests/api/test_outage.py) must outlive its freeze: with Milvus's default 30 s session lease
    # a 20 s freeze on a loaded machine expired the lease, and the server then answered "service not ready:
    # Abnormal" until restarted (its own supervisor's job, not Lookalike's)
    proc = subprocess.Popen([binary, "--data", str(directory), "--extra-config", f"common.session.ttl={SESSION_TTL}"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    uri = f"http://127.0.0.1:{PORT}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"milvus-server exited: {(directory / 'milvus-server.log').read_text()[-2000:]}")
        try:
            client = MilvusClient(uri=uri, timeout=2)
            client.list_collections()
            client.close()
            return proc, uri
        except Exception:
            time.sleep(1)
    stop(proc)
    raise RuntimeError(f"milvus-server was not ready in {timeout:.0f} s")


SESSION: dict = {}  # the session's server: its process and data folder (a test may stop and start it again)


def start_session(directory: Path) -> str:
    proc, uri = start(directory)
    SESSION.update(proc=proc, directory=directory)
    return uri


def stop_session() -> None:
    if SESSION.get("proc") is not None:
        stop(SESSION.pop("proc"))


def signal_session(sig: int) -> None:
    """Send ``sig`` to the session's server and its children: SIGSTOP makes it hang as a partitioned or frozen server
    does (connections stay open, nothing answers), SIGCONT brings it back. (Stopped and started again on its data,
    Milvus Lite 2.3.5 did not answer within 120 s here: its components kept dialling the old root coordinator.)"""
    proc = SESSION["proc"]
    for pid in [proc.pid, *children(proc.pid)]:
        for child in [pid, *children(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in task.read_text().split()]
    return found


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the wrapper and its `milvus run standalone` child by PID, SIGKILL what is left after 20 s."""
    pids = [proc.pid, *children(proc.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 20
    while time.time() < deadline and any(alive(p) for p in pids):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-1, os.WNOHANG)
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0]
    except OSError:
        return False
    return state != "Z"
