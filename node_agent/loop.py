"""The daemon loop: poll, then sleep a jittered interval; back off when polls keep failing.

Every sleep is ``stop.wait(...)`` (or ``wake.wait(...)`` when the daemon passes a ``wake``
event that its stop and reload requests both set), so SIGTERM or SIGINT ends the loop at
once, after the current poll, and SIGHUP cuts the sleep short. A poll that raises is
logged and counted as a failure, never propagated (``Exception`` only:
``KeyboardInterrupt``/``SystemExit`` still stop the process). After ``n`` failed polls in
a row the wait is ``interval * 2**n``, capped (the project's one retry rule,
``certfleet.retry``). The first poll that succeeds after failed ones is logged ("the
store answers again"), and so is any poll slower than ``SLOW_POLL``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from certfleet.retry import exponential, spread
from node_agent.result import PollResult

log = logging.getLogger(__name__)

SLOW_POLL = 20.0  # seconds: a poll longer than this is logged (a slow or hung store)


@dataclass(frozen=True)
class Schedule:
    """The waits between polls: ``interval`` ± ``jitter`` (a fraction), capped backoff."""

    interval: float
    jitter: float = 0.1
    backoff_cap: float = 900.0

    def wait(self, failures: int, rng: Callable[[], float] = random.random) -> float:
        cap = max(self.backoff_cap, self.interval)
        base = exponential(failures + 1, first=self.interval, cap=cap)
        return max(0.0, spread(base, self.jitter, rng()))


class Waits(Protocol):
    """What the loop asks of a schedule (``Schedule``, or one that follows config reloads)."""

    def wait(self, failures: int, rng: Callable[[], float] = ...) -> float: ...


def poll_failed(result: PollResult) -> bool:
    """A poll worth backing off from: a cluster's store could not be reached."""
    return any(cluster.head == "unreachable" for cluster in result.clusters)


def run_loop(
    poll: Callable[[], PollResult],
    schedule: Waits,
    stop: threading.Event,
    *,
    rng: Callable[[], float] = random.random,
    max_polls: int | None = None,
    wake: threading.Event | None = None,
    after_poll: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Poll until ``stop`` is set (or ``max_polls`` polls ran); return the number of polls.

    ``after_poll`` runs after every poll, failed or not (the daemon's readiness signal);
    the sleep waits on ``wake`` when given (cleared after each sleep), else on ``stop``.
    """
    failures = 0
    polls = 0
    while not stop.is_set():
        polls += 1
        started = clock()
        try:
            result = poll()
        except Exception:
            log.exception("poll failed")
            failures += 1
        else:
            if poll_failed(result):
                failures += 1
            elif failures:
                log.info("the store answers again: poll succeeded after %d failed", failures)
                failures = 0
        took = clock() - started
        if took > SLOW_POLL:
            log.warning("slow poll: it took %.1f s (store requests, commands, probes)", took)
        if after_poll is not None:
            after_poll()
        if max_polls is not None and polls >= max_polls:
            break
        delay = schedule.wait(failures, rng)
        if failures:
            log.warning("%d failed polls in a row; next poll in %.0f s", failures, delay)
        if wake is None:
            stop.wait(delay)
        else:
            wake.wait(delay)
            wake.clear()
    return polls
