"""Microseconds per operation of the format: seal/open of a typical bundle, head verification.

Run: .venv/bin/python bench/bench_bundle.py
A "typical bundle" is an RSA-2048 key with a leaf and one intermediate (about 5 KB), wrapped
for two secrets (the rotation case); the head lists 512 shards (about 100,000 orders).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from certfleet import bundle as fmt

NOW = 1_700_000_000


def _certificate(name: str, key: rsa.RSAPrivateKey) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.datetime(2023, 11, 14, tzinfo=datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=90))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


def _microseconds(call: Callable[[], object], seconds: float = 0.5) -> float:
    call()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        runs += 1
    return (time.perf_counter() - start) / runs * 1e6


def main() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bundle = fmt.Bundle(
        "example.com",
        ("example.com", "www.example.com"),
        "rsa",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        _certificate("example.com", key),
        (_certificate("Intermediate", key),),
        "03a1f2c4d5e6",
        NOW - 3600,
        NOW + 90 * 86400,
    )
    secrets = [fmt.ClusterSecret.generate("k1"), fmt.ClusterSecret.generate("k2")]
    sealed = fmt.seal_bundle(bundle, cluster="web", secrets=secrets)
    signer = fmt.SigningKey.generate()
    head = fmt.Head("web", 1, NOW, NOW + 86400, ("k1", "k2"), tuple(bytes(32) for _ in range(512)))
    head_bytes = fmt.encode_head(head, signer)
    pinned = [signer.public_key()]
    figures = {
        f"seal bundle ({len(sealed)} bytes, 2 secrets)": _microseconds(
            lambda: fmt.seal_bundle(bundle, cluster="web", secrets=secrets)
        ),
        "open bundle": _microseconds(
            lambda: fmt.open_bundle(
                sealed, cluster="web", order_name="example.com", secrets=secrets[1:]
            )
        ),
        f"encode+sign head ({len(head_bytes)} bytes, 512 shards)": _microseconds(
            lambda: fmt.encode_head(head, signer)
        ),
        "verify head": _microseconds(
            lambda: fmt.decode_head(head_bytes, cluster="web", publishers=pinned, now=NOW)
        ),
    }
    for label, micros in figures.items():
        print(f"{label:45s} {micros:8.1f} us")


if __name__ == "__main__":
    main()
