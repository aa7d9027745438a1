"""Shared pytest wiring: each plugin module below owns one kind of real local server (and
``cli``, the admin CLI run in a home directory of its own), or holds what several test
modules share (test modules never import each other: tests/unit/test_import_graph.py
checks). Helpers without fixtures are listed too, so that pytest rewrites their asserts.

Each test is marked with its tier, the directory its module lives in (``unit``,
``integration`` or ``system``; see tests/README.md), so that ``-m`` selects a tier too."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "system")

pytest_plugins = [
    "tests.plugins.seaweedfs",
    "tests.plugins.sandbox",
    "tests.plugins.publisher",
    "tests.plugins.faults",
    "tests.plugins.nginx",
    "tests.plugins.nginx_site",  # after nginx and publisher: it builds on both
    "tests.plugins.trickle",
    "tests.plugins.wire",
    "tests.plugins.cli",
    "tests.plugins.pebble",
    "tests.plugins.acme_lab",  # after pebble: it builds on tests.plugins.pebble
    "tests.plugins.http01",  # after pebble: it builds on tests.plugins.pebble
    "tests.plugins.faultproxy",
    "tests.plugins.sync_world",
    "tests.plugins.fake_time",
    "tests.plugins.agent_process",
    "tests.plugins.lambda_app",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.resolve()
        if module.parent.parent == TESTS and module.parent.name in TIERS:
            item.add_marker(getattr(pytest.mark, module.parent.name))
