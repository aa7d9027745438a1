"""The error of the DNS-01 package: one record, one ``dns`` block, what went wrong."""

from __future__ import annotations

from certfleet.errors import CertfleetError


class DnsError(CertfleetError):
    """A TXT record could not be found, written, confirmed or removed.

    ``record`` is the DNS name (``_acme-challenge.example.com``), ``block`` describes the
    ``dns`` block (``dns "rfc2136" (zones example.com)``) or the lookup that failed, and
    ``reason`` says what happened (``record`` is empty when the block itself is wrong).
    No field ever holds the TSIG secret.
    """

    def __init__(self, record: str, block: str, reason: str) -> None:
        super().__init__(f"{record}: {block}: {reason}" if record else f"{block}: {reason}")
        self.record = record
        self.block = block
        self.reason = reason
