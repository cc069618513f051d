"""A clock the tests move (JobQueue's ``clock``): a lease expires when the test says so, not after a sleep."""

from __future__ import annotations

import time


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
