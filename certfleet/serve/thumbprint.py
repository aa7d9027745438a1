"""The RFC 7638 JWK thumbprint of an ACME account key, as the HTTP-01 answer needs it.

The key authorization of token T is ``T.<thumbprint>``: base64url (unpadded) of the
SHA-256 of the public JWK's required members, sorted, without whitespace. The account
key may be given as PEM (PKCS#8 or traditional; also on one line with its line breaks
written ``\n``) or as a JWK in JSON; only its public half is used, and the key never
appears in an error.
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

_CURVES = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int(value: int, size: int | None = None) -> str:
    length = size if size is not None else max(1, (value.bit_length() + 7) // 8)
    return _b64(value.to_bytes(length, "big"))


def public_jwk(account_key: str) -> dict[str, str]:
    """The required members of the key's public JWK; ``ValueError`` if it is not a key."""
    text = account_key.strip()
    if text.startswith("{"):
        try:
            jwk = json.loads(text)
        except ValueError:
            raise ValueError("the account key is not valid JSON (JWK)") from None
        if not isinstance(jwk, dict):
            raise ValueError("the account key JWK is not a JSON object")
        members = {
            "RSA": ("e", "kty", "n"),
            "EC": ("crv", "kty", "x", "y"),
            "OKP": ("crv", "kty", "x"),
        }
        kty = jwk.get("kty")
        if kty not in members or not all(isinstance(jwk.get(m), str) for m in members[kty]):
            raise ValueError("the account key JWK lacks its public members")
        return {m: jwk[m] for m in members[kty]}
    if "\\n" in text:  # one-line PEM, its line breaks written \n (as init writes it)
        text = text.replace("\\n", "\n")
    try:
        key = load_pem_private_key(text.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError):
        raise ValueError("the account key is neither a PEM private key nor a JWK") from None
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        return {"e": _int(numbers.e), "kty": "RSA", "n": _int(numbers.n)}
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curve = _CURVES.get(key.curve.name)
        if curve is None:
            raise ValueError("the account key's curve is not P-256, P-384 or P-521")
        point = key.public_key().public_numbers()
        x, y = _int(point.x, curve[1]), _int(point.y, curve[1])
        return {"crv": curve[0], "kty": "EC", "x": x, "y": y}
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}
    raise ValueError("the account key is not an RSA, EC or Ed25519 key")


def thumbprint(account_key: str) -> str:
    """The RFC 7638 thumbprint (base64url, 43 characters) of ``account_key``'s public half."""
    canonical = json.dumps(public_jwk(account_key), sort_keys=True, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode("ascii")).digest())
