"""Reading one cluster's publication from the untrusted store, verifying every object.

Object keys (docs/format.md)::

    v1/clusters/<cluster>/head
    v1/clusters/<cluster>/shards/<sha256 hex>
    v1/clusters/<cluster>/bundles/<sha256 hex>

Every object is checked before use: the head by ``decode_head`` (pinned publishers,
cluster, generation floor, expiry), shards and bundles by their content hash and then by
the AEAD. Format refusals become ``RefusedError`` naming the object, e.g. "bundle 3fa2c1…
for order example.com in cluster web: integrity check failed"; store trouble stays a
``StoreError``.
"""

from __future__ import annotations

from collections.abc import Sequence

from certfleet.bundle import (
    Bundle,
    ClusterSecret,
    FormatError,
    Head,
    PublicKey,
    Shard,
    content_hash,
    decode_head,
    open_bundle,
    open_shard,
    validate_cluster_name,
)
from certfleet.bundle.layout import (
    BUNDLE_MAX_BYTES,
    HEAD_MAX_BYTES,
    SHARD_MAX_BYTES,
    bundle_key,
    head_key,
    shard_key,
)
from certfleet.store import ObjectTooLarge, Store, StoredObject
from node_agent.errors import RefusedError


def shard_object(cluster: str, index: int, digest: bytes) -> str:
    return f"shard {index} ({digest.hex()[:12]}…) of cluster {cluster}"


def bundle_object(cluster: str, order_name: str, digest: bytes) -> str:
    return f"bundle {digest.hex()[:12]}… for order {order_name!r} in cluster {cluster}"


class ClusterSource:
    """The objects of one cluster in one store, fetched and verified."""

    def __init__(
        self,
        store: Store,
        cluster: str,
        *,
        secrets: Sequence[ClusterSecret],
        publishers: Sequence[PublicKey],
    ) -> None:
        self.store = store
        self.cluster = validate_cluster_name(cluster)
        self._secrets = tuple(secrets)
        self._publishers = tuple(publishers)

    def fetch_head(self) -> StoredObject:
        """The head object (one GET)."""
        return self.store.get(head_key(self.cluster), max_bytes=HEAD_MAX_BYTES)

    def fetch_head_if_changed(self, etag: str | None) -> StoredObject | None:
        """The head object, or None when its ETag is still ``etag`` (one conditional GET;
        a plain one when no head was read before)."""
        if etag is None:
            return self.fetch_head()
        key = head_key(self.cluster)
        return self.store.get_if_changed(key, max_bytes=HEAD_MAX_BYTES, etag=etag)

    def verify_head(self, data: bytes, *, now: int, min_generation: int) -> Head:
        """The verified head; raises ``FormatError`` (incl. ``ExpiredHeadError``) when refused."""
        return decode_head(
            data,
            cluster=self.cluster,
            publishers=self._publishers,
            now=now,
            min_generation=min_generation,
        )

    def fetch_shard(self, index: int, digest: bytes) -> Shard:
        name = shard_object(self.cluster, index, digest)
        data = self._fetch(shard_key(self.cluster, digest.hex()), digest, name, SHARD_MAX_BYTES)
        try:
            return open_shard(data, cluster=self.cluster, index=index, secrets=self._secrets)
        except FormatError as err:
            raise RefusedError(name, err.reason) from err

    def fetch_bundle(self, order_name: str, digest: bytes) -> Bundle:
        name = bundle_object(self.cluster, order_name, digest)
        data = self._fetch(bundle_key(self.cluster, digest.hex()), digest, name, BUNDLE_MAX_BYTES)
        try:
            return open_bundle(
                data, cluster=self.cluster, order_name=order_name, secrets=self._secrets
            )
        except FormatError as err:
            raise RefusedError(name, err.reason) from err

    def _fetch(self, key: str, digest: bytes, name: str, max_bytes: int) -> bytes:
        try:
            stored = self.store.get(key, max_bytes=max_bytes)
        except ObjectTooLarge as err:  # it cannot hash to what the head or shard names
            raise RefusedError(
                name,
                f"integrity check failed: over the cap of {err.max_bytes} bytes",
                permanent=False,  # the store may be repaired under the same key
            ) from err
        if content_hash(stored.data) != digest:
            raise RefusedError(
                name,
                f"integrity check failed: content hash mismatch ({len(stored.data)} bytes)",
                permanent=False,
            )
        return stored.data
