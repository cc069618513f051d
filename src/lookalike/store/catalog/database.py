"""Connections to the catalog database: SQLite (the default, one file) or PostgreSQL (shared).

SQLAlchemy Core over the standard drivers (sqlite3, psycopg 3): one set of SQL texts for both databases,
expanding ``IN`` parameters, a thread-safe connection pool, and dialect-aware DDL where the two differ.
Measured against raw psycopg in bench/catalog.py (bench/RESULTS.md, "Catalog"): the per-call overhead is a
few tens of microseconds, small next to a round trip to the server, and we keep one code path instead of two.

Transactions: writes run in ``write()`` (SQLite ``BEGIN IMMEDIATE``: one writer at a time, no upgrade
deadlocks; PostgreSQL READ COMMITTED). ``retrying()`` is the one place that waits out a database that blinks: a
deadlock, a serialization failure, or a lost connection (a restart, a failover, a full server) runs the write
again with capped exponential backoff (lookalike.store.retry) for up to ``patience`` seconds, then raises
``CatalogUnavailable``. A read finds the server gone: with ``read_patience`` (a command-line process, whose run
must not end on a failover) its statement runs again on a new connection, for up to that many seconds (a read on
PostgreSQL is autocommit, each statement on its own, so running one again is the same read); without (the service)
it raises ``CatalogUnavailable`` at once (a request answers 503; a worker waits and runs its chunk again).
Reads run in ``read()``:
on PostgreSQL in autocommit (no BEGIN/ROLLBACK round trips, measured in bench/catalog.py), on SQLite in a
deferred transaction; in WAL mode SQLite readers never wait for writers.

Locks between processes: PostgreSQL advisory locks, or ``flock`` on files beside the SQLite database.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection

from lookalike.store import retry
from lookalike.store.errors import Unavailable

T = TypeVar("T")
FEED_LOCK = "change-feed"
PATIENCE = 15.0  # seconds a write waits for the database to come back before giving up

# SQLSTATEs of a database that is away or busy, not of a wrong statement: serialization failure, deadlock, the
# server shutting down or starting up, too many connections; class 08 is every connection exception
_RETRY_STATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300"})
_RACE_STATES = frozenset({"40001", "40P01"})
# a server that answers but refuses these credentials or this database will not change its mind by waiting
_PERMANENT = ("password authentication failed", "does not exist", "no pg_hba.conf entry", "role ")


class DatabaseError(RuntimeError):
    """The catalog database cannot be reached or used; the message names the setting."""


class CatalogUnavailable(DatabaseError, Unavailable):
    """The catalog database cannot be reached right now (restarting, failing over, down, full): retry later."""

    part = "the catalog database"


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unreachable(exc: BaseException) -> bool:
    """True when ``exc`` says the database is away (connection refused or lost, shutting down, starting up,
    full), not that the statement or the data is wrong: the same statement will work once it is back."""
    if isinstance(exc, CatalogUnavailable):
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if any(p in str(exc.orig) for p in _PERMANENT):
        return False
    if exc.connection_invalidated:
        return True
    code = getattr(exc.orig, "sqlstate", None)
    if code:
        return code.startswith("08") or (code in _RETRY_STATES and code not in _RACE_STATES)
    name = getattr(exc.orig, "sqlite_errorname", None)
    if name is not None:  # SQLite: a locked or vanished file; "no such table" and the like are bugs
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN"))
    # psycopg: a refused or broken connection carries no SQLSTATE
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))


def retryable(exc: BaseException) -> bool:
    """Worth running the same transaction again: the database was away, or the transaction lost a race
    (deadlock, serialization failure)."""
    if unreachable(exc):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and getattr(exc.orig, "sqlstate", None) in _RACE_STATES


@contextlib.contextmanager
def reachable() -> Iterator[None]:
    """Turn a database error that means "the server is away" into ``CatalogUnavailable``; others pass."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        if unreachable(exc):
            raise CatalogUnavailable(f"the catalog database is unreachable: {_reason(exc)}") from exc
        raise


def _lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def normalise_url(url: str) -> str:
    """postgres:// and postgresql:// use psycopg 3; sqlite:/// stays."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return url
    raise DatabaseError(
        f"LOOKALIKE_DATABASE_URL must start with postgresql:// (or sqlite:///path): got {url.split(':', 1)[0]}://..."
    )


def redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


class Database:
    """An engine plus the few things that differ between SQLite and PostgreSQL."""

    def __init__(self, url: str, schema: str | None = None, patience: float = PATIENCE,
                 read_patience: float = 0.0) -> None:  # fmt: skip
        self.url = normalise_url(url)
        self.patience = patience
        self.read_patience = read_patience
        self.dialect = "postgresql" if self.url.startswith("postgresql") else "sqlite"
        self.schema = schema
        self.path: Path | None  # the SQLite file
        if self.dialect == "sqlite":
            self.path = Path(self.url.removeprefix("sqlite:///"))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(
                self.url, connect_args={"timeout": 60, "check_same_thread": False}, pool_size=8, max_overflow=24
            )
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.path = None
            args: dict = {"connect_timeout": 10}
            if schema:
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
                    raise DatabaseError(f"LOOKALIKE_DATABASE_SCHEMA {schema!r} is not a plain SQL name")
                args["options"] = f"-c search_path={schema}"
            self.engine = sa.create_engine(
                self.url, connect_args=args, pool_size=8, max_overflow=24, pool_pre_ping=True, pool_recycle=1800
            )
        try:
            with self.engine.connect() as conn:
                if self.dialect == "postgresql" and schema:
                    conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                    conn.commit()
        except sa.exc.OperationalError as exc:
            self.engine.dispose()
            kind = CatalogUnavailable if unreachable(exc) else DatabaseError
            raise kind(
                f"cannot open the catalog database {redact(url)} (LOOKALIKE_DATABASE_URL): {_reason(exc)}"
            ) from None

    def close(self) -> None:
        self.engine.dispose()

    @property
    def shared(self) -> bool:
        """True when processes on other machines may use this catalog too."""
        return self.dialect == "postgresql"

    # transactions ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        # PostgreSQL: autocommit, no BEGIN / ROLLBACK round trips around each read (each statement sees
        # committed data). SQLite: a deferred read transaction; statements outside one slowed concurrent
        # writers by orders of magnitude (the feed test: 0.35 s against 113 s for 120 writes)
        if self.dialect == "postgresql" and self.read_patience > 0:
            with contextlib.closing(_Rereading(self)) as again:
                yield cast(Connection, again)
            return
        with reachable(), self._reader() as conn:
            yield conn

    def autocommit(self) -> Connection:
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def _reader(self) -> Connection:
        return self.autocommit() if self.dialect == "postgresql" else self.engine.connect()

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        with reachable():
            conn = self.engine.connect().execution_options(immediate=True)
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.close()

    def retrying(self, fn: Callable[[Connection], T], patience: float | None = None) -> T:
        """Run ``fn`` in a write transaction; again, with capped exponential backoff, after a deadlock, a
        serialization failure or a lost connection, for up to ``patience`` seconds (default: this database's).
        A database still away after that raises ``CatalogUnavailable``: the caller decides what waiting longer
        means (a request answers 503, a worker keeps its chunk and tries again)."""
        wait = self.patience if patience is None else patience
        return retry.again(lambda: self._transaction(fn), retryable, wait)

    def _transaction(self, fn: Callable[[Connection], T]) -> T:
        with self.write() as conn:
            return fn(conn)

    def ping(self) -> None:
        """Raise ``CatalogUnavailable`` unless the database answers a query now (readiness checks): never waits."""
        with reachable(), self._reader() as conn:
            conn.execute(sa.text("SELECT 1")).scalar()

    def wait_reachable(self, stop: Callable[[], bool], patience: float) -> bool:
        """Wait until the database answers again; False when ``stop()`` turned true or ``patience`` seconds
        passed first. For processes that hold work while the database is away."""
        return retry.wait_until(self.ping, stop, patience)

    def order_feed(self, conn: Connection) -> None:
        """Called right before a transaction appends to the change feed.

        PostgreSQL hands out sequence numbers at insert time, not at commit, so a reader could see
        change 11 committed before change 10 and skip 10 forever. Holding one transaction-level
        advisory lock from the first feed insert to the commit makes numbering order = commit order.
        SQLite has one writer at a time already.
        """
        if self.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(FEED_LOCK)})

    # locks between processes ---------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, wait: bool = True) -> Iterator[Held]:
        """An exclusive lock shared by every process of this catalog; yields a false ``Held`` when ``wait`` is off
        and another process holds it. PostgreSQL releases the lock with its session when the server restarts: a
        holder about to do what only the lock allows calls ``Held.check()`` first."""
        if self.dialect == "postgresql":
            with reachable():
                conn = self.autocommit()
            try:
                key = _lock_key(name)
                with reachable():
                    if wait:
                        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                        got = True
                    else:
                        got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
                try:
                    yield Held(name, got, conn)
                finally:
                    if got:  # a session the server ended holds nothing any more: nothing to release
                        with contextlib.suppress(sa.exc.SQLAlchemyError):
                            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            finally:
                with contextlib.suppress(sa.exc.SQLAlchemyError):
                    conn.close()
            return
        assert self.path is not None  # SQLite
        folder = self.path.with_name(self.path.name + "-locks")
        folder.mkdir(exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
        fd = os.open(folder / safe, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                got = True
            except BlockingIOError:
                got = False
            try:
                yield Held(name, got)
            finally:
                if got:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # sizes -------------------------------------------------------------------------------------------
    def table_bytes(self, tables: tuple[str, ...]) -> dict[str, int]:
        """Bytes each table takes with its indexes (PostgreSQL: pg_total_relation_size; SQLite: dbstat)."""
        out = {}
        with self.read() as conn:
            for table in tables:
                if self.dialect == "postgresql":
                    out[table] = int(
                        conn.execute(sa.text("SELECT pg_total_relation_size(:t)"), {"t": table}).scalar_one()
                    )
                else:
                    rows = conn.execute(
                        sa.text(
                            "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name = :t OR name IN "
                            "(SELECT name FROM sqlite_master WHERE tbl_name = :t AND type = 'index')"
                        ),
                        {"t": table},
                    )
                    out[table] = int(rows.scalar_one())
        return out

    def disk_bytes(self) -> int:
        if self.dialect == "postgresql":
            with self.read() as conn:
                return int(conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one())
        assert self.path is not None  # SQLite
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())


def _sqlite_connect(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's own handling is broken)
    dbapi_conn.execute("PRAGMA journal_mode=WAL")
    dbapi_conn.execute("PRAGMA synchronous=NORMAL")
    dbapi_conn.execute("PRAGMA foreign_keys=ON")
    dbapi_conn.execute("PRAGMA busy_timeout=60000")
    # SQLite's LOWER knows ASCII only: "Été" would never match "été" (PostgreSQL's follows the database's locale)
    dbapi_conn.create_function("lower", 1, _lower, deterministic=True)


def _lower(value):
    return value.lower() if isinstance(value, str) else value


def _sqlite_begin(conn: Connection) -> None:
    # writers take the database lock up front: a deferred transaction that later writes can fail with
    # SQLITE_BUSY instead of waiting; readers begin deferred and never block writers (WAL)
    options = conn.get_execution_options()
    if options.get("isolation_level") != "AUTOCOMMIT":
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("immediate") else "BEGIN")


class LockLost(CatalogUnavailable):
    """A PostgreSQL lock's session ended (the server restarted): another process may hold the lock now."""


class Held:
    """What ``Database.lock`` yields: true when the lock was got; ``check()`` raises ``LockLost`` when it is no longer
    held (PostgreSQL: its session is gone). A file lock (SQLite) lasts as long as the process."""

    def __init__(self, name: str, got: bool, conn: Connection | None = None) -> None:
        self.name, self.got, self._conn = name, got, conn

    def __bool__(self) -> bool:
        return self.got

    def check(self) -> None:
        if not self.got or self._conn is None:
            return
        try:
            self._conn.execute(sa.text("SELECT 1")).scalar()
        except sa.exc.SQLAlchemyError as exc:
            raise LockLost(f"the catalog lock {self.name!r} was lost with its connection: {_reason(exc)}") from None


class _Rereading:
    """A PostgreSQL read connection whose statements run again on a new connection while the server is away, for up
    to the database's ``read_patience`` (see the module); anything else is the connection's own."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: Connection | None = None

    def _run(self, name: str, *args: Any, **kwargs: Any) -> Any:
        def once() -> Any:
            if self._conn is None:
                self._conn = self._db.autocommit()
            try:
                return getattr(self._conn, name)(*args, **kwargs)
            except sa.exc.DBAPIError as exc:
                if unreachable(exc):
                    self.close()  # a broken connection is not used again
                raise

        with reachable():
            try:
                return once()
            except sa.exc.DBAPIError as exc:  # the common case above costs no retry machinery
                if not unreachable(exc):
                    raise
            return retry.again(once, unreachable, self._db.read_patience)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._run("execute", *args, **kwargs)

    def exec_driver_sql(self, *args: Any, **kwargs: Any) -> Any:
        return self._run("exec_driver_sql", *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if self._conn is None:
            with reachable():
                self._conn = retry.again(self._db.autocommit, unreachable, self._db.read_patience)
        return getattr(self._conn, name)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.close()
