"""Give freed image memory back to the system.

A decoded photo is one large allocation (a 64-megapixel PNG: 190 MB). glibc serves large allocations from
per-thread arenas once its mmap threshold has grown, and an arena keeps what was freed: a service whose
threads each decoded one huge photo once holds all of them for good (bench/flood.py: 16 threads, 3.6 GB
with one decode at a time). Fixing the threshold at 4 MB makes every such buffer its own mapping, returned
on free, so memory follows the decodes in flight (the decode cap then bounds it: 369 MB with one).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3
THRESHOLD = 4 * 2**20


@functools.cache
def return_freed_memory() -> bool:
    """Apply once per process; False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD))
    except (OSError, AttributeError):
        return False
