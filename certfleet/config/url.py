"""Checks of the URLs a config names (store, store endpoint, API endpoint), without I/O."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from certfleet.config.section import Section
from certfleet.store.https import LOOPBACK_HOSTS

STORE_FORMS = "s3://BUCKET/PREFIX or file:///PATH"


def store_option(
    root: Section, schemes: Sequence[str], valid: str = STORE_FORMS, missing: str | None = None
) -> str:
    """The required ``store`` option of ``root``, a store URL with one of ``schemes``; when
    it is missing or not such a URL an error is recorded (suggesting ``missing`` or
    ``valid``) and "" returned."""
    store = root.required_string("store", valid if missing is None else missing)
    if not store:
        return store
    checked = root.parsed("store", lambda value: check_store_url(value, schemes), valid=valid)
    return checked[0] if checked else ""


def store_endpoint_option(root: Section, store: str) -> str | None:
    """The optional ``store_endpoint`` option of ``root``: an http(s) URL, and only for an
    ``s3://`` ``store`` (the other stores have no endpoint to override); None when absent.
    A bad value is recorded as an error and None returned."""
    parsed = root.parsed(
        "store_endpoint", check_http_url, valid="http(s)://HOST:PORT of an S3-compatible store"
    )
    if not parsed:
        return None
    if store and urlsplit(store).scheme != "s3":
        root.error(
            "store_endpoint",
            "applies to s3:// stores only",
            valid="leave it out, or use an s3:// store",
        )
        return None
    return parsed[0]


def check_store_url(text: str, schemes: Sequence[str]) -> str:
    """Return ``text`` if it is a store URL with one of ``schemes``; raise ValueError if not.

    ``s3://BUCKET[/PREFIX]``, ``file:///ABSOLUTE/PATH``, ``https://HOST[/PATH]`` (and
    ``http://`` on loopback, for tests) are the forms the store backends understand.
    """
    try:
        parts = urlsplit(text)
    except ValueError as err:
        raise ValueError(f"is not a URL ({err})") from err
    if parts.scheme not in schemes:
        raise ValueError("unsupported scheme" if parts.scheme else "is not a URL")
    if parts.query or parts.fragment:
        raise ValueError("must not have a ?query or #fragment")
    if any(char.isspace() for char in text):
        raise ValueError("must not contain spaces")
    if parts.scheme == "s3":
        if not parts.netloc or "@" in parts.netloc or ":" in parts.netloc:
            raise ValueError("must name a bucket: s3://BUCKET or s3://BUCKET/PREFIX")
    elif parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError("must name an absolute path: file:///PATH (three slashes)")
    elif not parts.hostname:
        raise ValueError("must name a host")
    elif parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError("plain http:// is accepted for loopback hosts only: use https://")
    return text


def check_http_url(text: str) -> str:
    """Return ``text`` if it is an http:// or https:// URL with a host; raise ValueError if not."""
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as err:
        raise ValueError(f"is not a URL ({err})") from err
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or any(char.isspace() for char in text):
        raise ValueError("must not have a ?query, #fragment or spaces")
    return text
