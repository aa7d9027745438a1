"""One batch of DNS-01 challenges: write the TXT values, wait until served, remove them.

:func:`dns_challenges` builds a :class:`DnsChallenges` for the sync config's ``dns``
blocks and ``dns_resolvers``. For each identifier, :meth:`DnsChallenges.add` looks up a
CNAME at ``_acme-challenge.<name>`` (a customer's delegation), picks the block whose zone
is the longest suffix of the resulting name and adds the value there; the object records
what it wrote, so :meth:`DnsChallenges.cleanup` removes exactly that, also after a failure
(it is a context manager that cleans up on exit).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType

import dns.resolver

from certfleet.acme.dns.backend import Backend
from certfleet.acme.dns.block import DnsProviderConfig, choose_block, describe, normalize
from certfleet.acme.dns.errors import DnsError
from certfleet.acme.dns.lookup import delegated_name, make_resolver
from certfleet.acme.dns.rfc2136 import Rfc2136
from certfleet.acme.dns.route53 import ClientFactory, Route53, default_client

log = logging.getLogger(__name__)

CHALLENGE_LABEL = "_acme-challenge"


def challenge_record(identifier: str) -> str:
    """``_acme-challenge.<name>`` for an identifier (``*.`` dropped: a wildcard shares it)."""
    name = normalize(identifier)
    if name.startswith("*."):
        name = name[2:]
    return f"{CHALLENGE_LABEL}.{name}"


class DnsChallenges:
    """One object per ACME order (or per batch): records what it wrote so cleanup is exact.

    ``clock`` and ``sleep`` pace :meth:`wait_until_served`; ``route53_client`` makes the
    boto3 client (once, on first use). Safe to call from several threads.
    """

    def __init__(
        self,
        blocks: Sequence[DnsProviderConfig],
        resolvers: Sequence[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        route53_client: ClientFactory = default_client,
    ) -> None:
        self._blocks = tuple(blocks)
        self._resolvers = tuple(resolvers)
        self._clock = clock
        self._sleep = sleep
        self._route53_client = route53_client
        self._resolver: dns.resolver.Resolver | None = None
        self._backends: dict[DnsProviderConfig, Backend] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> DnsChallenges:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()

    @property
    def records(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(block, record, values) for every record written and not yet removed."""
        with self._lock:
            return [
                (backend.label, record, values)
                for backend in self._backends.values()
                for (_zone, record), values in backend.records.items()
            ]

    def add(self, identifier: str, value: str) -> None:
        """Add ``value`` to the TXT record that proves ``identifier`` ("*.x" shares "x")."""
        record = challenge_record(identifier)
        with self._lock:
            target = delegated_name(record, self._lookup())
            if target != record:
                log.info("%s is delegated to %s by CNAME", record, target)
            block, zone = choose_block(target, self._blocks)
            self._backend(block).add(target, zone, value)

    def wait_until_served(self, timeout: float) -> None:
        """Return once every added value is served; :class:`DnsError` after ``timeout`` s."""
        deadline = self._clock() + timeout
        with self._lock:
            backends = list(self._backends.values())
        for backend in backends:
            backend.wait_until_served(deadline)

    def cleanup(self) -> None:
        """Remove every value this object added; each failed removal is logged, never raised."""
        with self._lock:
            for backend in self._backends.values():
                backend.cleanup()

    def _lookup(self) -> dns.resolver.Resolver:
        if self._resolver is None:
            try:
                self._resolver = make_resolver(self._resolvers)
            except (ValueError, dns.resolver.NoResolverConfiguration) as err:
                raise DnsError(
                    "", "dns_resolvers", f"cannot be used ({err}); give IP:port entries"
                ) from err
        return self._resolver

    def _backend(self, block: DnsProviderConfig) -> Backend:
        if block not in self._backends:
            backend: Backend
            if block.kind == "rfc2136":
                backend = Rfc2136(block, self._clock, self._sleep)
            elif block.kind == "route53":
                backend = Route53(block, self._clock, self._sleep, self._route53_client)
            else:
                raise DnsError("", describe(block), 'unknown kind (valid: "rfc2136", "route53")')
            self._backends[block] = backend
        return self._backends[block]


def dns_challenges(blocks: Sequence[DnsProviderConfig], resolvers: Sequence[str]) -> DnsChallenges:
    """A :class:`DnsChallenges` for the sync config's ``dns`` blocks and ``dns_resolvers``."""
    return DnsChallenges(blocks, resolvers)
