"""The flow every DNS backend shares: remember what was written, wait, remove exactly it.

A :class:`Backend` serves one ``dns`` block for one :class:`~certfleet.acme.dns.DnsChallenges`.
It runs the flow; each kind (``rfc2136``, ``route53``) implements only four primitives:
find the zone of a record, publish a value, tell whether the values are served, withdraw
values. A value is remembered *before* it is sent, so a write that timed out (and may
have landed) is still removed by :meth:`Backend.cleanup`.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable

from certfleet.acme.dns.block import DnsProviderConfig, describe
from certfleet.acme.dns.errors import DnsError

log = logging.getLogger(__name__)

# A DNS-01 value is the base64url SHA-256 of a key authorization (43 characters).
_VALUE = re.compile(r"[A-Za-z0-9_-]{1,255}")
TTL = 60


def check_value(record: str, value: str) -> None:
    """Refuse a TXT value that is not base64url text (it could not be an ACME digest)."""
    if not _VALUE.fullmatch(value):
        raise DnsError(record, "dns-01", "the TXT value is not base64url text")


class Backend(ABC):
    """One ``dns`` block's records for one batch of challenges."""

    poll_interval = 1.0

    def __init__(
        self,
        block: DnsProviderConfig,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self.block = block
        self.label = describe(block)
        self._clock = clock
        self._sleep = sleep
        self._zones: dict[str, str] = {}
        # (zone, record) -> the values this batch added, in order
        self._records: dict[tuple[str, str], list[str]] = {}

    @property
    def records(self) -> dict[tuple[str, str], tuple[str, ...]]:
        """What this batch has written (or tried to): (zone, record) -> values."""
        return {key: tuple(values) for key, values in self._records.items()}

    def add(self, record: str, zone: str | None, value: str) -> None:
        """Publish ``value`` at ``record`` (in ``zone``, found when None), keeping the others."""
        check_value(record, value)
        if zone is None:
            zone = self._zones.get(record) or self.find_zone(record)
        self._zones[record] = zone
        values = self._records.setdefault((zone, record), [])
        if value in values:
            return
        values.append(value)
        log.info("adding TXT %s (%s, zone %s)", record, self.label, zone)
        self.publish(zone, record, value, tuple(values))

    def wait_until_served(self, deadline: float) -> None:
        """Return once every value is served; :class:`DnsError` at ``deadline`` (clock time)."""
        pending = self.records
        while True:
            pending = {
                key: values for key, values in pending.items() if not self.served(*key, values)
            }
            if not pending:
                return
            if self._clock() >= deadline:
                (_zone, record), _values = next(iter(pending.items()))
                raise DnsError(record, self.label, self.not_served_reason())
            self._sleep(min(self.poll_interval, max(0.0, deadline - self._clock())))

    def cleanup(self) -> list[DnsError]:
        """Withdraw every value this batch added; failures are logged and returned."""
        failed: list[DnsError] = []
        for (zone, record), values in self._records.items():
            try:
                self.withdraw(zone, record, tuple(values))
                log.info("removed TXT %s (%s)", record, self.label)
            except DnsError as err:
                log.warning("could not remove TXT values: %s", err)
                failed.append(err)
            except Exception as err:  # noqa: BLE001 - cleanup never raises; it reports
                wrapped = DnsError(record, self.label, f"removal failed: {type(err).__name__}")
                log.warning("could not remove TXT values: %s", wrapped)
                failed.append(wrapped)
        self._records.clear()
        return failed

    @abstractmethod
    def find_zone(self, record: str) -> str:
        """The zone that holds ``record``, for a block without ``zones``."""

    @abstractmethod
    def publish(self, zone: str, record: str, value: str, values: tuple[str, ...]) -> None:
        """Make ``value`` served at ``record``; ``values`` is every value this batch wants."""

    @abstractmethod
    def served(self, zone: str, record: str, values: tuple[str, ...]) -> bool:
        """One bounded check that every one of ``values`` is served at ``record``."""

    @abstractmethod
    def withdraw(self, zone: str, record: str, values: tuple[str, ...]) -> None:
        """Remove exactly ``values`` at ``record``, leaving any other value in place."""

    def not_served_reason(self) -> str:
        """What a timeout of :meth:`wait_until_served` says."""
        return "the TXT values were not served before the deadline"
