"""Checking that a store really honours conditional writes before trusting it.

Some S3-compatible servers accept ``If-None-Match``/``If-Match`` on PutObject and then
ignore them. certfleet's lease and head rely on those preconditions. Who runs the probe:
the sync's lease (``certfleet.sync.lease.Lease.acquire``), whenever it finds no lease
object for the cluster, i.e. on the first ``certfleet sync`` or ``certfleet rekey``
against a store (and after a wipe), before anything is published. On such a server the
lease is never created, so every run refuses again (the cluster's error in the run
summary, exit 1) until the server is fixed; once the lease exists, runs skip the probe.
Agents never run it: they only read (and write their own acks unconditionally).
"""

from __future__ import annotations

import logging
import secrets

from certfleet.store.contract import Store
from certfleet.store.errors import ConditionalWritesUnsupported, PreconditionFailed, StoreError

log = logging.getLogger(__name__)

PROBE_PREFIX = "v1/sync/selftest/"


def check_conditional_writes(store: Store) -> None:
    """Raise ``ConditionalWritesUnsupported`` unless ``store`` enforces both preconditions.

    Writes one probe object under ``v1/sync/selftest/`` (four writes) and deletes it
    afterwards. Other store errors (unavailable, access denied, read-only) propagate
    unchanged. Called by the sync's lease on first contact with a store (see above).
    """
    key = PROBE_PREFIX + secrets.token_hex(8)
    try:
        first = store.put_if_absent(key, b"certfleet conditional-write probe 1")
        try:
            store.put_if_absent(key, b"certfleet conditional-write probe 2")
        except PreconditionFailed:
            pass
        else:
            raise ConditionalWritesUnsupported(
                "a second put with If-None-Match: * was accepted", url=store.url
            )
        try:
            store.put_if_match(key, b"certfleet conditional-write probe 3", first)
        except PreconditionFailed as err:
            raise ConditionalWritesUnsupported(
                "a put with If-Match on the current ETag was refused", url=store.url
            ) from err
        try:
            store.put_if_match(key, b"certfleet conditional-write probe 4", first)
        except PreconditionFailed:
            pass
        else:
            raise ConditionalWritesUnsupported(
                "a put with If-Match on a stale ETag was accepted", url=store.url
            )
    finally:
        try:
            store.delete(key)
        except StoreError as err:
            log.warning("could not delete the self-test probe %s: %s", key, err)
    log.info("conditional writes are enforced by %s", store.url)
