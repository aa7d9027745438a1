"""Starting the sync at once after an order changes, instead of at the next scheduled run.

The HTTP function calls :meth:`SyncTrigger.changed` after every order it created, changed or
removed; the trigger invokes the sync function asynchronously (``InvocationType=Event``,
nothing waits for it), at most once per ``interval`` seconds per execution environment
(debounced: a burst of orders starts one run). The sync's lease keeps it to one run at a
time: an invocation that finds a run going backs off at once (or, with a reserved
concurrency, is throttled and dropped after the event age limit), and the next schedule
picks the order up anyway. Without
``CERTFLEET_SYNC_FUNCTION`` (``certfleet serve``, or a stack that leaves it out) it does
nothing. A failed invocation is logged and never fails the API call.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from typing import Any, Callable

logger = logging.getLogger(__name__)

SYNC_FUNCTION_ENV = "CERTFLEET_SYNC_FUNCTION"
DEFAULT_INTERVAL = 30.0


def scheduled_event() -> bytes:
    """A payload the sync's schedule handler accepts (the fields of an EventBridge event)."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "version": "0",
        "id": "certfleet-order-api",
        "detail-type": "Scheduled Event",
        "source": "certfleet.order-api",
        "account": "",
        "time": now,
        "region": "",
        "resources": [],
        "detail": {"reason": "an order changed through the order API"},
    }
    return json.dumps(event).encode()


class SyncTrigger:
    """Debounced asynchronous invocations of the sync function ``function_name``."""

    def __init__(
        self,
        function_name: str,
        client_factory: Callable[[], Any],
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._function = function_name
        self._client_factory = client_factory
        self._client: Any = None
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self._lock = threading.Lock()

    def changed(self) -> bool:
        """Invoke the sync unless one was invoked within the interval; True if invoked."""
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self._interval:
                return False
            self._last = now
        try:
            if self._client is None:
                self._client = self._client_factory()
            self._client.invoke(
                FunctionName=self._function, InvocationType="Event", Payload=scheduled_event()
            )
        except Exception as err:  # noqa: BLE001 - the order is kept; the schedule runs anyway
            logger.warning("could not start the sync at once: %s", type(err).__name__)
            return False
        logger.info("sync started for an order change", extra={"function": self._function})
        return True
