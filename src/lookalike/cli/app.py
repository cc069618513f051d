"""The ``lookalike`` command group: its options, its user errors, and the library each command opens."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import typer.core

from lookalike.cli.output import fail

# the library and its dependencies (numpy, Pillow, SQLAlchemy, the model runtime) are imported by the
# commands that use them, so `lookalike --help` starts in a fraction of a second (bench/RESULTS.md)
if TYPE_CHECKING:
    from lookalike.config import Settings
    from lookalike.library import Library, Role


def user_errors() -> tuple[type[Exception], ...]:
    """The errors that mean "tell the user" (evaluated only when an exception is being matched)."""
    from lookalike.fields import FieldError
    from lookalike.filters import FilterError
    from lookalike.imaging import BadImage
    from lookalike.ingest.sources import SourceError
    from lookalike.library import LibraryError
    from lookalike.models.files import ModelFileError
    from lookalike.models.registry import UnknownModelError
    from lookalike.store.catalog.database import DatabaseError
    from lookalike.store.errors import DependencyError, EngineError
    from lookalike.store.payload import UnsupportedFilter

    return (LibraryError, ModelFileError, BadImage, SourceError, UnknownModelError, EngineError, DatabaseError,
            DependencyError, FieldError, FilterError, UnsupportedFilter)  # fmt: skip


class _Commands(typer.core.TyperGroup):
    """Every command's user errors (an unreachable engine, catalog or store; a bad file) become one clear line
    and exit status 1, wherever in the command they escape; a traceback is left for bugs."""

    def invoke(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except user_errors() as exc:
            fail(str(exc))
        except Exception as exc:
            message = full_or_read_only(exc)
            if message is None:
                raise
            fail(message)


def full_or_read_only(exc: BaseException) -> str | None:
    """One line for a disk that is full or read-only (the library's folder, the catalog's database), which every
    command met as a traceback, the index run after its batches were committed (hostile probe); None otherwise."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        where = f": {exc.filename}" if exc.filename else ""
        what = exc.strerror or str(exc)
    else:
        orig = getattr(exc, "orig", None)
        name = getattr(orig, "sqlite_errorname", None) or getattr(orig, "sqlstate", None)
        if not str(name).startswith(("SQLITE_FULL", "SQLITE_READONLY", "53100")):  # 53100: PostgreSQL's disk_full
            return None
        what, where = str(orig).strip().splitlines()[0], " (the catalog database)"
    return f"{what}{where}: everything committed so far is kept; make room (or make it writable) and run it again"


app = typer.Typer(
    cls=_Commands,
    help="Lookalike: index photos, then search them by image.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class State:
    overrides: dict = {}


def settings() -> Settings:
    from lookalike.config import Settings

    return Settings(**State.overrides)


@app.callback()
def main(
    home: Annotated[Path | None, typer.Option(help="library directory (env LOOKALIKE_HOME)")] = None,
    model: Annotated[str | None, typer.Option(help="embedding model for a new library (env LOOKALIKE_MODEL)")] = None,
    models_dir: Annotated[Path | None, typer.Option(help="model files directory (env LOOKALIKE_MODELS_DIR)")] = None,
) -> None:
    State.overrides = {
        k: v for k, v in {"home": home, "model": model, "models_dir": models_dir}.items() if v is not None
    }


def _tuned(role: Role = "cli") -> Library:
    """A library for this process, the process tuned first (lookalike.tuning: the CLI is an entry point)."""
    from lookalike.library import Library
    from lookalike.tuning import tune_process

    tune_process(settings())
    return Library(settings(), role=role)


def open_library() -> Library:
    try:
        return _tuned()
    except user_errors() as exc:
        fail(str(exc))
        raise AssertionError from exc  # unreachable; fail raises


def open_when_reachable(role: Role = "cli") -> Library:
    """The library, once the catalog (and the image store) answer: a long-running process started during an
    outage, or before its database, waits for them with capped backoff instead of exiting."""
    from lookalike.store import retry
    from lookalike.store.errors import Unavailable

    try:
        return retry.again(lambda: _tuned(role), lambda exc: isinstance(exc, Unavailable), float("inf"))
    except user_errors() as exc:
        fail(str(exc))
        raise AssertionError from exc  # unreachable; fail raises


def run() -> None:  # pragma: no cover - console entry for `python -m lookalike`
    sys.exit(app())
