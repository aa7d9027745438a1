"""The ACME client's HTTP session: every answer read to a byte cap, within a total deadline.

certbot's ``acme`` reads each answer whole, and ``requests`` bounds each socket read only.
``CappedSession``, given to its ``ClientNetwork``, streams each answer instead and

- refuses one over its cap, from its Content-Length or as it streams in, and drops the
  connection: ``MAX_JSON`` for the JSON documents (directory, account, order,
  authorization, challenge, renewal information, problem documents), ``MAX_CHAIN`` for a
  certificate chain (``request(..., max_bytes=MAX_CHAIN)``);
- ends a request that outlives its total deadline (``REQUEST_DEADLINE`` seconds, plus one
  second per MiB received, ``certfleet.deadline``) by shutting its socket down, so a CA
  that trickles bytes holds a sync no longer than that;
- follows no redirect (ACME uses none, and ``requests`` would read a redirect's body
  whole).

Either way it raises ``AcmeAnswerRefused``, naming the URL (escaped) and the cap or the
deadline; the client reports it as the failure of the operation that sent the request.
"""

from __future__ import annotations

from typing import Any

import requests

from certfleet.acme.errors import AcmeAnswerRefused
from certfleet.deadline import Abandoned, Deadline, InFlight, tracking, watch
from certfleet.httpadapter import TrackedAdapter

MAX_JSON = 1024 * 1024  # the largest JSON document: an order of many names is ~100 KB
MAX_CHAIN = 256 * 1024  # a leaf and a few intermediates are ~10 KB of PEM
REQUEST_DEADLINE = 60.0
_CHUNK = 64 * 1024


class CappedSession(requests.Session):
    """A ``requests.Session`` whose every answer is capped and bounded in time."""

    def __init__(self, deadline: float = REQUEST_DEADLINE) -> None:
        super().__init__()
        self.deadline = deadline
        adapter = TrackedAdapter()
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def request(  # type: ignore[override]
        self, method: str, url: str, *args: Any, max_bytes: int = MAX_JSON, **kwargs: Any
    ) -> requests.Response:
        """The answer, its body read (at most ``max_bytes``); ``AcmeAnswerRefused`` when
        it is larger or incomplete at the deadline."""
        kwargs["stream"] = True
        # ACME uses no redirects, and requests would read a redirect's body whole.
        kwargs["allow_redirects"] = False
        deadline = Deadline(self.deadline)
        inflight = InFlight()
        try:
            with tracking(inflight), watch(deadline, inflight.abort):
                response = super().request(method, url, *args, **kwargs)
                try:
                    body = _read(response, url, max_bytes, deadline)
                finally:
                    response.close()  # all read (back to the pool), or dropped unread
        except AcmeAnswerRefused:
            raise
        except (Exception, Abandoned):
            if not inflight.aborted:
                raise
        if inflight.aborted:  # a shut socket can also look like an answer that ended early
            raise AcmeAnswerRefused(
                "request",
                url,
                f"no complete answer within the {self.deadline:g} s deadline",
            )
        # requests' own buffer: what ``content``, ``text`` and ``json()`` read.
        response._content = body
        return response


def _read(response: requests.Response, url: str, cap: int, deadline: Deadline) -> bytes:
    announced = response.headers.get("Content-Length", "")
    if announced.isdigit() and int(announced) > cap:
        raise AcmeAnswerRefused("request", url, f"{announced} bytes, over the cap of {cap}")
    chunks: list[bytes] = []
    received = 0
    for chunk in response.iter_content(_CHUNK):
        received += len(chunk)
        if received > cap:
            raise AcmeAnswerRefused("request", url, f"more bytes than the cap of {cap}")
        deadline.credit(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)
