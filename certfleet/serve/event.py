"""The Lambda Function URL's events (payload format 2.0) as ``certfleet.serve.api`` requests.

``lambda/app.py`` wires the HTTP function to :func:`handle_event`; nothing here imports
Chalice. A Function URL gives the raw path, the raw query string, lowercase headers and
the body (base64 when ``isBase64Encoded``); the answer is ``{"statusCode", "headers",
"body", "isBase64Encoded"}``. Bodies over ``api.MAX_BODY`` are refused before parsing.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from certfleet.serve.api import MAX_BODY, HttpApi, Request, Response


def request_from_event(event: Mapping[str, Any]) -> Request | Response:
    """The request in a Function URL event, or the error response for an unusable one."""
    http = event.get("requestContext", {}).get("http", {})
    method = str(http.get("method") or "GET").upper()
    path = str(event.get("rawPath") or http.get("path") or "/")
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    raw = event.get("body") or ""
    if len(raw) > 2 * MAX_BODY:
        return Response.error(413, "request_too_large", f"bodies are limited to {MAX_BODY} bytes")
    try:
        body = base64.b64decode(raw) if event.get("isBase64Encoded") else str(raw).encode("utf-8")
    except (binascii.Error, ValueError):
        return Response.error(400, "invalid_request", "the body is not valid base64")
    if len(body) > MAX_BODY:
        return Response.error(413, "request_too_large", f"bodies are limited to {MAX_BODY} bytes")
    return Request(method, path, str(event.get("rawQueryString") or ""), headers, body)


def response_to_result(response: Response) -> dict[str, Any]:
    """A Function URL result: text bodies as text, anything else base64."""
    headers = dict(response.headers)
    try:
        text = response.body.decode("utf-8")
    except UnicodeDecodeError:
        return {
            "statusCode": response.status,
            "headers": headers,
            "body": base64.b64encode(response.body).decode("ascii"),
            "isBase64Encoded": True,
        }
    return {
        "statusCode": response.status,
        "headers": headers,
        "body": text,
        "isBase64Encoded": False,
    }


def handle_event(api: HttpApi, event: Mapping[str, Any]) -> dict[str, Any]:
    """The Function URL result for ``event``."""
    request = request_from_event(event)
    response = request if isinstance(request, Response) else api.handle(request)
    return response_to_result(response)
