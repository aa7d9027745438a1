"""The Lambda's code (lambda/app.py and chalicelib) loaded in the test's process.

Fixture ``lambda_app`` (function): lambda/app.py imported afresh, under a module name of its
own, as a new Lambda execution environment would import it; ``lambda/`` is on ``sys.path``
for the test (so ``chalicelib`` imports too), and the root logger's level and formatters,
which app.py sets, are put back afterwards. ``LAMBDA_DIR`` is that directory.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

LAMBDA_DIR = Path(__file__).resolve().parents[2] / "lambda"
_numbers = itertools.count()


@pytest.fixture
def lambda_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    root = logging.getLogger()
    saved = (root.level, [(h, h.formatter) for h in root.handlers])
    monkeypatch.syspath_prepend(str(LAMBDA_DIR))
    name = f"certfleet_lambda_app_{next(_numbers)}"
    spec = importlib.util.spec_from_file_location(name, LAMBDA_DIR / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    root.setLevel(saved[0])
    for handler, formatter in saved[1]:
        handler.setFormatter(formatter)
