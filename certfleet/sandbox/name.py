"""The naming rules of DESIGN.md "Names", as the sandbox enforces them.

``--unsafe-names`` turns the order-name and DNS-name checks off (the cluster check stays),
so that consumers' own defences can be tested against a hostile provider.
"""

from __future__ import annotations

import re

from certfleet.sandbox.errors import NameRefused

_CLUSTER = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_ORDER = re.compile(r"[A-Za-z0-9*._-]{1,253}")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def check_cluster(name: str) -> str:
    """``name`` if it is a valid cluster name, else :class:`NameRefused`."""
    if not _CLUSTER.fullmatch(name):
        raise NameRefused("cluster name", name, "must match [a-z0-9][a-z0-9-]{0,39}")
    return name


def check_order_name(name: str) -> str:
    """``name`` if it is a valid order name, else :class:`NameRefused`."""
    if not _ORDER.fullmatch(name):
        raise NameRefused("order name", name, "must be 1-253 characters of [A-Za-z0-9*._-]")
    if name.startswith("."):
        raise NameRefused("order name", name, "must not start with '.'")
    return name


def check_dns_name(name: str) -> str:
    """The lowercase form of ``name`` if it is a valid DNS name, else :class:`NameRefused`.

    An RFC 1035 hostname (letters, digits and inner hyphens; labels of 1-63 characters;
    at most 253 characters in all), optionally with a leading ``*.`` label.
    """
    lowered = name.lower()
    if len(lowered) > 253:
        raise NameRefused("DNS name", name, "longer than 253 characters")
    labels = lowered.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if not labels:
            raise NameRefused("DNS name", name, "a wildcard needs a name after '*.'")
    for label in labels:
        if not label:
            raise NameRefused("DNS name", name, "has an empty label")
        if "*" in label:
            raise NameRefused("DNS name", name, "'*' is allowed only as the whole first label")
        if len(label) > 63:
            raise NameRefused("DNS name", name, f"label {label[:20]!r}... is over 63 characters")
        if not _LABEL.fullmatch(label):
            raise NameRefused(
                "DNS name",
                name,
                f"label {label!r} must be letters, digits and inner hyphens only",
            )
    return lowered


def is_wildcard(dns_name: str) -> bool:
    """Whether ``dns_name`` has a leading ``*.`` label."""
    return dns_name.startswith("*.")
