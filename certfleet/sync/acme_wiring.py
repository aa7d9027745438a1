"""Building a cluster's ACME provider from the sync config (``provider = "acme"``).

Kept apart from ``runner`` so that the APIv3 path never imports certbot's ``acme``
package, which needs Python >= 3.10: a sync config that chooses ACME on an older Python
fails here, with a message that says so.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional

from certfleet.store import Store
from certfleet.sync.errors import SyncError
from certfleet.sync.provider import Provider
from certfleet.sync.settings import SyncSettings


def open_acme_provider(config: SyncSettings, cluster: str, store: Store) -> Provider:
    """The ``AcmeProvider`` of ``cluster``: registry and ACME state in ``store``."""
    acme = getattr(config, "acme", None)
    if acme is None:
        raise SyncError(f'cluster {cluster} uses provider "acme" but the config has no acme block')
    try:
        from certfleet.acme.client import AcmeClient
        from certfleet.acme.flow import DnsChallengeWriter
        from certfleet.acme.state import AcmeStateStore
        from certfleet.config.accountkey import load_account_key
        from certfleet.sync.acme_provider import AcmeProvider
    except ImportError as err:
        raise SyncError(
            "the ACME provider needs Python >= 3.10 and certbot's acme package "
            f"(pip install 'certfleet[acme]'); this is Python {sys.version.split()[0]}"
        ) from err
    from certfleet.registry import OrderRegistry, RegistryNotFound

    signing_key = config.signing_key
    previous = getattr(config, "previous_signing_key", None)
    # During a signing key rotation the registry opens with the old key's secret too
    # (certfleet registry reseal rewrites it for the new one).
    registry = OrderRegistry(
        store,
        signing_key.sync_secret("registry"),
        [cluster],
        previous=() if previous is None else (previous.sync_secret("registry"),),
    )
    client = AcmeClient(
        acme.directory, load_account_key(acme.account_key), ca_bundle=acme.ca_bundle
    )
    states = AcmeStateStore(
        store,
        cluster,
        signing_key.sync_secret("state"),
        time.time,
        previous=() if previous is None else (previous.sync_secret("state"),),
    )
    blocks = tuple(getattr(config, "dns", ()))
    resolvers = tuple(getattr(config, "dns_resolvers", ()))
    dns: Optional[Callable[[], DnsChallengeWriter]] = None
    if blocks:

        def dns_factory() -> DnsChallengeWriter:
            from certfleet.acme.dns import dns_challenges

            writer: DnsChallengeWriter = dns_challenges(blocks, resolvers)
            return writer

        dns = dns_factory
    return AcmeProvider(
        cluster=cluster,
        registry=registry,
        not_found=(RegistryNotFound,),
        client=client,
        config=acme,
        states=states,
        dns=dns,
    )
