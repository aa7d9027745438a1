"""The ``Provider`` backed by SSLMate's APIv3 (or certfleet's sandbox of it).

The only sync module that imports ``certfleet.apiv3``: it turns APIv3 orders and
certificate answers into the provider-neutral types of ``certfleet.sync.provider`` and
APIv3 errors into ``ProviderError`` / ``ProviderNotFound``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Optional

from certfleet.apiv3 import ApiClient, ApiError, CertResult, NotFound, Order, RetryPolicy
from certfleet.sync.provider import (
    IssuedCert,
    Provider,
    ProviderError,
    ProviderNotFound,
    ProviderOrder,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
MAX_LONG_POLL = 60
POLL_MARGIN = 2.0  # seconds a long poll's answer may take to arrive after the poll ends


class ApiV3Provider(Provider):
    """Adapts an ``ApiClient`` to the engine's ``Provider`` protocol."""

    def __init__(self, client: ApiClient, *, page_size: int = PAGE_SIZE) -> None:
        self._client = client
        self._page_size = page_size

    @classmethod
    def connect(
        cls, endpoint: str, api_key: str, *, retry: RetryPolicy | None = None
    ) -> ApiV3Provider:
        """A provider with its own client (``retry`` bounds each call's retries)."""
        return cls(ApiClient(endpoint, api_key, retry=retry))

    def close(self) -> None:
        self._client.close()

    def list_orders(self, cluster: str) -> Sequence[ProviderOrder]:
        # page by page: only one page of the client's orders is held at a time
        try:
            pages = self._client.iter_orders(cluster, page_size=self._page_size)
            return tuple(_order(order, cluster) for order in pages)
        except ApiError as err:
            raise ProviderError("list orders", f"cluster {cluster}", _reason(err)) from err

    def get_order(self, name: str) -> ProviderOrder:
        try:
            return _order(self._client.get_order(name))
        except NotFound as err:
            raise ProviderNotFound("get order", f"order {name}") from err
        except ApiError as err:
            raise ProviderError("get order", f"order {name}", _reason(err)) from err

    def submit_csr(self, order_name: str, csr_pem: bytes) -> str:
        try:
            result = self._client.submit_csr(order_name, csr_pem.decode("ascii"))
        except NotFound as err:
            raise ProviderNotFound("submit CSR", f"order {order_name}") from err
        except ApiError as err:
            raise ProviderError("submit CSR", f"order {order_name}", _reason(err)) from err
        return result.pubkey_hash

    def long_poll(self, wait: float) -> int:
        """Whole seconds to long-poll for ``wait``: at most 60, and short enough that the
        answer comes back within the client's time budget per call (else a certificate
        that is merely slow would be reported as an error instead of as still pending)."""
        budget = self._client.retry.max_seconds - POLL_MARGIN
        return max(0, int(min(wait, budget, MAX_LONG_POLL)))

    def fetch_certificate(
        self, order_name: str, pubkey_hash: str, *, wait: float
    ) -> Optional[IssuedCert]:
        poll = self.long_poll(wait)
        try:
            result = self._client.get_cert(order_name, pubkey_hash, poll=poll or None)
        except NotFound as err:
            raise ProviderNotFound("fetch certificate", f"order {order_name}") from err
        except ApiError as err:
            raise ProviderError("fetch certificate", f"order {order_name}", _reason(err)) from err
        if not result.issued:
            return None
        return _issued(result, order_name)


def _order(order: Order, listed: str = "") -> ProviderOrder:
    """The engine's view of ``order``; equal strings of a listing (the cluster ``listed``,
    a DNS name equal to the order's name) are shared, not held once per order."""
    name = order.name
    names = sorted({value.lower() for value in order.dns_names})
    cluster = order.cluster or ""
    shared = tuple(name if value == name else value for value in names)
    return ProviderOrder(name, listed if cluster == listed else cluster, shared)


def _issued(result: CertResult, order_name: str) -> IssuedCert:
    if result.crt is None or result.serial is None:
        raise ProviderError("fetch certificate", f"order {order_name}", "answer lacks crt/serial")
    return IssuedCert(
        certificate_pem=result.crt.encode("ascii"),
        chain_pem=tuple(pem.encode("ascii") for pem in result.chain),
        serial=result.serial,
        not_before=_seconds(result.not_before),
        not_after=_seconds(result.not_after),
    )


def _seconds(value: datetime | None) -> int:
    """Unix seconds; 0 when the answer omitted it (verification reads the certificate)."""
    return 0 if value is None else int(value.timestamp())


def _reason(err: ApiError) -> str:
    return str(err)
