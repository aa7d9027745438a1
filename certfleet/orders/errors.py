"""The one error of order parsing: a refusal with the HTTP status and API ``code`` to serve."""

from __future__ import annotations

from certfleet.errors import CertfleetError


class OrderRequestError(CertfleetError):
    """A request body the order API refuses; served as ``{"code", "message"}`` with ``status``.

    ``message`` shows untrusted names repr-escaped and shortened (``certfleet.bundle.names``).
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
