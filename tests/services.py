"""`lookalike serve` and `lookalike` CLI runs as real processes, for tests of processes sharing a library."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import MODELS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lookalike_env(home: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env |= {"LOOKALIKE_HOME": str(home), "LOOKALIKE_MODELS_DIR": str(MODELS), "LOOKALIKE_ALLOW_DOWNLOAD": "0"}
    return env | {f"LOOKALIKE_{k.upper()}": v for k, v in settings.items()}


def cli(home: Path, *args: str, timeout: float = 300, **settings: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookalike", *args], env=lookalike_env(home, **settings),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


class Service:
    """One `lookalike serve` process on 127.0.0.1."""

    def __init__(self, home: Path, **settings: str) -> None:
        self.home, self.settings = home, settings
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> Service:
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / f"serve-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lookalike", "serve", "--port", str(self.port)],
            env=lookalike_env(self.home, **self.settings), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lookalike serve exited:\n{self.log()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"lookalike serve was not ready in {timeout:.0f} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.home.glob("serve-*.log")))

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    # the API -------------------------------------------------------------------------------------------
    def upload(self, name: str, data: bytes, client: httpx.Client | None = None) -> int:
        """Upload one photo; returns its id once the service acknowledged it."""
        post = (client or httpx).post
        r = post(f"{self.url}/api/v1/images", files={"images": (name, data, "image/jpeg")}, timeout=60)
        r.raise_for_status()
        body = r.json()
        (entry,) = body["added"] + body["duplicates"]
        return int(entry["id"])

    def top1(self, data: bytes) -> tuple[int, float]:
        r = httpx.post(f"{self.url}/api/v1/search", files={"image": ("q.jpg", data, "image/jpeg")},
                       data={"k": "1"}, timeout=60)  # fmt: skip
        r.raise_for_status()
        hit = r.json()["hits"][0]
        return int(hit["id"]), float(hit["similarity"])

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/api/v1/stats", timeout=30).json()
