"""The hostname label of acks (``certfleet.bundle.acklabel``): encrypted for the publisher,
opened with the sync's signing key only, never in clear in the store, and optional (acks
without one, as older agents write them, read the same)."""

from __future__ import annotations

import os
import struct

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from certfleet.bundle import (
    Ack,
    AckOrder,
    ClusterSecret,
    MalformedError,
    SigningKey,
    open_ack,
    seal_ack,
)
from certfleet.bundle.ack import ack_label
from certfleet.bundle.acklabel import x25519_public

SECRET = ClusterSecret.generate("k1")
HOST = "fe1.shop.example.net"
ACK = Ack("n-3f9c2a", HOST, 1700000000000, 1700000100, (AckOrder("example.com", "installed"),))


@pytest.mark.parametrize("seed", [bytes(32), bytes(range(32)), *(os.urandom(32) for _ in range(8))])
def test_the_x25519_form_of_the_publisher_key_matches_the_signing_key(seed: bytes) -> None:
    key = SigningKey(seed)
    mine = key.label_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert x25519_public(key.public_key()) == mine


def test_the_label_opens_with_the_signing_key_only_and_is_never_in_clear() -> None:
    sync, other = SigningKey.generate(), SigningKey.generate()
    data = seal_ack(
        ACK, cluster="web", secrets=[SECRET], publishers=[other.public_key(), sync.public_key()]
    )
    assert HOST.encode() not in data  # a store reader sees ciphertext only
    assert data.startswith(b"CFAL\x01") and b"CFSE" in data
    assert ack_label(data, cluster="web", node_id=ACK.node_id, signing_key=sync) == HOST
    assert ack_label(data, cluster="web", node_id=ACK.node_id, signing_key=other) == HOST
    stranger = SigningKey.generate()
    assert ack_label(data, cluster="web", node_id=ACK.node_id, signing_key=stranger) is None
    # Bound to its cluster and node: moved elsewhere, it does not open.
    assert ack_label(data, cluster="mail", node_id=ACK.node_id, signing_key=sync) is None
    assert ack_label(data, cluster="web", node_id="n-other", signing_key=sync) is None
    # The ack opens as before; the label is skipped.
    assert open_ack(data, cluster="web", node_id=ACK.node_id, secrets=[SECRET]) == ACK


def test_an_ack_without_a_label_as_older_agents_write_it_still_opens() -> None:
    sync = SigningKey.generate()
    data = seal_ack(ACK, cluster="web", secrets=[SECRET])
    assert data.startswith(b"CFSE")
    assert ack_label(data, cluster="web", node_id=ACK.node_id, signing_key=sync) is None
    assert open_ack(data, cluster="web", node_id=ACK.node_id, secrets=[SECRET]) == ACK


def test_a_damaged_label_gives_no_hostname_and_a_damaged_count_no_ack() -> None:
    sync = SigningKey.generate()
    data = bytearray(seal_ack(ACK, cluster="web", secrets=[SECRET], publishers=[sync.public_key()]))
    label_end = bytes(data).index(b"CFSE")
    damaged = (
        bytes(data[: label_end - 1]) + bytes([data[label_end - 1] ^ 1]) + bytes(data[label_end:])
    )
    assert ack_label(damaged, cluster="web", node_id=ACK.node_id, signing_key=sync) is None
    assert open_ack(damaged, cluster="web", node_id=ACK.node_id, secrets=[SECRET]) == ACK
    too_many = b"CFAL\x01" + struct.pack(">I", 5) + bytes(data[9:])
    assert ack_label(too_many, cluster="web", node_id=ACK.node_id, signing_key=sync) is None
    with pytest.raises(MalformedError, match="exceeds its limit of 4"):
        open_ack(too_many, cluster="web", node_id=ACK.node_id, secrets=[SECRET])


def test_a_label_that_does_not_parse_makes_the_object_malformed() -> None:
    sync = SigningKey.generate()
    data = seal_ack(ACK, cluster="web", secrets=[SECRET], publishers=[sync.public_key()])
    unknown_version = data[:4] + b"\x02" + data[5:]
    with pytest.raises(MalformedError, match="unknown hostname label version"):
        open_ack(unknown_version, cluster="web", node_id=ACK.node_id, secrets=[SECRET])
