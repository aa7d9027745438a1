"""The order API and the HTTP-01 approval route (``certfleet serve``, the Lambda's HTTP
function): one request→response core (``api``), served by the stdlib (``server``) and by
a Lambda Function URL (``event``). docs/api.md is the user's reference.
"""

from __future__ import annotations

from certfleet.serve.api import MAX_BODY, HttpApi, Request, Response
from certfleet.serve.server import ApiServer, ServeError
from certfleet.serve.settings import build_api, load_settings, parse_settings

__all__ = [
    "MAX_BODY",
    "ApiServer",
    "HttpApi",
    "Request",
    "Response",
    "ServeError",
    "build_api",
    "load_settings",
    "parse_settings",
]
