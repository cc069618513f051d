"""The errors the core raises for a request it cannot serve: each carries a message for the user, and the CLI and
the HTTP service map them onto an exit message or a status (lookalike.api.problems)."""

from __future__ import annotations


class LibraryError(RuntimeError):
    """A request the library cannot serve, with a message for the user."""


class ModelMismatchError(LibraryError):
    pass


class NotFoundError(LibraryError):
    pass


class TextSearchError(LibraryError):
    """A text search on a library whose model has no text tower."""


class BusyError(LibraryError):
    """Too much work in flight: the caller should retry (HTTP 503)."""
