"""The one place where APIv3 requests are sent: auth, User-Agent, JSON, timeouts, retries
and the mapping of failed answers to typed errors (the ``do()`` of go-acme/lego clients).

Retry rules:

* 429, 5xx, connection errors, timeouts and truncated or invalid JSON in a 2xx answer are
  retried with exponential backoff and full jitter (a random delay between 0 and
  ``min(max_delay, base_delay * 2**(attempt-1))``), never sooner than the answer's
  ``Retry-After``; bounded both by ``max_attempts`` and by ``max_seconds`` of total time
  (a retry whose wait would end past the budget is not made). The delays and the
  ``Retry-After`` parser are the project's one retry rule (``certfleet.retry``).
* A call that is not safe to repeat (a POST, a DELETE) passes ``recover``. After an
  *ambiguous* failure (the request may have taken effect: connection dropped, 5xx,
  truncated answer) the transport asks ``recover`` before sending again; ``recover``
  reads the state back and returns the reply that stands for the call's effect, or None
  when the call did not take effect. A 404/409 that follows an ambiguous attempt is
  checked with ``recover`` too (our own earlier attempt may be what it reports).
* Other 4xx answers are final.

The provider is not trusted with the sync's memory or time: an answer's body is read as a
stream and refused past ``MAX_ANSWER`` bytes (from its Content-Length, or as it arrives:
``MalformedResponse``, final), and each attempt has a total deadline (what is left of the
call's ``max_seconds``), not only connect and per-read timeouts, so a server that trickles
bytes is given up on (``ApiUnavailable``, retried like a timeout) instead of holding a run
until the Lambda's own timeout (``certfleet.deadline``); the abandoned attempt's socket is
shut down (``certfleet.httpadapter``), so its thread does not read on.

The API key lives in one private attribute and only ever goes into the Authorization
header: no repr, log line or error shows it.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import quote, urlsplit

import requests

from certfleet import __version__
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
from certfleet.deadline import Deadline, DeadlineExceeded, run_within
from certfleet.httpadapter import TrackedAdapter
from certfleet.retry import exponential, full_jitter, parse_retry_after

log = logging.getLogger(__name__)

USER_AGENT = f"certfleet/{__version__}"
BODY_KEPT = 4096
# The largest answer body read: a page of orders or a certificate with its chain is far
# smaller; anything larger is a broken or hostile server.
MAX_ANSWER = 16 * 1024 * 1024
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a call tries: attempts and total seconds (both bound it), backoff shape."""

    max_attempts: int = 6
    max_seconds: float = 60.0
    base_delay: float = 0.5
    max_delay: float = 20.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_seconds <= 0:
            raise ValueError("max_attempts must be >= 1 and max_seconds > 0")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")


@dataclass(frozen=True)
class Reply:
    """A successful answer: its status and its decoded JSON (None for 204)."""

    status: int
    data: Any


Recover = Callable[[float], Optional[Reply]]
"""Reads the state back after an ambiguous failure; gets the call's deadline (clock time)."""


class _Retry(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, error: ApiError, *, ambiguous: bool, retry_after: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.ambiguous = ambiguous
        self.retry_after = retry_after


class Transport:
    """Sends APIv3 requests; the documented and modeled calls are built on ``_request``."""

    def __init__(
        self,
        endpoint: str,
        api_key: str,
        *,
        retry: RetryPolicy | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"API endpoint must be an http(s) URL, got {endpoint!r}")
        if not api_key:
            raise ValueError("API key is empty")
        self.endpoint = endpoint.rstrip("/")
        self.__api_key = api_key
        self.retry = retry or RetryPolicy()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._session = session or _session()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self.endpoint!r}, api_key=<redacted>)"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        read_timeout: float | None = None,
        recover: Recover | None = None,
        deadline: float | None = None,
    ) -> Reply:
        """Send one call with retries; return its 2xx reply or raise an ``ApiError``."""
        call = f"{method} {path}"
        start = self._clock()
        if deadline is None:
            deadline = start + self.retry.max_seconds
        ambiguous = False
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._send(method, path, call, params, body, read_timeout, deadline)
            except (NotFound, Conflict) as err:
                if ambiguous and recover is not None:
                    recovered = recover(deadline)
                    if recovered is not None:
                        log.info("%s: %s answered after a lost attempt took effect", call, err.code)
                        return recovered
                raise
            except _Retry as failure:
                delay = self._backoff(attempt, failure.retry_after)
                if attempt >= self.retry.max_attempts or self._clock() + delay > deadline:
                    log.warning("%s failed after %d attempt(s): %s", call, attempt, failure.error)
                    raise failure.error from failure.__cause__
                if failure.ambiguous and recover is not None:
                    ambiguous = True
                    recovered = recover(deadline)
                    if recovered is not None:
                        log.info("%s took effect although its answer was lost", call)
                        return recovered
                    delay = max(0.0, min(delay, deadline - self._clock()))
                log.info(
                    "%s failed (%s); attempt %d of %d, retrying in %.2fs",
                    call,
                    failure.error,
                    attempt,
                    self.retry.max_attempts,
                    delay,
                )
                self._sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = exponential(attempt, first=self.retry.base_delay, cap=self.retry.max_delay)
        delay = full_jitter(cap, self._rng.random())
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def _send(
        self,
        method: str,
        path: str,
        call: str,
        params: dict[str, str] | None,
        body: Any,
        read_timeout: float | None,
        deadline: float,
    ) -> Reply:
        remaining = max(deadline - self._clock(), 0.1)
        headers = {
            "Authorization": f"Bearer {self.__api_key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }

        def exchange() -> tuple[requests.Response, bytes]:
            response = self._session.request(
                method,
                self.endpoint + path,
                params=params,
                json=body,
                headers=headers,
                timeout=(
                    min(self.connect_timeout, remaining),
                    min(read_timeout or self.read_timeout, remaining),
                ),
                allow_redirects=False,
                stream=True,
            )
            with response:
                return response, _capped_body(response, call)

        try:
            # At least a second: a call whose budget is nearly spent still gets one answer.
            response, content = run_within(Deadline(max(remaining, 1.0)), exchange)
        except DeadlineExceeded as err:
            raise _Retry(
                ApiUnavailable(call, f"no complete answer from the API: {err.reason}"),
                ambiguous=True,
                retry_after=None,
            ) from None
        except requests.Timeout as err:
            raise _Retry(
                ApiUnavailable(call, "timed out waiting for the API"),
                ambiguous=True,
                retry_after=None,
            ) from err
        except requests.RequestException as err:
            raise _Retry(
                ApiUnavailable(call, f"connection failed ({type(err).__name__})"),
                ambiguous=True,
                retry_after=None,
            ) from err
        if 200 <= response.status_code < 300:
            return self._success(response, content, call)
        raise self._failure(response, content, call)

    def _success(self, response: requests.Response, content: bytes, call: str) -> Reply:
        if response.status_code == 204:
            return Reply(204, None)
        try:
            data = json.loads(content)
        except ValueError as err:
            raise _Retry(
                MalformedResponse(
                    call,
                    "answer is not valid JSON (truncated?)",
                    status=response.status_code,
                    body=_text(content),
                ),
                ambiguous=True,
                retry_after=None,
            ) from err
        return Reply(response.status_code, data)

    def _failure(self, response: requests.Response, content: bytes, call: str) -> Exception:
        status = response.status_code
        text = _text(content)
        code, message, body_retry_after = _error_fields(content)
        message = message or response.reason or "request failed"
        if status == 429:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            if retry_after is None:
                retry_after = body_retry_after
            limited = RateLimited(
                call, message, code=code, body=text, status=status, retry_after=retry_after
            )
            return _Retry(limited, ambiguous=False, retry_after=retry_after)
        if status >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            error = ServerError(call, message, status=status, code=code, body=text)
            return _Retry(error, ambiguous=True, retry_after=retry_after)
        kind: type[ApiError] = {
            401: Unauthorized,
            403: Unauthorized,
            404: NotFound,
            409: Conflict,
        }.get(status, ApiError)
        return kind(call, message, status=status, code=code, body=text)


def quote_segment(value: str) -> str:
    """One path segment (an order name, a pubkey hash), percent-encoded; ``*`` kept as is."""
    return quote(value, safe="*")


def _session() -> requests.Session:
    """A session whose connections an abandoned attempt can have shut down."""
    session = requests.Session()
    adapter = TrackedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _capped_body(response: requests.Response, call: str) -> bytes:
    """The answer's (decoded) body; ``MalformedResponse`` past ``MAX_ANSWER`` bytes."""
    length = response.headers.get("Content-Length", "").strip()
    if length.isdigit() and int(length) > MAX_ANSWER:
        raise MalformedResponse(
            call, f"answer of {length} bytes refused (at most {MAX_ANSWER})",
            status=response.status_code,
        )  # fmt: skip
    chunks: list[bytes] = []
    received = 0
    for chunk in response.iter_content(_CHUNK):
        received += len(chunk)
        if received > MAX_ANSWER:
            raise MalformedResponse(
                call, f"answer refused: more than {MAX_ANSWER} bytes",
                status=response.status_code,
            )  # fmt: skip
        chunks.append(chunk)
    return b"".join(chunks)


def _text(content: bytes) -> str:
    """The start of a body, as kept in an error (``body``)."""
    return content[:BODY_KEPT].decode("utf-8", errors="replace")


def _error_fields(content: bytes) -> tuple[str, str, float | None]:
    """The APIv3 error object's ``code`` and ``message`` (and APIv2-style ``retry_after``)."""
    try:
        data = json.loads(content)
    except ValueError:
        return "", "", None
    if not isinstance(data, dict):
        return "", "", None
    code = data.get("code")
    message = data.get("message")
    retry_after = data.get("retry_after")
    return (
        code if isinstance(code, str) else "",
        message if isinstance(message, str) else "",
        float(retry_after)
        if isinstance(retry_after, (int, float)) and not isinstance(retry_after, bool)
        else None,
    )


def _retry_after(header: str | None) -> float | None:
    """``Retry-After`` as seconds from now (``certfleet.retry.parse_retry_after``)."""
    return parse_retry_after(header, time.time())
