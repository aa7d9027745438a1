# certfleet — the commands that matter.
#   make demo   the whole system on this machine (SeaweedFS S3, the APIv3 sandbox, a sync, two agents)
#   make demo-acme   the same with the ACME provider: pebble, bind9 (DNS-01), nginx (HTTP-01)
#   make test   lint, types, import boundaries and the test suite (then again under Python 3.9)
#   make test-unit, test-integration, test-system   one tier of the suite (tests/README.md)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The oldest supported Python (3.9). Found on PATH or under pyenv; `make test` skips it when absent,
# and fails instead when CERTFLEET_REQUIRE_BINARIES=1 (set by .ci/run).
PY39 ?= $(shell for p in python3.9 $$HOME/.pyenv/versions/3.9*/bin/python3.9 /root/.pyenv/versions/3.9*/bin/python3.9; do \
	  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info[:2] != (3, 9))' 2>/dev/null && { command -v $$p; break; }; done)
PYTEST_ARGS ?=

.PHONY: help venv lint test test-py311 test-py39 test-unit test-integration test-system demo \
	demo-acme up down package bench clean

help:
	@sed -n '1,6p' Makefile

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

# cfn-lint lives in its own venv: it is heavy and pins its own dependencies.
.venv-lint/.installed:
	@test -x .venv-lint/bin/python || $(PYTHON) -m venv .venv-lint
	.venv-lint/bin/python -m pip install -q --disable-pip-version-check cfn-lint
	@touch $@

lint: venv .venv-lint/.installed
	$(BIN)/ruff check certfleet node_agent tests lambda bench scripts
	$(BIN)/ruff format --check certfleet node_agent tests lambda bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	cd lambda && ../$(BIN)/lint-imports --no-cache
	.venv-lint/bin/cfn-lint template.yaml infra/sam/node-policy.yaml

test-py311: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

.venv39/.installed: pyproject.toml
	@test -x .venv39/bin/python || $(PY39) -m venv .venv39
	.venv39/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

test-py39:
	@if [ -z "$(PY39)" ]; then \
	  if [ "$${CERTFLEET_REQUIRE_BINARIES:-0}" != 0 ]; then echo "FAIL: Python 3.9 not found (required in CI)"; exit 1; fi; \
	  echo "SKIP: Python 3.9 not found; the tests ran under $$($(BIN)/python -V) only"; \
	else \
	  $(MAKE) --no-print-directory .venv39/.installed PY39=$(PY39) && \
	  .venv39/bin/python -m pytest $(PYTEST_ARGS); \
	fi

test: lint test-py311 test-py39

# One tier each (tests/README.md): in process only; one real local server or binary; the
# whole product end to end. `make test` runs all three.
test-unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: venv
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

test-system: venv
	$(BIN)/python -m pytest tests/system $(PYTEST_ARGS)

demo: venv
	$(BIN)/python scripts/demo.py

# Needs the system packages pebble, bind9, nginx and openssl (it says so when they are absent).
demo-acme: venv
	$(BIN)/python scripts/demo_acme.py

up: venv
	$(BIN)/python scripts/stack.py up

down: venv
	$(BIN)/python scripts/stack.py down

# Packages under Python 3.12 (the Lambda's runtime) from its own venv, .venv-package, which
# scripts/package.sh makes from a python3.12 on PATH or under ~/.pyenv/versions/3.12*.
package:
	scripts/package.sh

# The AWS CLI (awscli from PyPI) for the bench's do-it-yourself baseline (bench/bench_peer.py),
# in its own venv: it pins its own botocore. Without it the bench still runs and says the
# peer section was skipped.
.venv-bench/.installed:
	@test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	@if .venv-bench/bin/python -m pip install -q --disable-pip-version-check awscli; then \
	  touch $@; else echo "awscli not installed: make bench skips its peer section"; fi

bench: venv .venv-bench/.installed
	$(BIN)/python bench/run.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
