"""The profile a leaf certificate must have to be installed as a TLS server certificate.

One rule, used twice: the sync refuses to publish a certificate that breaks it
(``certfleet.sync.verifier``), and the agent refuses to install one
(``node_agent.certificate``), so a published head never holds what agents will refuse.
A leaf must not be a CA (BasicConstraints ``CA:TRUE``), and when it carries an extended
key usage, that must include serverAuth. (Its DNS names are checked by both callers
against the order's.)
"""

from __future__ import annotations

from typing import Optional

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID


def leaf_problem(leaf: x509.Certificate) -> Optional[str]:
    """Why ``leaf`` cannot serve as a TLS server certificate, or None when it can.

    A certificate whose extensions cannot be parsed is a problem too (never an exception).
    """
    try:
        extensions = leaf.extensions
    except ValueError:
        return "the leaf certificate's extensions cannot be parsed"
    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        return "the leaf certificate is a CA certificate (BasicConstraints CA:TRUE)"
    try:
        usage = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.SERVER_AUTH not in usage:
        return "the leaf certificate's extended key usage lacks serverAuth"
    return None
