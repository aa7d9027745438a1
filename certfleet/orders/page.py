"""Pages of an order list: ``?limit=N&after=CURSOR``, answered ``{"orders", "next"}``.

Orders are listed by name; the cursor is the last name of the page, base64url-encoded
(opaque to clients). ``next`` is null on the last page.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from typing import TypeVar

from certfleet.orders.errors import OrderRequestError

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

_T = TypeVar("_T")
_CURSOR = re.compile(r"[A-Za-z0-9_-]{2,1400}")


def encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The name a cursor stands for; 400 ``invalid_cursor`` for anything else."""
    try:
        if not _CURSOR.fullmatch(cursor):
            raise ValueError("not base64url")
        name = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError) as err:
        raise OrderRequestError(
            400, "invalid_cursor", "after is not a cursor this API returned"
        ) from err
    return name


def page_limit(query: Mapping[str, Sequence[str]]) -> int:
    """``limit`` from the query: default 100, at most 1000, at least 1."""
    raw = query.get("limit", [str(DEFAULT_LIMIT)])[-1]
    try:
        limit = min(int(raw), MAX_LIMIT)
    except ValueError as err:
        raise OrderRequestError(400, "invalid_limit", "limit must be an integer") from err
    if limit < 1:
        raise OrderRequestError(400, "invalid_limit", "limit must be at least 1")
    return limit


def page_after(query: Mapping[str, Sequence[str]]) -> str | None:
    """The name that ``after`` (a cursor) stands for, or None for the first page."""
    after = query.get("after", [None])[-1]
    return None if after is None else decode_cursor(after)


def one_page(
    named: Sequence[tuple[str, _T]], after: str | None, limit: int
) -> tuple[list[_T], str | None]:
    """Up to ``limit`` items of ``named`` (sorted by name) after ``after``; next cursor."""
    rest = [(name, item) for name, item in named if after is None or name > after]
    chosen = rest[:limit]
    more = len(rest) > limit
    return [item for _, item in chosen], encode_cursor(chosen[-1][0]) if more else None
