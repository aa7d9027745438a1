"""The errors of the APIv3 client.

Every error keeps what the provider said: the HTTP status, the APIv3 error ``code``, its
human ``message`` and the raw ``body`` (as text). Messages name the call ("GET
/orders/example.com") and never contain the API key: the key only ever travels in the
``Authorization`` header, which no error, log line or repr shows.
"""

from __future__ import annotations

from certfleet.errors import CertfleetError


class ApiError(CertfleetError):
    """An APIv3 call failed.

    ``status`` is the HTTP status (None when no answer came back), ``code`` the APIv3
    error code (e.g. ``"not_found"``; empty when the answer had none), ``message`` the
    provider's human text, ``body`` the raw answer text (possibly truncated).
    """

    def __init__(
        self,
        call: str,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        body: str = "",
    ) -> None:
        self.call = call
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        parts = [call]
        if status is not None:
            parts.append(f"HTTP {status}")
        if code:
            parts.append(code)
        super().__init__(f"{': '.join(parts)}: {message}")


class NotFound(ApiError):
    """404: the order (or certificate) does not exist."""


class Conflict(ApiError):
    """409: e.g. ``order_exists`` when creating an order whose name is taken."""


class Unauthorized(ApiError):
    """401 or 403: the API key is missing, wrong, or lacks the permission."""


class RateLimited(ApiError):
    """429 that outlasted the retry budget; ``retry_after`` is the provider's hint, if any."""

    def __init__(
        self,
        call: str,
        message: str,
        *,
        status: int | None = 429,
        code: str = "",
        body: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(call, message, status=status, code=code, body=body)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx that outlasted the retry budget."""


class ApiUnavailable(ApiError):
    """No usable answer within the retry budget: connection refused or dropped, timeouts."""


class MalformedResponse(ApiError):
    """A 2xx answer that is not the JSON the contract describes."""
