"""The test vectors of docs/format.md (kept in docs/format-vectors.json) against the code.

Two checks: the implementation reproduces every expected byte, and an independent
step-by-step reading that follows the spec (not the implementation) opens the vectors.
Regenerate the expected outputs after a deliberate format change with:
    .venv/bin/python -m tests.unit.test_bundle_vectors --write
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from certfleet import bundle as fmt
from certfleet.bundle.ack import decode_ack, encode_ack
from certfleet.bundle.envelope import associated_data, wrapping_key
from certfleet.bundle.pending import encode_pending
from certfleet.sync.lease import encode_lease, mac_key

VECTORS_PATH = Path(__file__).resolve().parents[2] / "docs" / "format-vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text())


def _secrets(names: list[str]) -> list[fmt.ClusterSecret]:
    return [fmt.ClusterSecret.parse(VECTORS["secrets"][name]) for name in names]


def _rng(chunks: list[str]) -> Callable[[int], bytes]:
    stream: Iterator[bytes] = iter(bytes.fromhex(chunk) for chunk in chunks)

    def draw(size: int) -> bytes:
        chunk = next(stream)
        assert len(chunk) == size
        return chunk

    return draw


def _signing_key() -> fmt.SigningKey:
    return fmt.SigningKey(bytes.fromhex(VECTORS["signing_seed_hex"]))


def _head() -> fmt.Head:
    v = VECTORS["head"]
    return fmt.Head(
        v["cluster"],
        v["generation"],
        v["issued_at"],
        v["valid_until"],
        tuple(v["secret_ids"]),
        tuple(bytes.fromhex(x) for x in v["shard_hashes_hex"]),
    )


def _shard() -> fmt.Shard:
    v = VECTORS["shard"]
    entries = tuple(
        fmt.ShardEntry(
            e["order_name"],
            bytes.fromhex(e["bundle_hash_hex"]),
            e["serial"],
            e["not_after"],
            e["install_after"],
        )
        for e in v["entries"]
    )
    tombstones = tuple(fmt.Tombstone(t["order_name"], t["removed_at"]) for t in v["tombstones"])
    return fmt.Shard(entries, tombstones)


def _bundle() -> fmt.Bundle:
    v = VECTORS["bundle"]
    return fmt.Bundle(
        v["order_name"],
        tuple(v["dns_names"]),
        v["key_type"],
        v["private_key_pem"].encode(),
        v["certificate_pem"].encode(),
        tuple(p.encode() for p in v["chain_pem"]),
        v["serial"],
        v["not_before"],
        v["not_after"],
    )


def _ack() -> fmt.Ack:
    v = VECTORS["ack"]
    orders = tuple(
        fmt.AckOrder(o["order_name"], o["state"], o["serial"], o["detail"]) for o in v["orders"]
    )
    return fmt.Ack(v["node_id"], v["hostname"], v["generation"], v["reported_at"], orders)


def _ack_owed() -> fmt.Ack:
    v = VECTORS["ack_owed"]
    orders = tuple(
        fmt.AckOrder(o["order_name"], o["state"], o["serial"], o["detail"]) for o in v["orders"]
    )
    owed = tuple(fmt.OwedUpdate(o["order_name"], o["command"]) for o in v["owed"])
    return fmt.Ack(v["node_id"], v["hostname"], v["generation"], v["reported_at"], orders, owed)


def _pending() -> fmt.PendingKey:
    v = VECTORS["pending"]
    return fmt.PendingKey(
        v["order_name"],
        v["key_type"],
        v["private_key_pem"].encode(),
        v["pubkey_hash"],
        tuple(v["dns_names"]),
        v["created_at"],
    )


def _sealed(kind: str, identity: str, plaintext: bytes, sealed: bytes) -> dict[str, str]:
    v = VECTORS[kind]
    return {
        "identity": identity,
        "associated_data_hex": associated_data(kind, v["cluster"], identity).hex(),
        "plaintext_hex": plaintext.hex(),
        "sealed_hex": sealed.hex(),
        "sha256_hex": hashlib.sha256(sealed).hexdigest(),
    }


def compute() -> dict[str, Any]:
    """Every expected output, computed by the implementation from the vectors' inputs."""
    out: dict[str, Any] = {}
    key = _signing_key()
    head_bytes = fmt.encode_head(_head(), key)
    out["head"] = {
        "public_key": key.public_key().export(),
        "encoded_hex": head_bytes.hex(),
        "sha256_hex": fmt.content_hash_hex(head_bytes),
    }
    wrap = VECTORS["wrap_key"]
    out["wrap_key"] = {
        "key_hex": wrapping_key(
            _secrets([wrap["secret"]])[0], bytes.fromhex(wrap["salt_hex"])
        ).hex()
    }
    out["shard_index"] = [
        fmt.shard_index(bytes.fromhex(x["key_hex"]), x["order_name"], x["count"])
        for x in VECTORS["shard_index"]
    ]
    v = VECTORS["shard"]
    sealed = fmt.seal_shard(
        _shard(),
        cluster=v["cluster"],
        index=v["index"],
        secrets=_secrets(v["secrets"]),
        rng=_rng(v["rng_hex"]),
    )
    out["shard"] = _sealed("shard", str(v["index"]), fmt.encode_shard(_shard()), sealed)
    v = VECTORS["bundle"]
    sealed = fmt.seal_bundle(
        _bundle(), cluster=v["cluster"], secrets=_secrets(v["secrets"]), rng=_rng(v["rng_hex"])
    )
    out["bundle"] = _sealed("bundle", v["order_name"], fmt.encode_bundle(_bundle()), sealed)
    v = VECTORS["ack"]
    sealed = fmt.seal_ack(
        _ack(), cluster=v["cluster"], secrets=_secrets(v["secrets"]), rng=_rng(v["rng_hex"])
    )
    out["ack"] = _sealed("ack", v["node_id"], encode_ack(_ack()), sealed)
    out["ack_owed"] = {"plaintext_hex": encode_ack(_ack_owed()).hex()}
    v = VECTORS["pending"]
    sealed = fmt.seal_pending(
        _pending(), cluster=v["cluster"], secrets=_secrets(v["secrets"]), rng=_rng(v["rng_hex"])
    )
    out["pending"] = _sealed("pending", v["order_name"], encode_pending(_pending()), sealed)
    out["sync_secret"] = {
        purpose: key.sync_secret(purpose).export() for purpose in VECTORS["sync_secret"]["purposes"]
    }
    v = VECTORS["sync_state"]
    state_secret = key.sync_secret("state")
    sealed = fmt.seal(
        "pending", v["cluster"], "/state", v["plaintext"].encode(), [state_secret],
        rng=_rng(v["rng_hex"]),
    )  # fmt: skip
    out["sync_state"] = {"sealed_hex": sealed.hex(), "sha256_hex": fmt.content_hash_hex(sealed)}
    v = VECTORS["lease"]
    lease = encode_lease(mac_key(state_secret), v["cluster"], v["owner"], v["expires_at"])
    out["lease"] = {"mac_key_hex": mac_key(state_secret).hex(), "encoded": lease.decode()}
    return out


def test_vectors_match_the_implementation() -> None:
    assert compute() == VECTORS["expected"]


def test_shard_count_table() -> None:
    for n_orders, count in VECTORS["shard_count"]:
        assert fmt.shard_count(n_orders) == count


def test_vectors_open_through_the_api() -> None:
    expected = VECTORS["expected"]
    head = fmt.decode_head(
        bytes.fromhex(expected["head"]["encoded_hex"]),
        cluster="web",
        publishers=[fmt.PublicKey.parse(expected["head"]["public_key"])],
        now=VECTORS["head"]["issued_at"],
    )
    assert head == _head()
    sealed = bytes.fromhex(expected["shard"]["sealed_hex"])
    assert fmt.open_shard(sealed, cluster="web", index=5, secrets=_secrets(["k1"])) == _shard()
    sealed = bytes.fromhex(expected["bundle"]["sealed_hex"])
    for name in ("k1", "k2"):
        opened = fmt.open_bundle(
            sealed, cluster="web", order_name="example.com", secrets=_secrets([name])
        )
        assert opened == _bundle()
    sealed = bytes.fromhex(expected["ack"]["sealed_hex"])
    assert fmt.open_ack(sealed, cluster="web", node_id="n-3f9c2a", secrets=_secrets(["k1"])) == (
        _ack()
    )
    sealed = bytes.fromhex(expected["pending"]["sealed_hex"])
    opened_pending = fmt.open_pending(
        sealed, cluster="web", order_name="example.com", secrets=_secrets(["k2"])
    )
    assert opened_pending == _pending()


def test_values_quoted_in_the_spec_match_the_vectors() -> None:
    spec = (VECTORS_PATH.parent / "format.md").read_text()
    expected = VECTORS["expected"]
    for value in (
        expected["head"]["public_key"],
        expected["head"]["sha256_hex"],
        expected["wrap_key"]["key_hex"],
        expected["shard"]["sealed_hex"][:8],
    ):
        assert value in spec
    assert "`example.com` in 16 shards → {}".format(expected["shard_index"][0]) in spec


# --- an independent reading that follows docs/format.md, not the implementation ---


def test_spec_reading_of_the_sync_private_secrets_and_lease() -> None:
    seed = bytes.fromhex(VECTORS["signing_seed_hex"])
    expected = VECTORS["expected"]
    for purpose in VECTORS["sync_secret"]["purposes"]:
        info = b"certfleet/v1/sync-private/" + purpose.encode()
        derived = HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(seed)
        assert fmt.ClusterSecret.parse(expected["sync_secret"][purpose]) == (
            fmt.ClusterSecret(f"sync-{purpose}", derived)
        )
    state_key = fmt.ClusterSecret.parse(expected["sync_secret"]["state"]).key
    sealed = bytes.fromhex(expected["sync_state"]["sealed_hex"])
    opened = _spec_open(sealed, "pending", "web", "/state", state_key)
    assert opened.decode() == VECTORS["sync_state"]["plaintext"]
    lease_key = HKDF(
        algorithm=SHA256(), length=32, salt=None, info=b"certfleet/v1/sync-private/lease"
    ).derive(state_key)
    lease = json.loads(expected["lease"]["encoded"])
    v = VECTORS["lease"]
    message = json.dumps([v["cluster"], v["owner"], v["expires_at"]], separators=(",", ":"))
    mac = hmac.new(lease_key, message.encode(), hashlib.sha256).hexdigest()
    assert lease == {"owner": v["owner"], "expires_at": v["expires_at"], "mac": mac}


def _fields(*values: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(value)) + value for value in values)


def _spec_open(data: bytes, kind: str, cluster: str, identity: str, secret: bytes) -> bytes:
    assert data[:4] == b"CFSE" and data[4] == 1
    nonce, pos = data[5:17], 17
    (n_wraps,) = struct.unpack(">I", data[pos : pos + 4])
    pos += 4
    ad = _fields(b"\x01", kind.encode(), cluster.encode(), identity.encode())
    data_keys = []
    for _ in range(n_wraps):
        (id_len,) = struct.unpack(">I", data[pos : pos + 4])
        pos += 4 + id_len
        salt, wrap_nonce, wrapped = (
            data[pos : pos + 32],
            data[pos + 32 : pos + 44],
            data[pos + 44 : pos + 92],
        )
        pos += 92
        kek = HKDF(SHA256(), 32, salt, b"certfleet/v1/wrap").derive(secret)
        try:
            data_keys.append(AESGCM(kek).decrypt(wrap_nonce, wrapped, ad))
        except Exception:  # another secret's wrap
            continue
    header = data[:pos]
    (ct_len,) = struct.unpack(">I", data[pos : pos + 4])
    ciphertext = data[pos + 4 :]
    assert len(ciphertext) == ct_len
    payload_ad = _fields(b"\x01", kind.encode(), cluster.encode(), identity.encode(), header)
    assert len(data_keys) == 1
    return AESGCM(data_keys[0]).decrypt(nonce, ciphertext, payload_ad)


@pytest.mark.parametrize(
    ("kind", "secret_name"),
    [("shard", "k1"), ("bundle", "k1"), ("bundle", "k2"), ("ack", "k1"), ("pending", "k2")],
)
def test_spec_reading_opens_the_sealed_vectors(kind: str, secret_name: str) -> None:
    expected = VECTORS["expected"][kind]
    secret = fmt.ClusterSecret.parse(VECTORS["secrets"][secret_name]).key
    plaintext = _spec_open(
        bytes.fromhex(expected["sealed_hex"]), kind, "web", expected["identity"], secret
    )
    assert plaintext.hex() == expected["plaintext_hex"]


def test_spec_reading_verifies_the_head() -> None:
    data = bytes.fromhex(VECTORS["expected"]["head"]["encoded_hex"])
    body, signature = data[:-64], data[-64:]
    assert body[:5] == b"CFHD\x01"
    Ed25519PublicKey.from_public_bytes(body[5:37]).verify(
        signature, b"certfleet/v1/head\x00" + body
    )
    (cluster_len,) = struct.unpack(">I", body[37:41])
    assert body[41 : 41 + cluster_len] == b"web"
    generation, issued_at, valid_until = struct.unpack(">QQQ", body[44:68])
    assert (generation, issued_at, valid_until) == (1700000000000, 1700000000, 1700604800)


def test_spec_reading_of_the_shard_plaintext() -> None:
    plaintext = bytes.fromhex(VECTORS["expected"]["shard"]["plaintext_hex"])
    (n_entries,) = struct.unpack(">I", plaintext[:4])
    assert n_entries == 2
    (name_len,) = struct.unpack(">I", plaintext[4:8])
    # sorted by order name: "*" (0x2a) sorts before "e"
    assert plaintext[8 : 8 + name_len] == b"*.example.org"


def _spec_texts(data: bytes, pos: int, count: int) -> tuple[list[str], int]:
    """``count`` length-prefixed UTF-8 texts from ``pos`` (the spec's ``text``)."""
    texts = []
    for _ in range(count):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        texts.append(data[pos + 4 : pos + 4 + size].decode())
        pos += 4 + size
    return texts, pos


def test_spec_reading_of_the_ack_plaintexts_with_and_without_the_owed_list() -> None:
    expected = VECTORS["expected"]
    for kind, owed in (("ack", []), ("ack_owed", VECTORS["ack_owed"]["owed"])):
        data = bytes.fromhex(expected[kind]["plaintext_hex"])
        (_, pos) = _spec_texts(data, 0, 2)  # node id, hostname
        pos += 16  # generation, reported_at
        (n_orders,) = struct.unpack(">I", data[pos : pos + 4])
        _, pos = _spec_texts(data, pos + 4, 4 * n_orders)
        if not owed:
            assert pos == len(data)  # no owed list: the bytes an ack always had
            assert encode_ack(_ack()) == data
            continue
        (n_owed,) = struct.unpack(">I", data[pos : pos + 4])
        texts, pos = _spec_texts(data, pos + 4, 2 * n_owed)
        assert pos == len(data)
        assert [{"order_name": n, "command": c} for n, c in zip(texts[::2], texts[1::2])] == owed
        assert decode_ack(data) == _ack_owed()
    assert decode_ack(bytes.fromhex(expected["ack"]["plaintext_hex"])).owed is None


def test_an_empty_owed_list_is_not_canonical() -> None:
    data = bytes.fromhex(VECTORS["expected"]["ack"]["plaintext_hex"]) + struct.pack(">I", 0)
    with pytest.raises(fmt.MalformedError, match="empty owed list"):
        decode_ack(data)
    assert fmt.Ack("n-1", "h", 1, 1, (), ()).owed is None  # and is never written


if __name__ == "__main__" and "--write" in sys.argv:
    VECTORS["expected"] = compute()
    VECTORS_PATH.write_text(json.dumps(VECTORS, indent=2) + "\n")
    print(f"wrote {VECTORS_PATH}")
