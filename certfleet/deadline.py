"""A total time limit for one network operation, and the two ways to enforce it.

A socket timeout bounds each read, not the operation: a server that trickles one byte every
few seconds never trips it. A ``Deadline`` bounds the whole operation (connecting, every
attempt, every retry's sleep, the whole body): ``seconds`` from its start, plus one second
for each ``RATE`` bytes actually moved, so a large object on a slow but honest link still
arrives while a trickle gains nothing. A ``cancel`` event (the agent's stop request) ends it
at once.

- ``watch(deadline, abort)``: a watchdog thread calls ``abort()`` (which shuts the
  connection's socket down, so the blocked read returns) when the deadline passes or the
  cancel event is set. The https store uses it around each request.
- ``run_within(deadline, call)``: runs ``call`` in a daemon thread and stops waiting for
  it when the deadline passes; the s3 store and the APIv3 transport use it, as botocore and
  requests keep their sockets to themselves. Nothing the abandoned call returns is used,
  and it does not read on: the connections it sent requests on (those of a
  ``TrackedConnection`` class: the s3 store gives such classes to botocore,
  ``certfleet.httpadapter`` to requests) are shut down, and any request it tries after that
  raises ``Abandoned``.

``InFlight`` is that record of one call's connections; ``tracking()`` makes one the calling
thread's, for a caller that enforces its deadline with ``watch`` (the ACME client).

A leaf of the library (it imports no project code): the stores and the provider client
both use it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable, Generic, TypeVar

RATE = 1024 * 1024  # bytes per second of credit: a link slower than 8 Mbit/s gets less
_STEP = 0.25  # how often a watchdog looks at the cancel event
CALL_THREAD = "certfleet-call"  # the name of run_within's worker threads

T = TypeVar("T")


class DeadlineExceeded(Exception):
    """The operation ran out of time or was cancelled; callers turn it into their own
    transient error (``StoreUnavailable``, ``ApiUnavailable``) with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Deadline:
    """``seconds`` from now, plus ``1/RATE`` s per byte credited; ``cancel`` ends it early."""

    def __init__(
        self,
        seconds: float,
        cancel: threading.Event | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self.cancel = cancel
        self._clock = clock
        self._end = clock() + seconds
        self._lock = threading.Lock()

    def credit(self, nbytes: int) -> None:
        """Extend the deadline for ``nbytes`` moved (received or sent)."""
        with self._lock:
            self._end += nbytes / RATE

    def remaining(self) -> float:
        with self._lock:
            return self._end - self._clock()

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def expired(self) -> bool:
        return self.cancelled or self.remaining() <= 0

    def reason(self) -> str:
        """Why the operation was ended (for ``StoreUnavailable``)."""
        if self.cancelled:
            return "cancelled: the agent is stopping"
        return f"no complete answer within the {self.seconds:g} s deadline"

    def check(self) -> None:
        """Raise ``DeadlineExceeded`` when the deadline has passed or was cancelled."""
        if self.expired():
            raise DeadlineExceeded(self.reason())

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (cut at the deadline; woken by the cancel event)."""
        seconds = max(0.0, min(seconds, self.remaining()))
        if self.cancel is not None:
            self.cancel.wait(seconds)
        else:
            time.sleep(seconds)

    def wait_for(self, done: threading.Event) -> bool:
        """Wait until ``done`` (True) or the deadline (False)."""
        while True:
            if self.cancelled:
                return done.is_set()
            remaining = self.remaining()
            if remaining <= 0:
                return done.is_set()
            if done.wait(min(remaining, _STEP) if self.cancel is not None else remaining):
                return True


@contextlib.contextmanager
def watch(deadline: Deadline, abort: Callable[[], None]) -> Iterator[None]:
    """Call ``abort()`` from a watchdog thread if the body outlives ``deadline``."""
    done = threading.Event()

    def guard() -> None:
        if not deadline.wait_for(done):
            abort()

    watchdog = threading.Thread(target=guard, name="certfleet-deadline", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        done.set()
        watchdog.join()


class Abandoned(BaseException):
    """A request tried by a call that its caller gave up on. A ``BaseException``, so that no
    retry loop of a client library (botocore's catches ``Exception``) sends it again: the
    abandoned thread ends instead."""


class InFlight:
    """The connections one call sends requests on, so that another thread can end the call:
    ``abort()`` shuts their sockets down (a blocked read returns at once) and makes any later
    request of the call raise ``Abandoned``. A connection takes part by calling
    ``sending(self)`` before it sends and before it reads an answer (``TrackedConnection``),
    in a thread where ``tracking`` made this record the current one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self._sockets: list[socket.socket] = []
        self._aborted = False
        self._finished = False

    @property
    def aborted(self) -> bool:
        return self._aborted

    def add(self, connection: Any) -> None:
        """Record ``connection`` (and its socket, which it may hand to its answer)."""
        with self._lock:
            if self._aborted:
                raise Abandoned("the caller gave up on this call")
            if self._finished:
                return
            if connection not in self._connections:
                self._connections.append(connection)
            sock = getattr(connection, "sock", None)
            if isinstance(sock, socket.socket) and sock not in self._sockets:
                self._sockets.append(sock)

    def abort(self) -> None:
        """Shut down every socket of the call, unless it has finished already."""
        with self._lock:
            if self._finished:
                return
            self._aborted = True
            sockets = list(self._sockets)
            for connection in self._connections:
                sock = getattr(connection, "sock", None)
                if isinstance(sock, socket.socket) and sock not in sockets:
                    sockets.append(sock)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def finish(self) -> None:
        """The call is over: its connections may serve other calls, never shut from here."""
        with self._lock:
            self._finished = True
            self._connections.clear()
            self._sockets.clear()


_current = threading.local()


@contextlib.contextmanager
def tracking(inflight: InFlight) -> Iterator[InFlight]:
    """Make ``inflight`` the calling thread's record for the body; finished at its end."""
    previous = getattr(_current, "inflight", None)
    _current.inflight = inflight
    try:
        yield inflight
    finally:
        _current.inflight = previous
        inflight.finish()


def sending(connection: Any) -> None:
    """Record ``connection`` in the calling thread's ``InFlight``, if it has one."""
    inflight: InFlight | None = getattr(_current, "inflight", None)
    if inflight is not None:
        inflight.add(connection)


class TrackedConnection:
    """A mixin for an ``http.client``-style connection class (urllib3's, botocore's): each
    request, and each answer read, records the connection with ``sending``. Put it first
    among the bases."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        sending(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        sending(self)  # connected by now: its socket is recorded too
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _Outcome(Generic[T]):
    def __init__(self) -> None:
        self.value: T | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


def run_within(deadline: Deadline, call: Callable[[], T]) -> T:
    """``call()``'s result or exception, or ``DeadlineExceeded`` if it outlives ``deadline``."""
    deadline.check()
    outcome: _Outcome[T] = _Outcome()
    inflight = InFlight()

    def work() -> None:
        try:
            with tracking(inflight):
                outcome.value = call()
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            outcome.error = err
        finally:
            outcome.done.set()

    worker = threading.Thread(target=work, name=CALL_THREAD, daemon=True)
    worker.start()
    if not deadline.wait_for(outcome.done):
        inflight.abort()  # the abandoned call stops reading instead of lingering
        raise DeadlineExceeded(deadline.reason())
    if outcome.error is not None:
        raise outcome.error
    return outcome.value  # type: ignore[return-value]
