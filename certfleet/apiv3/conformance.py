"""Does a provider answer the APIv3 calls as certfleet models them? Read-only checks.

``certfleet doctor --api`` runs :func:`check_api` against an endpoint (SSLMate's sandbox
before going live, or production) and reports each call: answered as modeled, answered
differently (and how), or not reachable. Only reads are sent: the listing of a cluster's
orders (and its next page, when there is one), one order, an order that does not exist, a
certificate for a public key nobody submitted, and the same listing with HTTP Basic auth and
with no auth at all. The calls that write (creating, editing and removing orders,
submitting CSRs) are listed as not exercised.

Which calls SSLMate documents and which are modeled on its APIv2 flow is the split between
``documented.py`` and ``modeled.py``; each finding says which side its call is on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import requests

from certfleet.apiv3.client import ApiClient
from certfleet.apiv3.errors import (
    ApiError,
    ApiUnavailable,
    MalformedResponse,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
)
from certfleet.apiv3.model import Order, OrderPage
from certfleet.apiv3.transport import USER_AGENT

AS_MODELED = "as_modeled"
DIFFERENT = "different"
UNREACHABLE = "unreachable"
SKIPPED = "skipped"

DOCUMENTED = "documented"
MODELED = "modeled"

# An order name no one has (the .invalid TLD is reserved, RFC 2606) and a pubkey hash no
# key has: the answers to them show the provider's 404.
UNKNOWN_ORDER = "certfleet-doctor.invalid"
UNKNOWN_PUBKEY_HASH = "0" * 64
PAGE_LIMIT = 2
_WRITES = (
    ("POST /orders", DOCUMENTED),
    ("PATCH /orders/{name}", MODELED),
    ("DELETE /orders/{name}", MODELED),
    ("POST /orders/{name}/csrs", MODELED),
)


@dataclass(frozen=True)
class Finding:
    """What one call answered. ``detail`` may hold the provider's text: escape it to show."""

    call: str
    source: str
    outcome: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.outcome in (DIFFERENT, UNREACHABLE)

    def to_json(self) -> dict[str, str]:
        return {
            "call": self.call,
            "source": self.source,
            "outcome": self.outcome,
            "detail": self.detail,
        }


class _Differs(Exception):
    """The call answered, but not as modeled."""


def check_api(
    client: ApiClient,
    api_key: str,
    cluster: str | None,
    *,
    session: requests.Session | None = None,
    timeout: float = 15.0,
) -> list[Finding]:
    """Run every read-only check against ``client``'s endpoint, in a fixed order."""
    findings: list[Finding] = []
    where = "" if cluster is None else f"cluster={cluster}&"
    listing = f"GET /orders?{where}limit={PAGE_LIMIT}"

    page = _run(findings, listing, MODELED, lambda: _list(client, cluster))
    first: Order | None = page.orders[0] if page is not None and page.orders else None
    after = f"GET /orders?{where}limit={PAGE_LIMIT}&after=CURSOR"
    if page is None:
        findings.append(Finding(after, MODELED, SKIPPED, "the first page did not answer"))
    elif page.next is None:
        findings.append(Finding(after, MODELED, SKIPPED, "one page only (next is null)"))
    else:
        cursor = page.next
        _run(findings, after, MODELED, lambda: _next_page(client, cluster, page, cursor))

    get = "GET /orders/{name}"
    if first is None:
        reason = "no order to read" + ("" if cluster is None else f" in cluster {cluster}")
        findings.append(Finding(get, DOCUMENTED, SKIPPED, reason))
    else:
        listed = first
        _run(findings, get, DOCUMENTED, lambda: _get(client, listed))
    _run(
        findings,
        f"GET /orders/{UNKNOWN_ORDER}",
        DOCUMENTED,
        lambda: _not_found(lambda: client.get_order(UNKNOWN_ORDER)),
    )
    owner = UNKNOWN_ORDER if first is None else first.name
    _run(
        findings,
        "GET /orders/{name}/certs/{pubkey_hash} (a key never submitted)",
        MODELED,
        lambda: _not_found(lambda: client.get_cert(owner, UNKNOWN_PUBKEY_HASH)),
    )
    http = session or requests.Session()
    url = f"{client.endpoint}/orders"
    _run(
        findings,
        "GET /orders with Basic auth (the key as user, an empty password)",
        DOCUMENTED,
        lambda: _basic_auth(http, url, api_key, timeout),
    )
    _run(
        findings,
        "GET /orders without auth (an error object with a code)",
        DOCUMENTED,
        lambda: _without_auth(http, url, timeout),
    )
    for call, source in _WRITES:
        findings.append(Finding(call, source, SKIPPED, "not exercised: it writes"))
    return findings


def _run(findings: list[Finding], call: str, source: str, check: Callable[[], Any]) -> Any | None:
    """Run one check; record its finding; return what it returned (None unless as modeled)."""
    try:
        detail, value = check()
    except _Differs as err:
        findings.append(Finding(call, source, DIFFERENT, str(err)))
    except (ApiUnavailable, ServerError, RateLimited) as err:
        findings.append(Finding(call, source, UNREACHABLE, _said(err)))
    except Unauthorized as err:
        refused = f"the API key was refused: {_said(err)}"
        findings.append(Finding(call, source, UNREACHABLE, refused))
    except MalformedResponse as err:
        findings.append(Finding(call, source, DIFFERENT, err.message))
    except ApiError as err:
        findings.append(Finding(call, source, DIFFERENT, f"answered {_said(err)}"))
    except requests.RequestException as err:
        findings.append(Finding(call, source, UNREACHABLE, f"no answer ({type(err).__name__})"))
    else:
        findings.append(Finding(call, source, AS_MODELED, detail))
        return value
    return None


def _said(err: ApiError) -> str:
    parts = [f"HTTP {err.status}"] if err.status is not None else []
    if err.code:
        parts.append(err.code)
    parts.append(err.message)
    return " ".join(parts)


def _list(client: ApiClient, cluster: str | None) -> tuple[str, OrderPage]:
    page = client.list_orders(cluster, limit=PAGE_LIMIT)
    _check_page(page, cluster)
    cursor = "null" if page.next is None else "a cursor"
    return f"{len(page.orders)} order(s), next {cursor}", page


def _next_page(
    client: ApiClient, cluster: str | None, first: OrderPage, cursor: str
) -> tuple[str, OrderPage]:
    page = client.list_orders(cluster, limit=PAGE_LIMIT, after=cursor)
    _check_page(page, cluster)
    repeated = {o.name for o in first.orders} & {o.name for o in page.orders}
    if repeated:
        raise _Differs(f"the next page repeats {', '.join(sorted(repeated))}")
    if page.next == cursor:
        raise _Differs("the next page gives the same cursor again")
    return f"{len(page.orders)} more order(s)", page


def _check_page(page: OrderPage, cluster: str | None) -> None:
    if len(page.orders) > PAGE_LIMIT:
        raise _Differs(f"{len(page.orders)} orders for limit={PAGE_LIMIT}")
    if cluster is not None:
        others = sorted({o.cluster or "none" for o in page.orders if o.cluster != cluster})
        if others:
            raise _Differs(f"the listing of cluster {cluster} has orders of {', '.join(others)}")


def _get(client: ApiClient, listed: Order) -> tuple[str, Order]:
    order = client.get_order(listed.name)
    differences = [
        field
        for field, got, want in (
            ("name", order.name, listed.name),
            ("cluster", order.cluster, listed.cluster),
            ("dns names", sorted(order.dns_names), sorted(listed.dns_names)),
        )
        if got != want
    ]
    if differences:
        raise _Differs(f"the order's {', '.join(differences)} differ from the listing's")
    return f"order {order.name} ({len(order.identifiers)} identifier(s), {order.state})", order


def _not_found(call: Callable[[], object]) -> tuple[str, None]:
    try:
        call()
    except NotFound as err:
        if err.code == "not_found":
            return "HTTP 404 not_found", None
        if not err.code:
            raise _Differs("HTTP 404 without an error object's code") from err
        raise _Differs(f"HTTP 404 with code {err.code} (modeled: not_found)") from err
    raise _Differs("answered with success for something that does not exist")


def _basic_auth(http: requests.Session, url: str, api_key: str, timeout: float) -> tuple[str, None]:
    response = http.get(
        url,
        params={"limit": "1"},
        auth=(api_key, ""),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        timeout=timeout,
        allow_redirects=False,
    )
    if response.status_code in (401, 403):
        raise _Differs(f"HTTP {response.status_code}: Basic auth refused where Bearer works")
    if response.status_code != 200:
        raise _Differs(f"HTTP {response.status_code}")
    data = _json(response)
    if not isinstance(data, dict) or not isinstance(data.get("orders"), list):
        raise _Differs("HTTP 200 without an orders list")
    return "HTTP 200 with an orders list", None


def _without_auth(http: requests.Session, url: str, timeout: float) -> tuple[str, None]:
    response = http.get(
        url,
        params={"limit": "1"},
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        timeout=timeout,
        allow_redirects=False,
    )
    if response.status_code not in (401, 403):
        raise _Differs(f"HTTP {response.status_code} (modeled: 401 or 403)")
    data = _json(response)
    code = data.get("code") if isinstance(data, dict) else None
    if not isinstance(code, str) or not code:
        raise _Differs(f"HTTP {response.status_code} without an error object's code")
    return f"HTTP {response.status_code} {code}", None


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError as err:
        kind = response.headers.get("Content-Type", "no content type")
        status = response.status_code
        raise _Differs(f"HTTP {status} with a body that is not JSON ({kind})") from err


def failed(findings: Sequence[Finding]) -> list[Finding]:
    """The findings that answered differently or not at all."""
    return [finding for finding in findings if finding.failed]
