"""Format v1: the signed head, encrypted shards, bundles, acks and pending keys.

Pure: bytes in, bytes out, no I/O; it imports nothing of the project but the error root.
docs/format.md is the byte-level specification, with test vectors.
"""

from __future__ import annotations

from certfleet.bundle.ack import (
    Ack,
    AckOrder,
    OwedUpdate,
    ack_label,
    open_ack,
    seal_ack,
    validate_node_id,
)
from certfleet.bundle.digest import content_hash, content_hash_hex
from certfleet.bundle.envelope import KINDS, Rng, open_sealed, seal, seal_parts, wrapped_for
from certfleet.bundle.errors import (
    BadSignatureError,
    ExpiredHeadError,
    FormatError,
    IntegrityError,
    MalformedError,
    NoUsableSecretError,
    RollbackError,
    UnknownPublisherError,
    UnsafeNameError,
    WrongClusterError,
)
from certfleet.bundle.head import (
    MAX_VALIDITY_SECONDS,
    Head,
    decode_head,
    encode_head,
    generation_too_far,
    head_publisher,
    next_generation,
    peek_head,
    verify_head,
)
from certfleet.bundle.isotime import iso_utc
from certfleet.bundle.keybundle import (
    Bundle,
    decode_bundle,
    encode_bundle,
    open_bundle,
    seal_bundle,
)
from certfleet.bundle.keys import ClusterSecret, PublicKey, SigningKey
from certfleet.bundle.names import (
    safe_dir_name,
    validate_cluster_name,
    validate_dns_name,
    validate_order_name,
)
from certfleet.bundle.pending import PendingKey, open_pending, seal_pending
from certfleet.bundle.shard import (
    Shard,
    ShardEntry,
    Tombstone,
    decode_shard,
    encode_shard,
    open_shard,
    seal_shard,
    shard_count,
    shard_index,
)

__all__ = [
    "KINDS",
    "MAX_VALIDITY_SECONDS",
    "Ack",
    "AckOrder",
    "BadSignatureError",
    "Bundle",
    "ClusterSecret",
    "ExpiredHeadError",
    "FormatError",
    "Head",
    "IntegrityError",
    "MalformedError",
    "NoUsableSecretError",
    "OwedUpdate",
    "PendingKey",
    "PublicKey",
    "Rng",
    "RollbackError",
    "Shard",
    "ShardEntry",
    "SigningKey",
    "Tombstone",
    "UnknownPublisherError",
    "UnsafeNameError",
    "WrongClusterError",
    "ack_label",
    "content_hash",
    "content_hash_hex",
    "decode_bundle",
    "decode_head",
    "decode_shard",
    "encode_bundle",
    "encode_head",
    "encode_shard",
    "generation_too_far",
    "head_publisher",
    "iso_utc",
    "next_generation",
    "open_ack",
    "open_bundle",
    "open_pending",
    "open_sealed",
    "open_shard",
    "peek_head",
    "safe_dir_name",
    "seal",
    "seal_ack",
    "seal_bundle",
    "seal_parts",
    "seal_pending",
    "seal_shard",
    "shard_count",
    "shard_index",
    "validate_cluster_name",
    "validate_dns_name",
    "validate_node_id",
    "validate_order_name",
    "verify_head",
    "wrapped_for",
]
