"""Process-wide tuning, applied once by each entry point (the CLI, the HTTP service, a benchmark) rather than by
constructing a library: a library is a value a test or a tool may make many of, and these settings belong to the
whole interpreter."""

from __future__ import annotations

import sys

import numpy  # noqa: F401  # loads its BLAS: threadpoolctl limits only the libraries already loaded
from threadpoolctl import threadpool_limits

from lookalike.config import Settings


def set_switch_interval(seconds: float) -> None:
    """A photo search finds the query's local features in a helper thread while the model embeds it, then both
    threads do short steps of Python between calls that release the interpreter lock (OpenCV, faiss, the model).
    With Python's default 5 ms switch interval one thread can hold the lock that long while the other waits: the
    copy check cost 1.56x the plain search's p50, 1.31x with 1 ms (bench/RESULTS.md, "Copies")."""
    if seconds:
        sys.setswitchinterval(seconds)


def limit_blas_threads(threads: int) -> None:
    """Exact search multiplies one query by the index in numpy; OpenBLAS would spread that over every core,
    where the model runtime and the decoders already work, and its idle threads spin (bench/RESULTS.md,
    "Threads"). numpy is imported above so that its BLAS is loaded when this runs: the CLI imports numpy later."""
    if threads:
        threadpool_limits(limits=threads, user_api="blas")


def tune_process(settings: Settings) -> None:
    limit_blas_threads(settings.blas_threads)
    set_switch_interval(settings.switch_interval)
