"""The ACME account key in its config text form, and its RFC 7638 thumbprint (pure: no
ACME library, so the CLI and the config loader use it on any Python).

``certfleet init --provider acme`` makes an EC P-256 key (ES256) and writes it as PKCS#8
PEM on one line, its line breaks written ``\\n`` (HCL strings hold no raw newline). The
config may also hold the PEM with real line breaks, or the key as a JWK (JSON) text, as
other ACME clients export it; RSA keys of 2048 bits or more are accepted too.

Pure: text in, key or text out; errors never quote the key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AccountPrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]

_MIN_RSA_BITS = 2048
_CURVES = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48)}


class AccountKeyError(ValueError):
    """The account key text is not a usable key; the message never quotes the text."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_account_key() -> ec.EllipticCurvePrivateKey:
    """A new EC P-256 account key."""
    return ec.generate_private_key(ec.SECP256R1())


def account_key_text(key: AccountPrivateKey) -> str:
    """The key as one-line PKCS#8 PEM (line breaks written ``\\n``), for the config file."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return pem.replace("\n", "\\n")


def load_account_key(text: str) -> AccountPrivateKey:
    """The private key of a config's ``account_key``: PEM (one line or several) or JWK."""
    if not isinstance(text, str) or not text.strip():
        raise AccountKeyError("is empty")
    stripped = text.strip()
    if stripped.startswith("{"):
        # an HCL string keeps its escapes: a JWK written "{\"kty\": ...}" arrives so
        key = _from_jwk(stripped.replace('\\"', '"'))
    elif stripped.startswith("-----BEGIN"):
        pem = stripped.replace("\\n", "\n").encode("ascii", "replace")
        try:
            loaded = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as err:
            raise AccountKeyError("is not a readable unencrypted PEM private key") from err
        if not isinstance(loaded, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise AccountKeyError("must be an EC (P-256, P-384) or RSA key")
        key = loaded
    else:
        raise AccountKeyError("must be a PEM private key or a JWK (certfleet init writes one)")
    _check(key)
    return key


def _check(key: AccountPrivateKey) -> None:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name not in _CURVES:
        raise AccountKeyError("EC keys must be on P-256 or P-384")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < _MIN_RSA_BITS:
        raise AccountKeyError(f"RSA keys must have at least {_MIN_RSA_BITS} bits")


def _from_jwk(text: str) -> AccountPrivateKey:
    try:
        jwk: dict[str, Any] = json.loads(text)
        kty = jwk["kty"]
        if kty == "EC":
            curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[jwk["crv"]]
            d = int.from_bytes(_b64url_decode(jwk["d"]), "big")
            ec_key = ec.derive_private_key(d, curve)
            public = ec_key.public_key().public_numbers()
            if public.x != int.from_bytes(_b64url_decode(jwk["x"]), "big") or public.y != (
                int.from_bytes(_b64url_decode(jwk["y"]), "big")
            ):
                raise AccountKeyError("the JWK's public and private parts do not match")
            return ec_key
        if kty == "RSA":
            ints = {k: int.from_bytes(_b64url_decode(jwk[k]), "big") for k in "n e d p q".split()}
            dmp1 = rsa.rsa_crt_dmp1(ints["d"], ints["p"])
            dmq1 = rsa.rsa_crt_dmq1(ints["d"], ints["q"])
            iqmp = rsa.rsa_crt_iqmp(ints["p"], ints["q"])
            public_numbers = rsa.RSAPublicNumbers(ints["e"], ints["n"])
            numbers = rsa.RSAPrivateNumbers(
                ints["p"], ints["q"], ints["d"], dmp1, dmq1, iqmp, public_numbers
            )
            return numbers.private_key()
    except AccountKeyError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise AccountKeyError("is not a valid private JWK (EC P-256/P-384 or RSA)") from err
    raise AccountKeyError("JWK kty must be EC or RSA")


def public_jwk(key: AccountPrivateKey) -> dict[str, str]:
    """The public JWK members that RFC 7638 hashes (required members only)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        crv, size = _CURVES[key.curve.name]
        numbers = key.public_key().public_numbers()
        return {
            "crv": crv,
            "kty": "EC",
            "x": b64url(numbers.x.to_bytes(size, "big")),
            "y": b64url(numbers.y.to_bytes(size, "big")),
        }
    rsa_numbers = key.public_key().public_numbers()
    return {
        "e": b64url(rsa_numbers.e.to_bytes((rsa_numbers.e.bit_length() + 7) // 8, "big")),
        "kty": "RSA",
        "n": b64url(rsa_numbers.n.to_bytes((rsa_numbers.n.bit_length() + 7) // 8, "big")),
    }


def thumbprint(key: AccountPrivateKey) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url without padding) of the key's public half."""
    return jwk_thumbprint(public_jwk(key))


def jwk_thumbprint(members: dict[str, str]) -> str:
    """RFC 7638 thumbprint of a public JWK's required members."""
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode("ascii")
    return b64url(hashlib.sha256(canonical).digest())


def key_authorization(token: str, key: AccountPrivateKey) -> str:
    """What HTTP-01 serves for ``token``: ``token.thumbprint``."""
    return f"{token}.{thumbprint(key)}"
