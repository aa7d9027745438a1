"""A store in an S3 bucket (``s3://bucket/prefix``), on AWS or any S3-compatible server.

botocore is imported when a store is opened, never when this module is: an agent reading
a file or https store does not pay for it. The client is botocore's own (boto3 adds nothing
a GET, PUT, LIST or DELETE uses, and importing it costs an agent ~3 MB of memory), and its
S3 model is the one under ``s3model/``: botocore's, cut to the four operations called here.
Credentials come from the standard AWS chain (environment, shared files, instance or task
role). With an explicit endpoint (``store_endpoint``, e.g. SeaweedFS or MinIO) requests use
path-style addressing.
Conditional writes use ``If-None-Match: *`` and ``If-Match: <etag>`` on PutObject; run
``check_conditional_writes`` once against servers that may ignore them.

Bounded like every store: a GET whose ContentLength is over the caller's ``max_bytes`` is
refused (``ObjectTooLarge``) and its connection dropped before the body is read, and the
body is read in chunks that stop at the cap whatever the server announced. botocore's
connect and read timeouts bound each socket operation; ``timeout`` is also the total
deadline of each call (every retry included, plus one second per MiB moved,
``certfleet.deadline``), enforced by running the call in a worker thread, and a
``cancel`` event (the agent's stop request) ends the wait at once.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, TypeVar, cast

from certfleet import __version__
from certfleet.deadline import Deadline, DeadlineExceeded, run_within
from certfleet.store.contract import StoredObject, StoreStats, check_key, check_prefix, read_capped
from certfleet.store.errors import (
    ObjectNotFound,
    ObjectTooLarge,
    PreconditionFailed,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

# botocore's S3 model, cut to the operations this store calls (scripts/trim_s3_model.py): the
# whole one, parsed, costs an agent ~3.4 MB of memory. botocore loads a model from the first
# directory of its search path that holds the API version it asks for.
_MODEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "s3model")

T = TypeVar("T")

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

# Error codes S3 (and compatible servers) use for refused credentials or permissions.
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
}
# A conditional write lost; AWS answers 409 when two conditional writes race.
_LOST = {"PreconditionFailed", "ConditionalRequestConflict"}
_TRANSIENT = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}


def valid_bucket(name: str) -> bool:
    """True when ``name`` is a syntactically valid S3 bucket name."""
    return bool(_BUCKET.fullmatch(name)) and ".." not in name


class S3Store:
    """The ``Store`` contract on ``bucket``, under ``prefix`` (no leading or trailing '/')."""

    readonly = False

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        timeout: float = 30.0,
        max_attempts: int = 4,
        page_size: int = 1000,
        cancel: threading.Event | None = None,
    ) -> None:
        import botocore.session
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        if not valid_bucket(bucket):
            raise ValueError(f"invalid S3 bucket name {bucket!r}")
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.page_size = page_size
        self.timeout = timeout
        self.cancel = cancel
        self.url = f"s3://{bucket}/{self.prefix}"
        self.stats = StoreStats()
        self._via = f" (endpoint {endpoint})" if endpoint else ""
        self._errors = (ClientError, BotoCoreError)
        config = Config(
            connect_timeout=min(timeout, 5.0),
            read_timeout=min(timeout, 10.0),
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint else {},
            # A short User-Agent and no optional checksum headers: an idle poll is one small
            # conditional GET, and these would add ~200 bytes to each request.
            user_agent=f"certfleet/{__version__}",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = botocore.session.get_session()
        if os.path.isdir(_MODEL_DIR):  # the S3 model cut to what this store calls
            session.get_component("data_loader").search_paths.insert(0, _MODEL_DIR)
        self._client: S3Client = cast(
            "S3Client",
            session.create_client(
                "s3",
                endpoint_url=endpoint,
                region_name=session.get_config_variable("region") or "us-east-1",
                config=config,
            ),
        )

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint={self.endpoint!r})"

    def get(self, key: str, *, max_bytes: int) -> StoredObject:
        try:
            return self._get(key, max_bytes, None)
        except self._errors as err:
            raise self._translate(err, key) from err

    def get_if_changed(self, key: str, *, max_bytes: int, etag: str) -> StoredObject | None:
        try:
            return self._get(key, max_bytes, etag)
        except self._errors as err:
            if _code(err) in ("304", "NotModified"):
                return None
            raise self._translate(err, key) from err

    def _get(self, key: str, max_bytes: int, if_none_match: str | None) -> StoredObject:
        """The object; botocore's errors propagate (a 304 is one)."""
        name = self._name(key)
        deadline = Deadline(self.timeout, self.cancel)

        def call() -> StoredObject:
            if if_none_match is None:
                answer = self._client.get_object(Bucket=self.bucket, Key=name)
            else:
                answer = self._client.get_object(
                    Bucket=self.bucket, Key=name, IfNoneMatch=if_none_match
                )
            body = answer["Body"]
            try:
                size = answer.get("ContentLength")
                if isinstance(size, int) and size > max_bytes:
                    raise ObjectTooLarge(
                        key, url=self.url, max_bytes=max_bytes, size=size, etag=answer["ETag"]
                    )
                data = _read_capped(body, key, self.url, max_bytes, deadline)
            finally:
                body.close()  # unread bytes: the connection is dropped, not drained
            return StoredObject(data=data, etag=answer["ETag"])

        try:
            stored = self._within(deadline, key, call)
        except self._errors:
            self.stats.count("reads")
            raise
        self.stats.count("reads", bytes_in=len(stored.data))
        return stored

    def put(self, key: str, data: bytes) -> str:
        return self._put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> str:
        return self._put(key, data, if_none_match="*")

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        return self._put(key, data, if_match=etag)

    def list(self, prefix: str) -> Iterator[str]:
        check_prefix(prefix, url=self.url)
        self.stats.count("lists", requests=0)
        return (key for key, _ in self._pages(prefix))

    def list_etags(self, prefix: str) -> Iterator[tuple[str, str]]:
        check_prefix(prefix, url=self.url)
        self.stats.count("lists", requests=0)
        return self._pages(prefix)

    def delete(self, key: str) -> None:
        name = self._name(key)
        self.stats.count("deletes")
        try:
            self._within(
                Deadline(self.timeout, self.cancel),
                key,
                lambda: self._client.delete_object(Bucket=self.bucket, Key=name),
            )
        except self._errors as err:
            if _code(err) in ("NoSuchKey", "404"):
                return
            raise self._translate(err, key) from err

    # -- internals ---------------------------------------------------------------------

    def _put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: str | None = None,
        if_match: str | None = None,
    ) -> str:
        name = self._name(key)
        self.stats.count("writes", bytes_out=len(data))
        client, bucket = self._client, self.bucket

        def call() -> Any:
            if if_none_match is not None:
                return client.put_object(
                    Bucket=bucket, Key=name, Body=data, IfNoneMatch=if_none_match
                )
            if if_match is not None:
                return client.put_object(Bucket=bucket, Key=name, Body=data, IfMatch=if_match)
            return client.put_object(Bucket=bucket, Key=name, Body=data)

        deadline = Deadline(self.timeout, self.cancel)
        deadline.credit(len(data))
        try:
            answer = self._within(deadline, key, call)
        except self._errors as err:
            if if_match is not None and _code(err) in ("NoSuchKey", "404"):
                raise PreconditionFailed(
                    key, url=self.url, detail="the object does not exist"
                ) from err
            raise self._translate(err, key) from err
        return answer["ETag"]

    def _pages(self, prefix: str) -> Iterator[tuple[str, str]]:
        """Every (key, ETag) starting with ``prefix``, keys relative to the store root."""
        root = self._root()
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=root + prefix, PaginationConfig={"PageSize": self.page_size}
        )
        iterator = iter(pages)
        try:
            while True:
                page = self._within(
                    Deadline(self.timeout, self.cancel),
                    prefix or None,
                    lambda: next(iterator, None),
                )
                if page is None:
                    return
                self.stats.count("")
                for entry in page.get("Contents", []):
                    yield entry["Key"][len(root) :], entry.get("ETag", "")
        except self._errors as err:
            raise self._translate(err, prefix or None) from err

    def _within(self, deadline: Deadline, key: str | None, call: Callable[[], T]) -> T:
        """``call()`` under ``deadline``; ``StoreUnavailable`` when it runs out or is cancelled."""
        try:
            return run_within(deadline, call)
        except DeadlineExceeded as err:
            raise StoreUnavailable(f"{err.reason}{self._via}", url=self.url, key=key) from None

    def _root(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def _name(self, key: str) -> str:
        return self._root() + check_key(key, url=self.url)

    def _translate(self, err: Exception, key: str | None) -> StoreError:
        """The store error for a boto3/botocore exception."""
        from botocore import exceptions as boto

        if isinstance(err, boto.ClientError):
            code = _code(err)
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            message = err.response.get("Error", {}).get("Message", "") or code
            detail = f"{code}: {message}{self._via}"
            if code in ("NoSuchKey", "404"):
                return ObjectNotFound(key or "", url=self.url)
            if code in _LOST or status == 412:
                return PreconditionFailed(key or "", url=self.url, detail=detail)
            if code in _DENIED or status in (401, 403):
                return StoreAccessDenied(detail, url=self.url, key=key)
            if code in _TRANSIENT or status >= 500:
                return StoreUnavailable(detail, url=self.url, key=key)
            if code == "NoSuchBucket":
                return StoreError(
                    f"bucket {self.bucket!r} of {self.url} does not exist{self._via}",
                    url=self.url,
                    key=key,
                )
            return StoreError(f"{self.url}: {key!r}: {detail}", url=self.url, key=key)
        if isinstance(err, (boto.NoCredentialsError, boto.PartialCredentialsError)):
            return StoreAccessDenied(
                "no usable AWS credentials in the standard chain (environment, shared "
                f"credentials file, instance or task role){self._via}",
                url=self.url,
                key=key,
            )
        if isinstance(
            err,
            (
                boto.ConnectionError,
                boto.HTTPClientError,
                boto.ResponseStreamingError,
                boto.IncompleteReadError,
            ),
        ):
            return StoreUnavailable(str(err), url=self.url, key=key)
        return StoreError(f"{self.url}: {key!r}: {err}{self._via}", url=self.url, key=key)


def _read_capped(body: Any, key: str, url: str, max_bytes: int, deadline: Deadline) -> bytes:
    """A streaming body read in chunks: ``ObjectTooLarge`` past ``max_bytes``, and given up
    (``DeadlineExceeded``) once the caller stopped waiting."""

    def received(nbytes: int) -> None:
        deadline.credit(nbytes)
        deadline.check()

    return read_capped(body.read, key, url=url, max_bytes=max_bytes, received=received)


def _code(err: Exception) -> str:
    response = getattr(err, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))
