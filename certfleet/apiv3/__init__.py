"""Client for SSLMate's APIv3 (and certfleet's sandbox of it).

``documented.py`` holds the calls SSLMate documents; ``modeled.py`` those modeled on its
APIv2 flow (the calls of docs/sandbox.md "Endpoints"); ``transport.py`` the one
``_request`` under both.
"""

from __future__ import annotations

from certfleet.apiv3.client import PRODUCTION_ENDPOINT, SANDBOX_ENDPOINT, ApiClient
from certfleet.apiv3.errors import (
    ApiError,
    ApiUnavailable,
    Conflict,
    MalformedResponse,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
)
from certfleet.apiv3.model import CertResult, CsrResult, Identifier, Order, OrderPage
from certfleet.apiv3.modeled import csr_pubkey_hash
from certfleet.apiv3.transport import USER_AGENT, RetryPolicy

__all__ = [
    "PRODUCTION_ENDPOINT",
    "SANDBOX_ENDPOINT",
    "USER_AGENT",
    "ApiClient",
    "ApiError",
    "ApiUnavailable",
    "CertResult",
    "Conflict",
    "CsrResult",
    "Identifier",
    "MalformedResponse",
    "NotFound",
    "Order",
    "OrderPage",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "Unauthorized",
    "csr_pubkey_hash",
]
