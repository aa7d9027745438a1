"""Shared pytest wiring: each plugin module below owns one kind of real local server (and
``cli``, the admin CLI run in a home directory of its own)."""

from __future__ import annotations

pytest_plugins = [
    "tests.plugins.seaweedfs",
    "tests.plugins.sandbox",
    "tests.plugins.publisher",
    "tests.plugins.faults",
    "tests.plugins.nginx",
    "tests.plugins.trickle",
    "tests.plugins.wire",
    "tests.plugins.cli",
    "tests.plugins.pebble",
    "tests.plugins.acme_lab",  # after pebble: it builds on tests.plugins.pebble
    "tests.plugins.faultproxy",
]
