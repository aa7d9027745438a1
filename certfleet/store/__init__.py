"""Object stores that carry certfleet's publications: S3, a local directory, or a web server.

``open_store(url)`` picks the backend from the URL; every backend honours the ``Store``
contract (see its docstring). Importing this package imports neither boto3 nor requests:
each backend imports its client library when a store is opened.
"""

from __future__ import annotations

from certfleet.store.contract import Store, StoredObject, StoreStats, check_key
from certfleet.store.errors import (
    ConditionalWritesUnsupported,
    InvalidKey,
    ListingTooLarge,
    ObjectNotFound,
    ObjectTooLarge,
    PreconditionFailed,
    ReadOnlyStore,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
    StoreURLError,
    redact_url,
)
from certfleet.store.filesystem import FileStore
from certfleet.store.https import HttpsStore
from certfleet.store.s3 import S3Store
from certfleet.store.selftest import check_conditional_writes
from certfleet.store.url import open_store

__all__ = [
    "ConditionalWritesUnsupported",
    "FileStore",
    "HttpsStore",
    "InvalidKey",
    "ListingTooLarge",
    "ObjectNotFound",
    "ObjectTooLarge",
    "PreconditionFailed",
    "ReadOnlyStore",
    "S3Store",
    "Store",
    "StoreAccessDenied",
    "StoreError",
    "StoreStats",
    "StoreURLError",
    "StoreUnavailable",
    "StoredObject",
    "check_conditional_writes",
    "check_key",
    "open_store",
    "redact_url",
]
