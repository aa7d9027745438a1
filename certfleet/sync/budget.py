"""A sync run's time budget: one place for what "out of time" means.

A run given a deadline (a ``time.monotonic()`` value) keeps a **reserve** before it: a
quarter of the time left when the run starts, at most ``MAX_RESERVE`` seconds, so that it
always has time to publish what it did and save its state. The parts of a run ask the
budget before each unit of work (``out_of_time``); the issuer waits for certificates no
later than ``until``; the fleet check reads acks for at most a share of what is ``left``.
A run without a deadline is never out of time.

The monotonic clock is injected, so the rules are tested with a fake one.
"""

from __future__ import annotations

import time
from typing import Callable

Monotonic = Callable[[], float]
MAX_RESERVE = 5.0


class Budget:
    """The time budget of one cluster run; ``exhausted`` once any part found it spent."""

    def __init__(self, deadline: float | None, *, monotonic: Monotonic = time.monotonic) -> None:
        self.deadline = deadline
        self.monotonic = monotonic
        left = float("inf") if deadline is None else deadline - monotonic()
        self.reserve = min(MAX_RESERVE, max(0.0, left) / 4)
        self.exhausted = False

    def out_of_time(self) -> bool:
        """True (and ``exhausted`` from then on) once the reserve is reached."""
        if self.deadline is None:
            return False
        if self.monotonic() >= self.deadline - self.reserve:
            self.exhausted = True
            return True
        return False

    def left(self) -> float | None:
        """Seconds left before the reserve (negative when past it); None without a deadline."""
        if self.deadline is None:
            return None
        return self.deadline - self.reserve - self.monotonic()

    def until(self, seconds: float) -> float:
        """The monotonic instant ``seconds`` from now, but no later than the reserve."""
        until = self.monotonic() + seconds
        if self.deadline is not None:
            until = min(until, self.deadline - self.reserve)
        return until

    def remaining(self, until: float) -> float:
        """Seconds from now to the instant ``until`` (from ``until()``), never negative."""
        return max(0.0, until - self.monotonic())
