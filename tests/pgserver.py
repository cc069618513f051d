"""A real PostgreSQL server for the tests: Debian's postgresql package, started with initdb + pg_ctl.

It listens on a unix socket in a temporary folder only (no TCP port), with trust authentication for
that socket: nothing outside this machine can reach it. As root, the server runs as the ``postgres``
user (PostgreSQL refuses to run as root). ``.ci/run`` installs the package when it is missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import time
import uuid
from pathlib import Path


def binaries() -> Path | None:
    """The newest installed server's bin folder (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


class PostgresServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "sock"
        self.bin = binaries()
        if self.bin is None:
            raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")

    def start(self) -> PostgresServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for path in (self.root, self.socket_dir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            os.chmod(self.root, 0o755)
            # the tests' own temp folders must be reachable for the server user
            with contextlib.suppress(OSError):
                for parent in self.root.parents:
                    if parent == Path("/"):
                        break
                    os.chmod(parent, os.stat(parent).st_mode | 0o111)
        subprocess.run(_as_server_user([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                                        "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]),
                       check=True, capture_output=True)  # fmt: skip
        self.resume()
        return self

    @property
    def options(self) -> str:
        return (f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                "-c shared_buffers=64MB")  # fmt: skip

    def _ctl(self, *args: str) -> None:
        subprocess.run(_as_server_user([str(self.bin / "pg_ctl"), "-D", str(self.data), *args]), check=True,
                       capture_output=True)  # fmt: skip

    def resume(self) -> None:
        """Start the (initialised) server; waits until it accepts connections."""
        self._ctl("-o", self.options, "-w", "-t", "60", "-l", str(self.root / "server.log"), "start")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, the server is back within a second or two."""
        self._ctl("-o", self.options, "-m", "fast", "-w", "-t", "60", "-l", str(self.root / "server.log"), "restart")

    def pause(self) -> None:
        """``pg_ctl stop -m fast``: connections cut, nothing accepted until ``resume()``."""
        self._ctl("-m", "fast", "-w", "-t", "60", "stop")

    def stop(self) -> None:
        subprocess.run(_as_server_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                       capture_output=True)  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def create_database(self, name: str | None = None) -> str:
        """A fresh empty database; returns its URL."""
        import psycopg

        name = name or "t_" + uuid.uuid4().hex[:12]
        deadline = time.time() + 30
        while True:
            try:
                with psycopg.connect(f"host={self.socket_dir} user=postgres dbname=postgres", autocommit=True) as c:
                    c.execute(f'CREATE DATABASE "{name}"')
                return self.url(name)
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
