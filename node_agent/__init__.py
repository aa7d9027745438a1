"""certfleet-agent: the pull-only node agent that installs certfleet publications."""

from __future__ import annotations
