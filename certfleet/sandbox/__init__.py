"""The test tooling, one package that production code never imports and the Lambda zip
leaves out: a local test double of SSLMate APIv3 with a real (untrusted) test CA, and
beside it :mod:`certfleet.sandbox.devstack` (starts and stops the local servers for the
demo, the tests and the benchmarks) and :mod:`certfleet.sandbox.tamper` (the store's
adversary, for the hostile-store tests).

Run the APIv3 double with ``certfleet sandbox`` or ``python -m certfleet.sandbox``; see
docs/sandbox.md. :func:`main` and :func:`build_parser` are what the admin CLI calls; bulk
seeding for benchmarks is :func:`certfleet.sandbox.state.bulk_create`.
"""

from __future__ import annotations

from certfleet.sandbox.program import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
