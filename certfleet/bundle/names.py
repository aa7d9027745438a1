"""The naming rules of docs/format.md "Text forms and names", checked the same way by the
sync and the agent.

The store is untrusted, so every name read from it is checked again before it reaches a
path or a log line. Each validator returns the name (DNS names in lowercase) or raises
``UnsafeNameError``, whose message shows the name repr-escaped and cut to about 80
characters, and the rule it breaks.
"""

from __future__ import annotations

import re

from certfleet.bundle.errors import UnsafeNameError

_CLUSTER = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_ORDER_CHARS = re.compile(r"[A-Za-z0-9*._-]+")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SHOWN_MAX = 80


def _shown(name: object) -> str:
    text = repr(name)
    if len(text) > _SHOWN_MAX:
        text = text[: _SHOWN_MAX - 3] + "..."
    return text


def _refuse(kind: str, name: object, rule: str, where: str | None) -> UnsafeNameError:
    what = f"{kind} {_shown(name)}"
    if where is None:
        return UnsafeNameError(what, rule, name)
    return UnsafeNameError(where, f"{what} {rule}", name)


def validate_cluster_name(name: str, *, where: str | None = None) -> str:
    """Return ``name`` if it is a cluster name: ``[a-z0-9][a-z0-9-]{0,39}``."""
    if not isinstance(name, str) or not _CLUSTER.fullmatch(name):
        raise _refuse(
            "cluster name",
            name,
            "is not 1-40 characters of a-z 0-9 - starting with a letter or digit",
            where,
        )
    return name


def validate_order_name(name: str, *, where: str | None = None) -> str:
    """Return ``name`` if it is an order name: 1-253 of ``[A-Za-z0-9*._-]``, no leading dot."""
    if not isinstance(name, str):
        raise _refuse("order name", name, "is not a string", where)
    if not 1 <= len(name) <= 253:
        raise _refuse("order name", name, "must be 1-253 characters long", where)
    if not _ORDER_CHARS.fullmatch(name):
        raise _refuse("order name", name, "may only contain A-Z a-z 0-9 * . _ -", where)
    if name.startswith("."):
        raise _refuse("order name", name, "must not start with '.' (nor be '.' or '..')", where)
    return name


def validate_dns_name(name: str, *, where: str | None = None) -> str:
    """Return the lowercase form of ``name`` if it is a hostname, optionally ``*.``-prefixed.

    Labels are 1-63 characters of letters, digits and inner hyphens (RFC 1035 as relaxed by
    RFC 1123 to allow a leading digit); at most 253 characters in all; no trailing dot;
    internationalised names must already be in their ``xn--`` form.
    """
    if not isinstance(name, str) or not name.isascii():
        raise _refuse("DNS name", name, "is not an ASCII string (use the xn-- form)", where)
    lower = name.lower()
    if not 1 <= len(lower) <= 253:
        raise _refuse("DNS name", name, "must be 1-253 characters long", where)
    labels = lower.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if not labels:
            raise _refuse("DNS name", name, "has nothing after the wildcard label", where)
    for label in labels:
        if label == "*":
            raise _refuse("DNS name", name, "may have '*' only as its whole first label", where)
        if len(label) > 63:
            raise _refuse("DNS name", name, "has a label longer than 63 characters", where)
        if not _DNS_LABEL.fullmatch(label):
            raise _refuse(
                "DNS name",
                name,
                "has an empty label or one that is not letters, digits and inner hyphens",
                where,
            )
    return lower


def safe_dir_name(order_name: str) -> str:
    """Return the on-disk directory name of a valid order name: every ``*`` becomes ``_``."""
    return validate_order_name(order_name).replace("*", "_")
