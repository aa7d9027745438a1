"""The admin CLI's own errors; ``main`` turns every error into a message and an exit code."""

from __future__ import annotations

from certfleet.errors import CertfleetError


class CliError(CertfleetError):
    """A failure the CLI reports as is; ``exit_code`` 1 (runtime) unless a subclass says 2."""

    exit_code = 1


class UsageError(CliError):
    """Bad arguments or input (exit 2): the message names the argument and what is valid."""

    exit_code = 2


class OrderNotFound(CliError):
    """The API has no order of that name (exit 1, an API answer)."""

    def __init__(self, name: str, endpoint: str) -> None:
        self.name = name
        super().__init__(f"no order named {name!r} at {endpoint}")
