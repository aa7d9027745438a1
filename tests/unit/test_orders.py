"""certfleet.orders: the two request forms, the refusals, and answers that carry both fields;
the APIv3 client parsing an order answered with ``dns_names`` only."""

from __future__ import annotations

from typing import Any

import pytest

from certfleet.apiv3.errors import MalformedResponse
from certfleet.apiv3.model import parse_order
from certfleet.orders import (
    MAX_IDENTIFIERS,
    Identifier,
    OrderRequestError,
    order_answer,
    parse_change,
    parse_create,
)

HELP_PAGE_BODY = {"cluster": "webservers", "dns_names": ["example.com", "www.example.com"]}


def test_the_help_page_body_orders_two_names_with_http_approval() -> None:
    request = parse_create(HELP_PAGE_BODY)
    assert request.cluster == "webservers"
    assert request.order_name == "example.com"
    assert request.identifiers == (
        Identifier("example.com", "http"),
        Identifier("www.example.com", "http"),
    )


def test_dns_names_default_wildcards_to_dns_and_are_stored_lowercase() -> None:
    request = parse_create({"cluster": "c", "dns_names": ["Example.COM", "*.Example.com"]})
    assert request.identifiers == (
        Identifier("example.com", "http"),
        Identifier("*.example.com", "dns"),
    )


def test_identifiers_keep_their_approval_and_name_is_taken() -> None:
    body = {
        "cluster": "c",
        "name": "shop",
        "identifiers": [{"type": "dns", "value": "shop.example", "approval": "dns"}],
    }
    request = parse_create(body)
    assert (request.order_name, request.identifiers) == (
        "shop",
        (Identifier("shop.example", "dns"),),
    )


TOO_MANY = [f"h{i}.example" for i in range(MAX_IDENTIFIERS + 1)]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({**HELP_PAGE_BODY, "identifiers": [{"value": "x.example"}]}, 400, "conflicting_fields"),
        ({"cluster": "c"}, 400, "missing_field"),
        ({"dns_names": ["a.example"]}, 400, "missing_field"),
        ({"cluster": "c", "dns_names": []}, 400, "invalid_request"),
        ({"cluster": "c", "dns_names": "a.example"}, 400, "invalid_request"),
        ({"cluster": "c", "dns_names": TOO_MANY}, 400, "too_many_identifiers"),
        ({"cluster": "c", "dns_names": ["../../etc/passwd"]}, 400, "invalid_dns_name"),
        ({"cluster": "c", "dns_names": ["a\nb.example"]}, 400, "invalid_dns_name"),
        ({"cluster": "c", "dns_names": ["\u00e9t\u00e9.example"]}, 400, "invalid_dns_name"),
        ({"cluster": "c", "dns_names": ["a." * 130 + "example"]}, 400, "invalid_dns_name"),
        ({"cluster": "c", "dns_names": ["a.*.example"]}, 400, "invalid_dns_name"),
        ({"cluster": "c", "dns_names": [7]}, 400, "invalid_dns_name"),
        ({"cluster": "c", "dns_names": ["a.example", "A.example"]}, 400, "duplicate_identifier"),
        ({"cluster": "Bad_Cluster", "dns_names": ["a.example"]}, 400, "invalid_cluster"),
        (
            {"cluster": "c", "dns_names": ["a.example"], "name": ".hidden"},
            400,
            "invalid_order_name",
        ),
        ({"cluster": "c", "dns_names": ["a.example"], "name": "a/b"}, 400, "invalid_order_name"),
        ({"cluster": "c", "dns_names": ["a.example"], "x": 1}, 400, "unknown_field"),
        (
            {"cluster": "c", "identifiers": [{"value": "*.a.example", "approval": "http"}]},
            422,
            "approval_not_allowed",
        ),
        (
            {"cluster": "c", "identifiers": [{"value": "a.example", "approval": "email"}]},
            400,
            "invalid_approval",
        ),
        (
            {"cluster": "c", "identifiers": [{"type": "ip", "value": "10.0.0.1"}]},
            400,
            "unsupported_identifier",
        ),
        ([HELP_PAGE_BODY], 400, "invalid_request"),
    ],
)
def test_refused_create_bodies(body: Any, status: int, code: str) -> None:
    with pytest.raises(OrderRequestError) as caught:
        parse_create(body)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert "\n" not in caught.value.message


def test_unsafe_names_let_any_string_through_for_the_sandbox() -> None:
    request = parse_create({"cluster": "c", "dns_names": ["../x"]}, unsafe_names=True)
    assert request.order_name == "../x"


def test_a_change_with_dns_names_keeps_the_approval_of_names_it_has() -> None:
    current = (Identifier("a.example", "dns"), Identifier("b.example", "http"))
    change = parse_change({"dns_names": ["a.example", "*.a.example", "c.example"]})
    assert change.identifiers_for(current) == (
        Identifier("a.example", "dns"),
        Identifier("*.a.example", "dns"),
        Identifier("c.example", "http"),
    )
    explicit = parse_change({"identifiers": [{"value": "a.example", "approval": "http"}]})
    assert explicit.identifiers_for(current) == (Identifier("a.example", "http"),)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "invalid_request"),
        (
            {"dns_names": ["a.example"], "identifiers": [{"value": "a.example"}]},
            "conflicting_fields",
        ),
        ({"cluster": "c"}, "unknown_field"),
    ],
)
def test_refused_change_bodies(body: Any, code: str) -> None:
    with pytest.raises(OrderRequestError) as caught:
        parse_change(body, allow_cluster=False)
    assert caught.value.code == code


def test_an_answer_carries_both_fields_in_the_same_order() -> None:
    answer = order_answer(
        name="example.com",
        cluster="webservers",
        identifiers=(Identifier("example.com", "http"), Identifier("*.example.com", "dns")),
        state="registered",
        created_at=0,
        updated_at=86400,
    )
    assert answer["dns_names"] == ["example.com", "*.example.com"]
    assert [i["value"] for i in answer["identifiers"]] == answer["dns_names"]  # type: ignore[attr-defined,index]
    assert answer["updated_at"] == "1970-01-02T00:00:00Z"


def test_the_client_parses_an_order_answered_with_dns_names_only() -> None:
    order = parse_order(
        {"name": "example.com", "cluster": "webservers", "state": "issued", **HELP_PAGE_BODY},
        "GET /orders/example.com",
    )
    assert order.dns_names == ("example.com", "www.example.com")
    assert {i.approval for i in order.identifiers} == {"http"}
    wildcard = parse_order(
        {"name": "w", "cluster": None, "state": "issued", "dns_names": ["*.w.example"]}, "GET"
    )
    assert wildcard.identifiers[0].approval == "dns"
    assert order.to_json()["dns_names"] == ["example.com", "www.example.com"]
    with pytest.raises(MalformedResponse):
        parse_order({"name": "x", "state": "issued"}, "GET /orders/x")
