"""The one retry policy for the parts a library depends on (tenacity): capped exponential backoff with jitter.

Two uses, both here so that every process waits out an outage the same way: ``again`` runs a catalog
transaction once more after a lost connection or a lost race (``Database.retrying``), and ``wait_until``
holds a process's work until a part answers again (a worker keeping its chunk through a database restart,
the service opening its library while the database is still down). Jitter keeps many processes from
reconnecting in step after a restart; the cap bounds how long a process notices the part is back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import tenacity

from lookalike.store.errors import Unavailable

T = TypeVar("T")
BACKOFF_FIRST = 0.05  # seconds: the first waits are short (a deadlock, a dropped connection the pool replaces)
BACKOFF_MAX = 2.0  # seconds between two tries at most: a part that is back is used again within this
log = logging.getLogger("lookalike")


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0] if exc else "?"
    log.warning("%s; trying again (attempt %d, %.1f s so far)", text, state.attempt_number,
                state.seconds_since_start or 0.0)  # fmt: skip


def again(fn: Callable[[], T], retry_if: Callable[[BaseException], bool], patience: float,
          until: Callable[[], bool] = lambda: False) -> T:  # fmt: skip
    """``fn()``, run again while it raises an error ``retry_if`` accepts, for up to ``patience`` seconds or
    until ``until()`` turns true (a service shutting down); then that error is raised."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(retry_if),
        wait=tenacity.wait_random_exponential(multiplier=BACKOFF_FIRST, max=BACKOFF_MAX),
        # stop_any calls any stop condition, a plain callable too (tenacity's StopBaseT); its annotation says stop_base
        stop=tenacity.stop_any(tenacity.stop_after_delay(patience), lambda _state: until()),  # type: ignore[arg-type]
        before_sleep=_log_retry,
        reraise=True,
    )
    return retrying(fn)


def pause(attempt: int) -> float:
    """Seconds to wait before try ``attempt`` + 1 of something that failed at once (doubling, capped)."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 4 * 2**attempt)


def wait_until(probe: Callable[[], None], stop: Callable[[], bool], patience: float) -> bool:
    """Call ``probe`` until it stops raising ``Unavailable``: True once it did, False when ``stop()`` turned
    true or ``patience`` seconds passed first. Other errors of ``probe`` are raised."""

    def once() -> bool:
        if stop():
            return False
        probe()
        return True

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(Unavailable),
        wait=tenacity.wait_random_exponential(multiplier=4 * BACKOFF_FIRST, max=BACKOFF_MAX),
        # stop_any calls any stop condition, a plain callable too (tenacity's StopBaseT); its annotation says stop_base
        stop=tenacity.stop_any(tenacity.stop_after_delay(patience), lambda _state: stop()),  # type: ignore[arg-type]
        before_sleep=_log_retry,
        retry_error_callback=lambda _state: False,
    )
    return retrying(once)
