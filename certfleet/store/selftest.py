"""Checking that a store really honours conditional writes before trusting it.

Some S3-compatible servers accept ``If-None-Match``/``If-Match`` on PutObject and then
ignore them. certfleet's lease and head rely on those preconditions, so the sync runs
this probe and refuses to work against such a server.
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

    Writes one probe object under ``v1/sync/selftest/`` and deletes it afterwards. Other
    store errors (unavailable, access denied, read-only) propagate unchanged.
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
