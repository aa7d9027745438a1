"""The APIv3 client: the documented calls plus the modeled ones, over one transport."""

from __future__ import annotations

from certfleet.apiv3.documented import DocumentedCalls
from certfleet.apiv3.modeled import ModeledCalls

PRODUCTION_ENDPOINT = "https://sslmate.com/api/v3"
SANDBOX_ENDPOINT = "https://sandbox.sslmate.com/api/v3"


class ApiClient(DocumentedCalls, ModeledCalls):
    """A client for SSLMate's APIv3 (or certfleet's sandbox, which serves the same contract).

    ``ApiClient(endpoint, api_key, retry=RetryPolicy(...), connect_timeout=..,
    read_timeout=.., session=.., sleep=.., clock=.., rng=..)``; use it as a context
    manager, or call ``close()``. Thread-safety is that of a ``requests.Session``: one
    client per thread.
    """
