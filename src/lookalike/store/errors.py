"""Errors of the parts a library depends on (the catalog database, the vector engine, the image store), told
apart from errors of a photo or a request.

A photo is rejected only for a reason of its own (not a photo, too large, unreadable file). When a part the
library needs fails instead, the work is not the photo's fault: indexing raises one of these, the chunk is run
again later, and the service answers 503 with ``Retry-After`` (``Unavailable``) instead of 500. The catalog's
own (``CatalogUnavailable``) is in lookalike.store.catalog.database.
"""

import contextlib
from collections.abc import Callable, Iterator

RETRY_AFTER = 5  # seconds a client is told to wait when a part is unavailable


class EngineError(RuntimeError):
    """A vector engine cannot be reached or used; the message names the backend and the setting."""


class DependencyError(RuntimeError):
    """The catalog, the vector engine or the image store failed: not the photo's fault, never a rejection."""

    part = "a part the library depends on"


class Unavailable(DependencyError):
    """A part cannot be reached right now (restarting, failing over, down): wait and try again."""

    retry_after = RETRY_AFTER


class EngineUnavailable(Unavailable, EngineError):
    part = "the vector engine"


class StoreUnavailable(Unavailable):
    part = "the image store"


@contextlib.contextmanager
def engine_outage(is_unreachable: Callable[[BaseException], bool], what: str) -> Iterator[None]:
    """An engine client's error that means the server cannot serve right now (``is_unreachable``: refused, timed
    out, 5xx) becomes ``EngineUnavailable`` naming ``what``; every other error (a bad request, a bug) goes on as it
    was. The one translation the Milvus and Elasticsearch adapters share."""
    try:
        yield
    except EngineUnavailable:
        raise
    except Exception as exc:
        if is_unreachable(exc):
            raise EngineUnavailable(f"{what}: {exc}") from exc
        raise
