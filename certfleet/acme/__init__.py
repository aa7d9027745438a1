"""The ACME provider's protocol side (RFC 8555): account key, client, order flow, state.

Only the sync uses this package; it imports the format, config, store and error modules
of certfleet and, in ``client`` and ``flow``, certbot's ``acme`` package with ``josepy``
(Python >= 3.10). ``accountkey`` needs neither, so ``certfleet init`` and ``certfleet acme
thumbprint`` work wherever certfleet does. The node agent never imports this package.
"""
