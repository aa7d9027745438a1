"""ACME issuance throughput against pebble: N one-name orders issued in one sync run.

pebble (the distribution's package, nonce rejection on, real HTTP-01 validation) answers
on loopback, nginx answers HTTP-01 with the docs' stateless snippet, the store is
``file://``; the orders come from a small in-memory registry. Prints one JSON line:
seconds, orders per second, CA requests per order, and the CA requests of a following
sync with nothing to do (which must be 0). ``--orders N`` (default 100).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from certfleet.bundle import ClusterSecret, SigningKey  # noqa: E402
from certfleet.config.accountkey import (  # noqa: E402
    account_key_text,
    load_account_key,
)
from certfleet.config.sync import SyncConfig, parse_sync_config  # noqa: E402
from certfleet.store import Store, open_store  # noqa: E402
from tests.plugins.acme_world import (  # noqa: E402
    MemoryRegistry,
    NotFound,
    one_name_orders,
    start_http01,
)
from tests.plugins.pebble import Pebble  # noqa: E402


def _provider(config: SyncConfig, store: Store, registry: MemoryRegistry):  # type: ignore[no-untyped-def]
    from certfleet.acme.client import AcmeClient
    from certfleet.acme.state import AcmeStateStore
    from certfleet.sync.acme_provider import AcmeProvider

    acme = config.acme
    assert acme is not None
    client = AcmeClient(
        acme.directory, load_account_key(acme.account_key), ca_bundle=acme.ca_bundle
    )
    states = AcmeStateStore(store, "web", config.signing_key.sync_secret("state"), time.time)
    return AcmeProvider(
        cluster="web", registry=registry, not_found=(NotFound,), client=client, config=acme,
        states=states,
    )  # fmt: skip


def issuance(orders: int, work: Path) -> dict[str, object]:
    from certfleet.sync.runner import run_sync

    pebble_bin, chall, nginx_bin = (
        shutil.which(n, path="/usr/bin:/usr/sbin:/usr/local/bin")
        for n in ("pebble", "pebble-challtestsrv", "nginx")
    )
    if not (pebble_bin and chall and nginx_bin):
        return {"skipped": "pebble, pebble-challtestsrv or nginx is not installed"}
    pebble = Pebble(pebble_bin, chall, work / "pebble")
    key, nginx = start_http01(pebble, nginx_bin, work / "nginx")
    try:
        text = f'''
provider = "acme"
store = "file://{work}/store"
signing_key = "{SigningKey.generate().export()}"
issue_wait = "10m"
acme {{
  directory = "{pebble.directory_url}"
  account_key = "{account_key_text(key)}"
  ca_bundle = "{pebble.ca_bundle}"
}}
cluster "web" {{
  secret = "{ClusterSecret.generate("k1").export()}"
  key_type = "ecdsa"
}}
'''
        config = parse_sync_config(text, "bench.hcl")
        store = open_store(config.store)
        names = [f"n{i:04d}.example.test" for i in range(orders)]
        registry = MemoryRegistry(*one_name_orders(*names))
        provider = _provider(config, store, registry)
        started = time.monotonic()
        summary = run_sync(config, store=store, provider=provider)
        seconds = time.monotonic() - started
        quiet = _provider(config, store, registry)
        run_sync(config, store=store, provider=quiet)
        return {
            "orders": orders,
            "published": summary.certificates_published,
            "errors": len(summary.errors),
            "seconds": round(seconds, 2),
            "orders_per_second": round(summary.certificates_published / seconds, 2),
            "ca_requests_per_order": round(provider.client.request_count / max(1, orders), 2),
            "no_change_ca_requests": quiet.client.request_count,
        }
    finally:
        nginx.stop()
        pebble.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="(the output is always JSON)")
    args = parser.parse_args()
    try:
        import acme  # noqa: F401
    except ImportError:
        print(json.dumps({"skipped": "certbot's acme is not installed (Python >= 3.10)"}))
        return
    work = Path(tempfile.mkdtemp(prefix="certfleet-bench-acme-"))
    try:
        print(json.dumps(issuance(args.orders, work)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
