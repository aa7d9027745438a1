"""What the s3 store adds to botocore's HTTP layer: calls that can be ended, answers read
to a cap.

- Every connection of the client is a ``certfleet.deadline.TrackedConnection``: when a
  call outlives its deadline (``run_within``), its sockets are shut down and its worker
  thread ends within about a second, instead of reading on from a server that trickles.
- Every answer botocore would read whole is read here first, in chunks, before botocore
  sees it: a ListObjectsV2 page up to ``page_cap(page_size)`` bytes, any other answer
  (a PUT's, a DELETE's, an error document) up to ``ANSWER_CAP``; past it (from its
  Content-Length or as it streams in) ``AnswerTooLarge`` is raised and the connection
  dropped, so a hostile or broken server cannot make botocore buffer and parse a body of
  any size. A GetObject body (2xx) is left streaming: the store reads it to its own cap.

botocore offers no public way to choose its connection classes: ``install`` swaps them in
the client's HTTP session (``client._endpoint.http_session``), and fails loudly if a
botocore release moves them (the tests in ``tests/integration/test_hostile_s3.py`` pin both).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

from botocore.awsrequest import (
    AWSHTTPConnection,
    AWSHTTPConnectionPool,
    AWSHTTPSConnection,
    AWSHTTPSConnectionPool,
    AWSPreparedRequest,
    AWSResponse,
)

from certfleet.deadline import TrackedConnection

_CHUNK = 64 * 1024
# A ListObjectsV2 entry is its key (at most 1024 bytes) and ~300 bytes of ETag, size, date
# and markup; 2 KiB each, plus the envelope, leaves room for any honest page.
_BYTES_PER_KEY = 2048
_PAGE_BASE = 64 * 1024
ANSWER_CAP = 64 * 1024  # an error document or a PUT's answer: a few hundred bytes


def page_cap(page_size: int) -> int:
    """The most bytes a LIST page of ``page_size`` keys may take."""
    return _PAGE_BASE + page_size * _BYTES_PER_KEY


class AnswerTooLarge(Exception):
    """An answer over ``cap`` bytes (``size`` when the server announced it). The store
    turns it into a ``StoreError`` naming the key, or a ``ListingTooLarge`` naming the
    prefix. Not a botocore error: botocore does not retry it."""

    def __init__(self, cap: int, size: int | None = None) -> None:
        super().__init__(f"an answer over {cap} bytes")
        self.cap = cap
        self.size = size


# The ignores: botocore-stubs see botocore's own two bases of these classes disagree.
class _Connection(TrackedConnection, AWSHTTPConnection):  # type: ignore[misc]
    """botocore's plain HTTP connection, tracked."""


class _HttpsConnection(TrackedConnection, AWSHTTPSConnection):  # type: ignore[misc]
    """botocore's HTTPS connection, tracked."""


class _Pool(AWSHTTPConnectionPool):
    ConnectionCls = _Connection


class _HttpsPool(AWSHTTPSConnectionPool):
    ConnectionCls = _HttpsConnection


class _Read:
    """A body already read, in the shape botocore reads one (``stream()``)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        yield self._data


def install(client: Any, page_size: int) -> None:
    """Track every connection of ``client`` and cap its answers (see the module)."""
    session = client._endpoint.http_session
    pools = session._pool_classes_by_scheme  # shared with every pool manager it makes
    if set(pools) != {"http", "https"}:
        raise RuntimeError("this botocore keeps its connection pools elsewhere")
    pools.update(http=_Pool, https=_HttpsPool)
    client.meta.events.register("before-send.s3", partial(_send_capped, session, page_size))


def _send_capped(
    session: Any, page_size: int, request: AWSPreparedRequest, event_name: str = "", **_: Any
) -> AWSResponse:
    """Send ``request`` through botocore's session; the answer read here up to its cap,
    unless it is a streaming body (2xx) the caller reads itself."""
    streaming = request.stream_output
    cap = page_cap(page_size) if event_name.endswith(".ListObjectsV2") else ANSWER_CAP
    request.stream_output = True  # the session hands the body over unread
    response = session.send(request)
    if streaming and response.status_code < 300:
        return response
    raw = response.raw
    try:
        announced = response.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > cap:
            raise AnswerTooLarge(cap, int(announced))
        chunks: list[bytes] = []
        received = 0
        for chunk in raw.stream(_CHUNK, decode_content=False):
            received += len(chunk)
            if received > cap:
                raise AnswerTooLarge(cap)
            chunks.append(chunk)
    except BaseException:
        raw.close()  # the rest is not drained: the connection is dropped
        raise
    return AWSResponse(request.url, response.status_code, raw.headers, _Read(b"".join(chunks)))
