"""A fake clock for code that takes ``clock`` and ``sleep`` callables: time only moves when
the code under test sleeps, so retry and deadline tests neither wait nor depend on wall time.

Plain helper (no fixture); registered in conftest.py so that pytest rewrites its assert.
"""

from __future__ import annotations


class FakeTime:
    """An injected clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds
