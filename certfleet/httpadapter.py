"""A ``requests`` adapter whose connections a deadline can shut down.

``TrackedAdapter`` gives urllib3 connection classes that record themselves in the calling
thread's ``certfleet.deadline.InFlight`` (``TrackedConnection``), directly or through a
proxy. The APIv3 transport mounts it, so an attempt that ``run_within`` gives up at its
deadline has its socket shut down and its worker thread ends; the ACME client mounts it
and shuts a request down from a ``watch`` watchdog. A SOCKS proxy keeps its own
connection classes (untracked: such a call ends at its read timeout).
"""

from __future__ import annotations

from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from certfleet.deadline import TrackedConnection


class _Connection(TrackedConnection, HTTPConnection):
    """urllib3's HTTP connection, tracked."""


class _HttpsConnection(TrackedConnection, HTTPSConnection):
    """urllib3's HTTPS connection, tracked."""


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _HttpsPool(HTTPSConnectionPool):
    ConnectionCls = _HttpsConnection


def _pools() -> dict[str, type[HTTPConnectionPool]]:
    return {"http": _Pool, "https": _HttpsPool}


class TrackedAdapter(HTTPAdapter):
    """requests' adapter, with tracked connections (see the module)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pools()

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _pools()
        return manager
