"""certfleet: keep TLS certificates and private keys current across a fleet of servers."""

from __future__ import annotations

__version__ = "0.1.0"
