"""The sandbox's errors: one APIv3-style answer type, and start-up failures."""

from __future__ import annotations

from certfleet.errors import CertfleetError


class SandboxError(CertfleetError):
    """Base class of the sandbox's errors."""


class ApiError(SandboxError):
    """A request the sandbox refuses; served as ``{"code", "message"}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class SpecRefused(SandboxError):
    """An order given to ``bulk_create`` that the API would refuse too."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"order {name!r}: {reason}")
        self.name = name
        self.reason = reason


class DataDirError(SandboxError):
    """The ``--data`` directory holds something the sandbox cannot read."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"sandbox data {path}: {reason}")
        self.path = path
        self.reason = reason


class ListenError(SandboxError):
    """The sandbox cannot listen on its address (the port is taken, or not allowed)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {reason}")
        self.host = host
        self.port = port
        self.reason = reason
