"""certfleet.bundle: round trips, tampering, moved objects, rotation and head refusals."""

from __future__ import annotations

import datetime
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfleet import bundle as fmt

CLUSTER = "web"
NOW = 1_700_000_000
K1 = fmt.ClusterSecret("k1", bytes(range(32)))
K2 = fmt.ClusterSecret("k2", bytes(range(32, 64)))
PUBLISHER = fmt.SigningKey(bytes(range(64, 96)))
OTHER_PUBLISHER = fmt.SigningKey(bytes(range(96, 128)))


def _certificate(common_name: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.datetime(2023, 11, 14, tzinfo=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x3A1F2C4D5E6)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _real_bundle(order_name: str = "example.com") -> fmt.Bundle:
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return fmt.Bundle(
        order_name=order_name,
        dns_names=("Example.com", "www.example.com"),
        key_type="ecdsa",
        private_key_pem=key_pem,
        certificate_pem=_certificate("example.com", key),
        chain_pem=(_certificate("Test Intermediate", ec.generate_private_key(ec.SECP256R1())),),
        serial="03a1f2c4d5e6",
        not_before=NOW - 3600,
        not_after=NOW + 90 * 86400,
    )


BUNDLE = _real_bundle()


def _shard() -> fmt.Shard:
    entries = tuple(
        fmt.ShardEntry(f"host{i}.example.com", fmt.content_hash(b"%d" % i), f"{i:04x}", NOW, NOW)
        for i in range(8)
    )
    return fmt.Shard(entries, (fmt.Tombstone("gone.example.com", NOW - 10),))


def _head(**changes: object) -> fmt.Head:
    fields: dict[str, object] = {
        "cluster": CLUSTER,
        "generation": 1_700_000_000_000,
        "issued_at": NOW,
        "valid_until": NOW + 86400,
        "secret_ids": ("k1",),
        "shard_hashes": tuple(fmt.content_hash(bytes([i])) for i in range(16)),
    }
    fields.update(changes)
    return fmt.Head(**fields)  # type: ignore[arg-type]


def _decode(data: bytes, **changes: object) -> fmt.Head:
    args: dict[str, object] = {
        "cluster": CLUSTER,
        "publishers": [PUBLISHER.public_key()],
        "now": NOW,
        "min_generation": 0,
    }
    args.update(changes)
    return fmt.decode_head(data, **args)  # type: ignore[arg-type]


# --- round trips ---


def test_head_round_trip() -> None:
    head = _head(secret_ids=("k1", "k2"))
    assert _decode(fmt.encode_head(head, PUBLISHER)) == head


def test_head_encoding_is_byte_exact() -> None:
    head = _head()
    assert fmt.encode_head(head, PUBLISHER) == fmt.encode_head(head, PUBLISHER)


def test_shard_round_trip_and_canonical_plaintext() -> None:
    shard = _shard()
    sealed = fmt.seal_shard(shard, cluster=CLUSTER, index=3, secrets=[K1])
    assert fmt.open_shard(sealed, cluster=CLUSTER, index=3, secrets=[K1]) == shard
    reordered = fmt.Shard(tuple(reversed(shard.entries)), shard.tombstones)
    assert fmt.encode_shard(reordered) == fmt.encode_shard(shard)
    again = fmt.seal_shard(shard, cluster=CLUSTER, index=3, secrets=[K1])
    assert again != sealed, "each seal draws fresh keys, so compare plaintexts, not ciphertexts"


def test_bundle_round_trip_lowercases_dns_names() -> None:
    sealed = fmt.seal_bundle(BUNDLE, cluster=CLUSTER, secrets=[K1])
    opened = fmt.open_bundle(sealed, cluster=CLUSTER, order_name="example.com", secrets=[K1])
    assert opened == BUNDLE
    assert opened.dns_names == ("example.com", "www.example.com")


def test_ack_and_pending_round_trip() -> None:
    ack = fmt.Ack(
        "node-1", "fe1", 5, NOW, (fmt.AckOrder("example.com", "failed", "", "héllo: disk full"),)
    )
    sealed = fmt.seal_ack(ack, cluster=CLUSTER, secrets=[K1, K2])
    assert fmt.open_ack(sealed, cluster=CLUSTER, node_id="node-1", secrets=[K2]) == ack
    pending = fmt.PendingKey(
        "example.com", "ecdsa", BUNDLE.private_key_pem, "ab" * 32, ("example.com",), NOW
    )
    sealed = fmt.seal_pending(pending, cluster=CLUSTER, secrets=[K1])
    assert fmt.open_pending(sealed, cluster=CLUSTER, order_name="example.com", secrets=[K1]) == (
        pending
    )


def test_content_hash() -> None:
    assert fmt.content_hash(b"") == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert fmt.content_hash_hex(b"x") == fmt.content_hash(b"x").hex()


# --- every flipped byte and every truncation refused ---


def _assert_every_change_refused(data: bytes, open_: Callable[[bytes], object]) -> None:
    for position in range(len(data)):
        changed = bytearray(data)
        changed[position] ^= 1 << (position % 8)
        with pytest.raises(fmt.FormatError):
            open_(bytes(changed))
    for length in range(len(data)):
        with pytest.raises(fmt.FormatError):
            open_(data[:length])
    with pytest.raises(fmt.MalformedError, match="trailing"):
        open_(data + b"\0")


def test_every_change_to_a_head_is_refused() -> None:
    _assert_every_change_refused(fmt.encode_head(_head(), PUBLISHER), _decode)


def test_every_change_to_a_shard_is_refused() -> None:
    sealed = fmt.seal_shard(_shard(), cluster=CLUSTER, index=3, secrets=[K1])
    _assert_every_change_refused(
        sealed, lambda data: fmt.open_shard(data, cluster=CLUSTER, index=3, secrets=[K1])
    )


def test_every_change_to_a_bundle_is_refused_even_in_another_secrets_wrap() -> None:
    sealed = fmt.seal_bundle(BUNDLE, cluster=CLUSTER, secrets=[K1, K2])
    _assert_every_change_refused(
        sealed,
        lambda data: fmt.open_bundle(data, cluster=CLUSTER, order_name="example.com", secrets=[K1]),
    )


def test_a_tampered_ciphertext_says_integrity_check_failed() -> None:
    sealed = bytearray(fmt.seal_bundle(BUNDLE, cluster=CLUSTER, secrets=[K1]))
    sealed[-1] ^= 0x80
    with pytest.raises(fmt.IntegrityError, match="integrity check failed") as caught:
        fmt.open_bundle(bytes(sealed), cluster=CLUSTER, order_name="example.com", secrets=[K1])
    assert caught.value.object_name == "bundle for order example.com in cluster web"


# --- moved objects ---


def test_a_bundle_moved_to_another_order_kind_or_cluster_is_refused() -> None:
    other = _real_bundle("other.example.com")
    sealed = fmt.seal_bundle(other, cluster=CLUSTER, secrets=[K1])
    with pytest.raises(fmt.IntegrityError):
        fmt.open_bundle(sealed, cluster=CLUSTER, order_name="example.com", secrets=[K1])
    with pytest.raises(fmt.IntegrityError):
        fmt.open_bundle(sealed, cluster="db", order_name="other.example.com", secrets=[K1])
    with pytest.raises(fmt.IntegrityError):
        fmt.open_pending(sealed, cluster=CLUSTER, order_name="other.example.com", secrets=[K1])
    assert fmt.open_bundle(
        sealed, cluster=CLUSTER, order_name="other.example.com", secrets=[K1]
    ) == (other)


def test_a_shard_moved_to_another_index_or_an_ack_to_another_node_is_refused() -> None:
    sealed = fmt.seal_shard(_shard(), cluster=CLUSTER, index=3, secrets=[K1])
    with pytest.raises(fmt.IntegrityError):
        fmt.open_shard(sealed, cluster=CLUSTER, index=4, secrets=[K1])
    ack = fmt.Ack("node-a", "fe1", 1, NOW)
    sealed = fmt.seal_ack(ack, cluster=CLUSTER, secrets=[K1])
    with pytest.raises(fmt.IntegrityError):
        fmt.open_ack(sealed, cluster=CLUSTER, node_id="node-b", secrets=[K1])


# --- secrets and rotation ---


def test_wrong_secret_with_the_same_id_fails_integrity() -> None:
    sealed = fmt.seal_bundle(BUNDLE, cluster=CLUSTER, secrets=[K1])
    impostor = fmt.ClusterSecret("k1", bytes(32))
    with pytest.raises(fmt.IntegrityError, match="integrity check failed"):
        fmt.open_bundle(sealed, cluster=CLUSTER, order_name="example.com", secrets=[impostor])


def test_rotation_two_secrets_open_with_either_and_the_retired_one_is_refused() -> None:
    both = fmt.seal_bundle(BUNDLE, cluster=CLUSTER, secrets=[K1, K2])
    assert fmt.wrapped_for(both) == ("k1", "k2")
    for held in ([K1], [K2], [K2, K1]):
        assert fmt.open_bundle(both, cluster=CLUSTER, order_name="example.com", secrets=held)
    new_only = fmt.seal_bundle(BUNDLE, cluster=CLUSTER, secrets=[K2])
    with pytest.raises(fmt.NoUsableSecretError) as caught:
        fmt.open_bundle(new_only, cluster=CLUSTER, order_name="example.com", secrets=[K1])
    assert caught.value.wrapped_for == ("k2",)
    assert caught.value.held == ("k1",)
    assert fmt.open_bundle(new_only, cluster=CLUSTER, order_name="example.com", secrets=[K1, K2])


def test_errors_and_reprs_never_show_key_material() -> None:
    secret_text = K1.export().split(":")[1]
    sealed = fmt.seal_bundle(BUNDLE, cluster=CLUSTER, secrets=[K2])
    with pytest.raises(fmt.FormatError) as caught:
        fmt.open_bundle(sealed, cluster=CLUSTER, order_name="example.com", secrets=[K1])
    shown = [str(caught.value), repr(K1), str(K1), repr(PUBLISHER), repr(BUNDLE), str(BUNDLE)]
    for text in shown:
        assert secret_text not in text
        assert "PRIVATE KEY" not in text
        assert PUBLISHER.export().split(":")[1] not in text
    pending = fmt.PendingKey("a.example", "rsa", b"PRIVATE-PEM", "ab" * 32, ("a.example",), 1)
    assert "PRIVATE-PEM" not in repr(pending)


# --- head refusals ---


def test_head_from_an_unpinned_publisher_is_refused() -> None:
    data = fmt.encode_head(_head(), OTHER_PUBLISHER)
    with pytest.raises(fmt.UnknownPublisherError) as caught:
        _decode(data)
    assert caught.value.publisher == OTHER_PUBLISHER.public_key().export()
    assert _decode(data, publishers=[PUBLISHER.public_key(), OTHER_PUBLISHER.public_key()])


def test_head_signed_by_another_key_claiming_the_pinned_one_is_refused() -> None:
    data = fmt.encode_head(_head(), PUBLISHER)
    body = data[:-64]
    forged = body + OTHER_PUBLISHER.sign(b"certfleet/v1/head\x00" + body)
    with pytest.raises(fmt.BadSignatureError, match="integrity check failed"):
        _decode(forged)
    undomained = body + PUBLISHER.sign(body)
    with pytest.raises(fmt.BadSignatureError):
        _decode(undomained)


def test_head_of_another_cluster_is_refused() -> None:
    data = fmt.encode_head(_head(cluster="db"), PUBLISHER)
    with pytest.raises(fmt.WrongClusterError) as caught:
        _decode(data)
    assert (caught.value.expected, caught.value.found) == ("web", "db")


def test_lower_generation_is_refused_and_equal_accepted() -> None:
    data = fmt.encode_head(_head(generation=100), PUBLISHER)
    with pytest.raises(fmt.RollbackError) as caught:
        _decode(data, min_generation=101)
    assert (caught.value.generation, caught.value.min_generation) == (100, 101)
    assert _decode(data, min_generation=100).generation == 100


def test_expired_head_is_refused_but_can_be_peeked() -> None:
    head = _head(valid_until=NOW + 10)
    data = fmt.encode_head(head, PUBLISHER)
    assert _decode(data, now=NOW + 10) == head
    with pytest.raises(fmt.ExpiredHeadError, match="expired"):
        _decode(data, now=NOW + 11)
    assert fmt.peek_head(data).generation == head.generation
    assert fmt.verify_head(data, cluster=CLUSTER, publishers=[PUBLISHER.public_key()]) == head
    assert fmt.head_publisher(data) == PUBLISHER.public_key()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"valid_until": NOW + 7 * 86400 + 1}, "7 days"),
        ({"valid_until": NOW - 1}, "7 days"),
        ({"shard_hashes": (bytes(32),) * 24}, "power of two"),
        ({"shard_hashes": (bytes(32),) * 8}, "power of two"),
        ({"shard_hashes": (bytes(31),) * 16}, "32 bytes"),
        ({"secret_ids": ()}, "secret ids"),
        ({"secret_ids": ("k1", "k1")}, "twice"),
        ({"secret_ids": ("bad id",)}, "id must be"),
        ({"generation": 0}, "at least 1"),
        ({"generation": 1 << 63}, "2\\*\\*63"),
    ],
)
def test_head_rules(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(fmt.MalformedError, match=reason):
        _head(**changes)


def test_head_with_unsafe_cluster_name_is_refused() -> None:
    with pytest.raises(fmt.UnsafeNameError):
        _head(cluster="../etc")


def test_head_with_an_unknown_version_is_refused() -> None:
    data = bytearray(fmt.encode_head(_head(), PUBLISHER))
    data[4] = 2
    with pytest.raises(fmt.MalformedError, match="unknown format version 2"):
        _decode(bytes(data))


def test_next_generation() -> None:
    assert fmt.next_generation(5, 1_700_000_000_000) == 1_700_000_000_000
    assert fmt.next_generation(1_700_000_000_000, 1_600_000_000_000) == 1_700_000_000_001


# --- shards ---


def test_shard_count_rule() -> None:
    assert [fmt.shard_count(n) for n in (0, 1, 256, 257, 1024, 1025, 100_000)] == [
        16,
        16,
        16,
        32,
        32,
        64,
        512,
    ]
    for n in range(0, 300_000, 997):
        count = fmt.shard_count(n)
        assert count & (count - 1) == 0 and count >= 16 and count * count >= n


def test_shard_index_is_keyed_stable_and_spread() -> None:
    key = bytes(range(32))
    names = [f"host{i}.example.com" for i in range(1600)]
    indexes = [fmt.shard_index(key, name, 16) for name in names]
    assert indexes == [fmt.shard_index(key, name, 16) for name in names]
    counts = [indexes.count(i) for i in range(16)]
    assert min(counts) > 50 and max(counts) < 150
    other = [fmt.shard_index(bytes(32), name, 16) for name in names]
    assert other != indexes


def test_shard_refuses_duplicates_and_unsafe_names() -> None:
    entry = fmt.ShardEntry("a.example", bytes(32), "01", NOW, NOW)
    with pytest.raises(fmt.MalformedError, match="twice"):
        fmt.Shard((entry,), (fmt.Tombstone("a.example", NOW),))
    with pytest.raises(fmt.UnsafeNameError):
        fmt.ShardEntry("../../etc/x", bytes(32), "01", NOW, NOW)


def test_open_shard_refuses_an_unsafe_order_name_in_the_plaintext() -> None:
    from certfleet.bundle.codec import Writer

    payload = Writer().u32(1).text("../../etc/x").raw(bytes(32)).text("01").u64(1).u64(1)
    sealed = fmt.seal("shard", CLUSTER, "0", payload.u32(0).getvalue(), [K1])
    with pytest.raises(fmt.UnsafeNameError, match="etc/x") as caught:
        fmt.open_shard(sealed, cluster=CLUSTER, index=0, secrets=[K1])
    assert caught.value.object_name == "shard 0 of cluster web"


def test_open_shard_refuses_a_non_canonical_order() -> None:
    from certfleet.bundle.codec import Writer

    writer = Writer().u32(2)
    for name in ("b.example", "a.example"):
        writer.text(name).raw(bytes(32)).text("01").u64(1).u64(1)
    sealed = fmt.seal("shard", CLUSTER, "0", writer.u32(0).getvalue(), [K1])
    with pytest.raises(fmt.MalformedError, match="ascending"):
        fmt.open_shard(sealed, cluster=CLUSTER, index=0, secrets=[K1])


def test_bundle_rules() -> None:
    with pytest.raises(fmt.MalformedError, match="key_type"):
        fmt.Bundle("a.example", ("a.example",), "dsa", b"k", b"c", (), "01", 1, 2)
    with pytest.raises(fmt.MalformedError, match="distinct"):
        fmt.Bundle("a.example", ("a.example", "A.example"), "rsa", b"k", b"c", (), "01", 1, 2)
    with pytest.raises(fmt.UnsafeNameError):
        fmt.Bundle("a.example", ("a..example",), "rsa", b"k", b"c", (), "01", 1, 2)
    with pytest.raises(fmt.MalformedError, match="not_before"):
        fmt.Bundle("a.example", ("a.example",), "rsa", b"k", b"c", (), "01", 3, 2)
