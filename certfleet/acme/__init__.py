"""The ACME provider (RFC 8555): certificates from Let's Encrypt or any ACME CA.

Only the sync uses this package (``certfleet.sync.acme_provider`` adapts it to the engine);
it imports the format, config, store and error modules of certfleet and certbot's ``acme``
package with ``josepy`` (Python >= 3.10): ``client`` (the requests), ``flow`` (one order's
steps), ``state`` (the sealed ACME state), ``retry`` (when to try again), ``errors``.
``certfleet.acme.dns`` answers DNS-01 challenges through the sync config's ``dns`` blocks.
The account key's text form and thumbprint are in ``certfleet.config.accountkey``, so that
``certfleet init`` and ``certfleet acme thumbprint`` need none of these libraries. The node
agent never imports this package.
"""
