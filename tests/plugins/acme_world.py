"""The small world the ACME tests and ``bench/bench_acme.py`` issue into: an in-memory
order registry (the read side the ACME provider asks), a started pebble with nginx
answering HTTP-01 for a new account key by the stateless snippet of docs/acme.md, and the
sync config of an ACME provider with one cluster ``web`` publishing to a ``file://`` store,
and a DNS-01 writer into pebble's challtestsrv (so pebble validates the values for real).

No fixtures here: plain classes and functions, imported by the modules that use them.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

from certfleet.bundle import ClusterSecret, SigningKey
from certfleet.config.accountkey import account_key_text, generate_account_key, thumbprint
from tests.plugins.pebble import Http01Nginx, Pebble, docs_nginx_snippet


@dataclass(frozen=True)
class Ident:
    """One identifier of an order and how it is approved (``http`` or ``dns``)."""

    value: str
    approval: str = "http"


@dataclass(frozen=True)
class Order:
    """An order as the registry's read side gives it."""

    name: str
    cluster: str
    identifiers: tuple[Ident, ...]


class NotFound(Exception):
    """The registry has no order of that name."""


class MemoryRegistry:
    """The order registry's read side, in memory; ``orders`` may be changed by the test."""

    def __init__(self, *orders: Order) -> None:
        self.orders = {order.name: order for order in orders}

    def list(self, cluster: str) -> list[Order]:
        return [o for o in self.orders.values() if o.cluster == cluster]

    def get(self, name: str) -> Order:
        if name not in self.orders:
            raise NotFound(name)
        return self.orders[name]

    def hold(self, cluster: str, revision: int, write_id: str = "") -> None:
        """No revisions in memory: nothing can go back."""

    def revision(self, cluster: str) -> tuple[int, str]:
        return (0, "")


def one_name_orders(*names: str) -> tuple[Order, ...]:
    """An order of cluster ``web`` for each name, with that one name approved by HTTP-01."""
    return tuple(Order(name, "web", (Ident(name),)) for name in names)


def start_http01(
    pebble: Pebble, nginx_binary: str, directory: Path
) -> tuple[EllipticCurvePrivateKey, Http01Nginx]:
    """Start ``pebble``, make a new account key and start nginx (in ``directory``) answering
    HTTP-01 for that key on pebble's HTTP-01 port; the caller stops nginx."""
    pebble.start()
    key = generate_account_key()
    snippet = docs_nginx_snippet(thumbprint(key))
    return key, Http01Nginx(nginx_binary, directory, pebble.http_port, snippet)


def sync_config_text(
    store: Path, pebble: Pebble, key: EllipticCurvePrivateKey, acme_extra: str = ""
) -> str:
    """A sync config (new signing key and cluster secret) for the ACME provider on
    ``pebble`` with ``key``, publishing to ``file://{store}``; ``acme_extra``: more lines of
    the ``acme`` block."""
    return f'''
provider = "acme"
store = "file://{store}"
signing_key = "{SigningKey.generate().export()}"
acme {{
  directory = "{pebble.directory_url}"
  account_key = "{account_key_text(key)}"
  ca_bundle = "{pebble.ca_bundle}"
{acme_extra}}}
cluster "web" {{ secret = "{ClusterSecret.generate("k1").export()}" }}
'''


def acme_provider(
    config: Any,
    store: Any,
    registry: MemoryRegistry,
    dns: Callable[[], Any] | None = None,
    **options: Any,
) -> Any:
    """The ``AcmeProvider`` of cluster ``web`` for a parsed ``sync_config_text`` config:
    orders from ``registry``, ACME state in ``store``, DNS-01 values through ``dns``;
    ``options``: more keyword arguments of ``AcmeProvider``."""
    from certfleet.acme.client import AcmeClient  # certbot's acme: Python >= 3.10
    from certfleet.acme.state import AcmeStateStore
    from certfleet.config.accountkey import load_account_key
    from certfleet.sync.acme_provider import AcmeProvider

    acme = config.acme
    client = AcmeClient(
        acme.directory, load_account_key(acme.account_key), ca_bundle=acme.ca_bundle
    )
    states = AcmeStateStore(store, "web", config.signing_key.sync_secret("state"), time.time)
    return AcmeProvider(
        cluster="web", registry=registry, not_found=(NotFound,), client=client, config=acme,
        states=states, dns=dns, **options,
    )  # fmt: skip


class ChalltestsrvTxt:
    """A DNS-01 writer into pebble-challtestsrv; records every call."""

    log: list[tuple[str, str]] = []

    def __init__(self, management_port: int) -> None:
        self.base = f"http://127.0.0.1:{management_port}"
        self.records: set[str] = set()

    def _post(self, path: str, doc: dict[str, str]) -> None:
        request = urllib.request.Request(
            self.base + path, data=json.dumps(doc).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200

    def add(self, identifier: str, value: str) -> None:
        record = "_acme-challenge." + identifier.removeprefix("*.") + "."
        self._post("/set-txt", {"host": record, "value": value})
        self.records.add(record)
        self.log.append(("add", identifier))

    def wait_until_served(self, timeout: float) -> None:
        self.log.append(("wait", ""))

    def cleanup(self) -> None:
        for record in sorted(self.records):
            self._post("/clear-txt", {"host": record})
        self.records.clear()
        self.log.append(("cleanup", ""))
