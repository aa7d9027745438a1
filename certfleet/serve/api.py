"""The HTTP routes of ``certfleet serve`` and the Lambda's Function URL, minus HTTP.

One request in (:class:`Request`), one response out (:class:`Response`): the stdlib
server (``certfleet.serve.server``) and the Lambda adapter (``certfleet.serve.event``)
only translate. Routes (docs/api.md):

- ``GET /.well-known/acme-challenge/{token}``: ``token.<thumbprint>`` as text/plain, for
  any well-formed token (base64url); no key needed. This is the stateless HTTP-01 answer.
- ``POST /api/v3/orders``, ``GET /api/v3/orders[?cluster=&limit=&after=]``,
  ``GET|PATCH|DELETE /api/v3/orders/{name}``: the order API over the registry, the
  same bodies, answers, errors (``{"code", "message"}``) and pages as the sandbox's,
  behind an API key (Bearer, or Basic with an empty password). A key limited to some
  clusters sees the others' orders as missing (404) and their names as unknown (400).

Abuse limits: bodies over :data:`MAX_BODY` bytes are refused (413), an order has at most
100 names, each key has a token bucket (429 + Retry-After), and every registry write is
conditional. The key itself is never logged: log lines name the key's configured name.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

from certfleet.bundle import validate_cluster_name
from certfleet.bundle.errors import UnsafeNameError
from certfleet.config.serve import ApiKeyEntry
from certfleet.orders import OrderRequestError, order_answer, parse_change, parse_create
from certfleet.orders.page import one_page, page_after, page_limit
from certfleet.registry import (
    OrderExists,
    OrderRegistry,
    RegistryContended,
    RegistryError,
    RegistryNotFound,
    RegistryOrder,
    UnknownCluster,
)
from certfleet.serve.apikey import KeyRing, presented_key
from certfleet.serve.ratelimit import RateLimiter
from certfleet.store import StoreError, StoreUnavailable

_log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
API_PREFIX = "/api/v3/orders"
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
# The registry knows what is ordered, not what is issued: the sync's run summary and the
# node agents' status say that.
REGISTERED = "registered"


@dataclass(frozen=True)
class Request:
    """An HTTP request: ``path`` as sent (percent-encoded), ``query`` without ``?``,
    ``headers`` with lowercase names."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    """An HTTP response; ``headers`` include Content-Type when there is a body."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(
        cls, status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()
    ) -> Response:
        data = json.dumps(payload).encode()
        return cls(status, data, (("Content-Type", "application/json"), *headers))

    @classmethod
    def error(
        cls, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> Response:
        return cls.json(status, {"code": code, "message": message}, headers)

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, text.encode("utf-8"), (("Content-Type", "text/plain"),))


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _refuse(status: int, code: str, message: str, *headers: tuple[str, str]) -> _Refused:
    return _Refused(Response.error(status, code, message, headers))


class HttpApi:
    """The routes over ``registry`` (None: no cluster in ACME mode, no order API)."""

    def __init__(
        self,
        *,
        registry: OrderRegistry | None,
        keys: Sequence[ApiKeyEntry],
        thumbprint: str | None,
        limiter: RateLimiter | None = None,
        on_change: Callable[[], object] | None = None,
    ) -> None:
        self._registry = registry
        self._keys = KeyRing(keys)
        self._thumbprint = thumbprint
        self._limiter = RateLimiter() if limiter is None else limiter
        self._on_change = on_change

    def set_on_change(self, on_change: Callable[[], object] | None) -> None:
        """Call ``on_change`` after every order created, changed or removed (e.g. to start
        the sync at once); its failures are its own business."""
        self._on_change = on_change

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def handle(self, request: Request) -> Response:
        """The response to ``request``; never raises."""
        try:
            return self._route(request)
        except _Refused as refused:
            return refused.response
        except OrderRequestError as err:
            return Response.error(err.status, err.code, err.message)
        except Exception:  # noqa: BLE001 - any bug becomes a 500, logged without the request
            _log.exception("order API: %s %r failed", request.method, request.path[:200])
            return Response.error(500, "internal_error", "internal error")

    # -- routing ------------------------------------------------------------------------

    def _route(self, request: Request) -> Response:
        path = request.path
        if path.startswith(CHALLENGE_PREFIX):
            return self._challenge(request, path[len(CHALLENGE_PREFIX) :])
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            return self._orders(request)
        raise _refuse(404, "not_found", "no such endpoint")

    def _challenge(self, request: Request, token: str) -> Response:
        if request.method not in ("GET", "HEAD"):
            raise _refuse(405, "method_not_allowed", "GET only")
        if self._thumbprint is None or not TOKEN.fullmatch(token):
            return Response.text(404, "not found\n")
        answer = Response.text(200, f"{token}.{self._thumbprint}")
        return Response(200, b"", answer.headers) if request.method == "HEAD" else answer

    def _orders(self, request: Request) -> Response:
        key = self._authenticate(request)
        registry = self._registry
        if registry is None:
            raise _refuse(404, "not_found", "no cluster here keeps its orders in the registry")
        rest = request.path[len(API_PREFIX) :]
        if rest in ("", "/"):
            if request.method == "GET":
                return self._list(registry, key, parse_qs(request.query, keep_blank_values=True))
            if request.method == "POST":
                return self._create(registry, key, _json(request.body))
        else:
            name = unquote(rest[1:])
            if "/" in name or not name:
                raise _refuse(404, "not_found", "no such endpoint")
            if request.method == "GET":
                return self._answer(200, self._visible(registry, key, name))
            if request.method == "PATCH":
                return self._patch(registry, key, name, _json(request.body))
            if request.method == "DELETE":
                self._visible(registry, key, name)
                with _registry_errors():
                    registry.delete(name)
                _log.info("order API: key %s removed order %r", key.name, name[:253])
                self._changed()
                return Response(204)
        raise _refuse(405, "method_not_allowed", f"{request.method} is not allowed here")

    # -- the order calls ----------------------------------------------------------------

    def _create(self, registry: OrderRegistry, key: ApiKeyEntry, body: object) -> Response:
        wanted = parse_create(body)
        self._cluster(registry, key, wanted.cluster)
        with _registry_errors():
            order = registry.create(wanted.cluster, wanted.identifiers, wanted.name)
        _log.info("order API: key %s created order %r", key.name, order.name)
        self._changed()
        return self._answer(201, order)

    def _list(
        self, registry: OrderRegistry, key: ApiKeyEntry, query: Mapping[str, list[str]]
    ) -> Response:
        cluster = query.get("cluster", [None])[-1]
        limit, after = page_limit(query), page_after(query)
        if cluster is not None:
            clusters: Sequence[str] = (self._cluster(registry, key, cluster),)
        else:
            clusters = [c for c in registry.clusters if key.allows(c)]
        with _registry_errors():
            orders = sorted(
                (order for c in clusters for order in registry.list(c)), key=lambda o: o.name
            )
        chosen, cursor = one_page([(o.name, o) for o in orders], after, limit)
        return Response.json(200, {"orders": [_order_json(o) for o in chosen], "next": cursor})

    def _patch(
        self, registry: OrderRegistry, key: ApiKeyEntry, name: str, body: object
    ) -> Response:
        change = parse_change(body)
        current = self._visible(registry, key, name)
        if change.cluster is not None and change.cluster != current.cluster:
            raise _refuse(
                400,
                "invalid_request",
                "an order cannot move to another cluster here: remove it and create it again",
            )
        with _registry_errors():
            order = registry.set_identifiers(name, change.identifiers_for(current.identifiers))
        _log.info("order API: key %s changed order %r", key.name, name)
        self._changed()
        return self._answer(200, order)

    # -- checks -------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> ApiKeyEntry:
        entry = self._keys.match(presented_key(request.headers.get("authorization")))
        if entry is None:
            raise _refuse(
                401,
                "unauthorized",
                "a valid API key is required (Bearer, or Basic with the key as user)",
                ("WWW-Authenticate", 'Bearer realm="certfleet"'),
            )
        wait = self._limiter.take(entry.id)
        if wait > 0:
            raise _refuse(
                429,
                "rate_limited",
                "too many requests with this API key",
                ("Retry-After", RateLimiter.retry_after(wait)),
            )
        return entry

    def _cluster(self, registry: OrderRegistry, key: ApiKeyEntry, cluster: str) -> str:
        """``cluster`` if this key may use it; unknown and forbidden look the same."""
        try:
            validate_cluster_name(cluster)
        except UnsafeNameError as err:
            raise _refuse(400, "invalid_cluster", str(err)) from err
        if cluster not in registry.clusters or not key.allows(cluster):
            raise _refuse(400, "invalid_cluster", f"no cluster {cluster!r} here")
        return cluster

    def _visible(self, registry: OrderRegistry, key: ApiKeyEntry, name: str) -> RegistryOrder:
        """The order ``name`` if this key may see it; 404 otherwise, as for a missing one."""
        with _registry_errors():
            try:
                order = registry.get(name)
            except RegistryNotFound:
                order = None
        if order is None or not key.allows(order.cluster):
            raise _refuse(404, "not_found", f"no order named {name[:253]!r}")
        return order

    def _answer(self, status: int, order: RegistryOrder) -> Response:
        return Response.json(status, _order_json(order))


def _order_json(order: RegistryOrder) -> dict[str, object]:
    return order_answer(
        name=order.name,
        cluster=order.cluster,
        identifiers=order.identifiers,
        state=REGISTERED,
        created_at=order.created_at,
        updated_at=order.updated_at,
    )


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError as err:
        raise _refuse(400, "invalid_json", "the body must be a JSON object") from err


@contextmanager
def _registry_errors() -> Iterator[None]:
    """Registry and store failures as API answers."""
    try:
        yield
    except OrderExists as err:
        raise _refuse(409, "order_exists", str(err)) from err
    except RegistryNotFound as err:
        raise _refuse(404, "not_found", str(err)) from err
    except UnknownCluster as err:
        raise _refuse(400, "invalid_cluster", f"no cluster {err.cluster!r} here") from err
    except (RegistryContended, StoreUnavailable) as err:
        _log.warning("order API: %s", err)
        raise _refuse(
            503, "unavailable", "the order registry is busy; try again", ("Retry-After", "1")
        ) from err
    except (RegistryError, StoreError) as err:
        _log.error("order API: %s", err)
        raise _refuse(500, "internal_error", "the order registry cannot be used") from err
