"""The ACME provider (RFC 8555): certificates from Let's Encrypt or any ACME CA.

``certfleet.acme.dns`` answers DNS-01 challenges through the sync config's ``dns`` blocks.
"""
