"""A local test double of SSLMate APIv3 with a real (untrusted) test CA.

Run it with ``certfleet sandbox`` or ``python -m certfleet.sandbox``; see docs/sandbox.md.
:func:`main` and :func:`build_parser` are what the admin CLI calls; bulk seeding for
benchmarks is :func:`certfleet.sandbox.state.bulk_create`.
"""

from __future__ import annotations

from certfleet.sandbox.program import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
