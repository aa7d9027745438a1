"""Property tests: every decoder refuses arbitrary input with a FormatError and nothing else,
and valid objects round-trip."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from certfleet import bundle as fmt
from certfleet.bundle.ack import decode_ack, encode_ack
from certfleet.bundle.pending import decode_pending, encode_pending

CLUSTER = "web"
K1 = fmt.ClusterSecret("k1", bytes(range(32)))
PUBLISHER = fmt.SigningKey(bytes(range(64, 96)))
NOW = 1_700_000_000
SETTINGS = settings(max_examples=150, deadline=None)

HEAD = fmt.encode_head(
    fmt.Head(CLUSTER, 7, NOW, NOW + 3600, ("k1",), tuple(bytes([i]) * 32 for i in range(16))),
    PUBLISHER,
)
SHARD = fmt.Shard(
    (fmt.ShardEntry("a.example", bytes(32), "01", NOW, NOW),), (fmt.Tombstone("b.example", NOW),)
)
BUNDLE = fmt.Bundle(
    "a.example", ("a.example",), "rsa", b"KEY", b"CERT", (b"CHAIN",), "01", NOW, NOW + 1
)
ACK = fmt.Ack("node-1", "fe1", 3, NOW, (fmt.AckOrder("a.example", "installed", "01"),))
PENDING = fmt.PendingKey("a.example", "rsa", b"KEY", "ab" * 32, ("a.example",), NOW)

PLAINTEXT_DECODERS: dict[str, tuple[bytes, Callable[[bytes], object]]] = {
    "shard": (fmt.encode_shard(SHARD), fmt.decode_shard),
    "bundle": (fmt.encode_bundle(BUNDLE), fmt.decode_bundle),
    "ack": (encode_ack(ACK), decode_ack),
    "pending": (encode_pending(PENDING), decode_pending),
}

SEALED_OPENERS: dict[str, tuple[bytes, Callable[[bytes], object]]] = {
    "shard": (
        fmt.seal_shard(SHARD, cluster=CLUSTER, index=1, secrets=[K1]),
        lambda data: fmt.open_shard(data, cluster=CLUSTER, index=1, secrets=[K1]),
    ),
    "bundle": (
        fmt.seal_bundle(BUNDLE, cluster=CLUSTER, secrets=[K1]),
        lambda data: fmt.open_bundle(data, cluster=CLUSTER, order_name="a.example", secrets=[K1]),
    ),
    "ack": (
        fmt.seal_ack(ACK, cluster=CLUSTER, secrets=[K1]),
        lambda data: fmt.open_ack(data, cluster=CLUSTER, node_id="node-1", secrets=[K1]),
    ),
    "pending": (
        fmt.seal_pending(PENDING, cluster=CLUSTER, secrets=[K1]),
        lambda data: fmt.open_pending(data, cluster=CLUSTER, order_name="a.example", secrets=[K1]),
    ),
}

IDENTITIES = {"shard": "1", "bundle": "a.example", "ack": "node-1", "pending": "a.example"}


def _only_format_errors(call: Callable[[], object]) -> None:
    try:
        call()
    except fmt.FormatError:
        pass


def _mutate(data: st.DataObject, original: bytes) -> bytes:
    start = data.draw(st.integers(0, len(original)))
    end = data.draw(st.integers(start, min(len(original), start + 16)))
    replacement = data.draw(st.binary(max_size=16))
    return original[:start] + replacement + original[end:]


def _decode_head(blob: bytes) -> None:
    fmt.decode_head(blob, cluster=CLUSTER, publishers=[PUBLISHER.public_key()], now=NOW)


@SETTINGS
@given(st.binary(max_size=2048))
def test_head_decoders_on_arbitrary_bytes(blob: bytes) -> None:
    _only_format_errors(lambda: _decode_head(blob))
    _only_format_errors(lambda: fmt.peek_head(blob))
    _only_format_errors(lambda: fmt.head_publisher(blob))


@SETTINGS
@given(st.data())
def test_head_decoders_on_mutated_heads(data: st.DataObject) -> None:
    blob = _mutate(data, HEAD)
    _only_format_errors(lambda: _decode_head(blob))
    _only_format_errors(lambda: fmt.peek_head(blob))


@SETTINGS
@given(st.sampled_from(sorted(SEALED_OPENERS)), st.binary(max_size=1024))
def test_openers_on_arbitrary_bytes(kind: str, blob: bytes) -> None:
    _only_format_errors(lambda: SEALED_OPENERS[kind][1](blob))
    _only_format_errors(lambda: fmt.wrapped_for(blob))


@SETTINGS
@given(st.sampled_from(sorted(SEALED_OPENERS)), st.data())
def test_openers_on_mutated_objects(kind: str, data: st.DataObject) -> None:
    original, open_ = SEALED_OPENERS[kind]
    mutated = _mutate(data, original)
    if mutated == original:
        assert open_(mutated)
    else:
        _only_format_errors(lambda: open_(mutated))


@SETTINGS
@given(st.sampled_from(sorted(PLAINTEXT_DECODERS)), st.binary(max_size=512))
def test_plaintext_decoders_on_arbitrary_bytes(kind: str, blob: bytes) -> None:
    _only_format_errors(lambda: PLAINTEXT_DECODERS[kind][1](blob))


@SETTINGS
@given(st.sampled_from(sorted(PLAINTEXT_DECODERS)), st.data())
def test_authentic_but_malformed_payloads_are_refused_as_format_errors(
    kind: str, data: st.DataObject
) -> None:
    """A payload that passes the AEAD (a sync bug, or a leaked secret) is still parsed strictly."""
    payload = _mutate(data, PLAINTEXT_DECODERS[kind][0])
    sealed = fmt.seal(kind, CLUSTER, IDENTITIES[kind], payload, [K1])
    _only_format_errors(lambda: SEALED_OPENERS[kind][1](sealed))


@SETTINGS
@given(st.text(max_size=120))
def test_text_parsers_on_arbitrary_text(text: str) -> None:
    for parse in (fmt.ClusterSecret.parse, fmt.PublicKey.parse, fmt.SigningKey.parse):
        _only_format_errors(lambda parse=parse: parse(text))
    for check in (
        fmt.validate_cluster_name,
        fmt.validate_order_name,
        fmt.validate_dns_name,
        fmt.safe_dir_name,
    ):
        _only_format_errors(lambda check=check: check(text))


@SETTINGS
@given(st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True), st.binary(min_size=32, max_size=32))
def test_cluster_secret_text_round_trip(secret_id: str, key: bytes) -> None:
    secret = fmt.ClusterSecret(secret_id, key)
    assert fmt.ClusterSecret.parse(secret.export()) == secret
    assert fmt.ClusterSecret.parse(secret.export() + "=") == secret


ORDER_NAMES = st.from_regex(r"[A-Za-z0-9*_-][A-Za-z0-9*._-]{0,40}", fullmatch=True)


@SETTINGS
@given(
    st.dictionaries(
        ORDER_NAMES,
        st.tuples(st.binary(min_size=32, max_size=32), st.integers(0, 2**63 - 1)),
        max_size=12,
    ),
    st.integers(0, 65535),
)
def test_shard_round_trip(orders: dict[str, tuple[bytes, int]], index: int) -> None:
    names = sorted(orders)
    half = len(names) // 2
    shard = fmt.Shard(
        tuple(fmt.ShardEntry(n, orders[n][0], "0f", orders[n][1], 0) for n in names[:half]),
        tuple(fmt.Tombstone(n, orders[n][1]) for n in names[half:]),
    )
    sealed = fmt.seal_shard(shard, cluster=CLUSTER, index=index, secrets=[K1])
    assert fmt.open_shard(sealed, cluster=CLUSTER, index=index, secrets=[K1]) == shard
