"""APIv3 calls that SSLMate does not document publicly: MODELED, not confirmed.

They follow the table in docs/sandbox.md "Endpoints", which is modeled on SSLMate's APIv2
flow (``shared/reference/sslmate-facts.md`` section 3: CSR in, ``pubkey_hash`` out, the
certificate fetched by public key hash with an optional long ``poll``). The sandbox
serves exactly this; check each call against the real APIv3 before relying on it in
production, and keep any difference inside this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from certfleet.apiv3.errors import MalformedResponse, NotFound
from certfleet.apiv3.model import (
    CertResult,
    CsrResult,
    Identifier,
    Order,
    OrderPage,
    parse_cert_result,
    parse_csr_result,
    parse_order,
    parse_order_page,
)
from certfleet.apiv3.transport import Reply, Transport, quote_segment

MAX_POLL_SECONDS = 60


class ModeledCalls(Transport):
    """Listing, editing and removing orders; submitting CSRs; fetching certificates."""

    def list_orders(
        self, cluster: str | None = None, *, limit: int | None = None, after: str | None = None
    ) -> OrderPage:
        """``GET /orders?cluster=C&limit=N&after=CURSOR`` (modeled) — one page."""
        params: dict[str, str] = {}
        if cluster is not None:
            params["cluster"] = cluster
        if limit is not None:
            params["limit"] = str(limit)
        if after is not None:
            params["after"] = after
        reply = self._request("GET", "/orders", params=params)
        return parse_order_page(reply.data, "GET /orders")

    def iter_orders(
        self, cluster: str | None = None, *, page_size: int | None = None
    ) -> Iterator[Order]:
        """Every order (of ``cluster``, if given), following ``next`` through all pages.

        A cursor that comes back twice is a ``MalformedResponse`` rather than a loop.
        """
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            page = self.list_orders(cluster, limit=page_size, after=cursor)
            yield from page.orders
            if page.next is None:
                return
            if page.next in seen:
                raise MalformedResponse("GET /orders", f"pagination cursor {page.next!r} repeats")
            seen.add(page.next)
            cursor = page.next

    def update_order(self, name: str, identifiers: Sequence[Identifier]) -> Order:
        """``PATCH /orders/{name}`` with the new full identifier set (modeled; idempotent)."""
        path = f"/orders/{quote_segment(name)}"
        body = {"identifiers": [ident.to_json() for ident in identifiers]}
        return parse_order(self._request("PATCH", path, body=body).data, f"PATCH {path}")

    def delete_order(self, name: str) -> None:
        """``DELETE /orders/{name}`` → 204 (modeled).

        After an ambiguous failure the order is read back: gone means the delete worked
        (so a retried DELETE's 404 is not reported as an error).
        """
        path = f"/orders/{quote_segment(name)}"

        def recover(deadline: float) -> Reply | None:
            try:
                self._request("GET", path, deadline=deadline)
            except NotFound:
                return Reply(204, None)
            return None

        self._request("DELETE", path, recover=recover)

    def submit_csr(self, order_name: str, csr_pem: str) -> CsrResult:
        """``POST /orders/{name}/csrs`` with ``{"csr": PEM}`` (modeled on APIv2's CSR flow).

        The server makes a repeated CSR a no-op; on top of that, after an ambiguous
        failure the client looks the key up (``GET .../certs/{pubkey_hash}``, the hash
        computed here from the CSR) and does not resubmit a CSR the server already has.
        """
        pubkey_hash = csr_pubkey_hash(csr_pem)
        path = f"/orders/{quote_segment(order_name)}/csrs"
        cert_path = f"/orders/{quote_segment(order_name)}/certs/{pubkey_hash}"

        def recover(deadline: float) -> Reply | None:
            try:
                reply = self._request("GET", cert_path, deadline=deadline)
            except NotFound:
                return None
            state = parse_cert_result(reply.data, f"GET {cert_path}").state
            return Reply(200, {"pubkey_hash": pubkey_hash, "state": state})

        reply = self._request("POST", path, body={"csr": csr_pem}, recover=recover)
        return parse_csr_result(reply.data, f"POST {path}")

    def get_cert(self, order_name: str, pubkey_hash: str, *, poll: int | None = None) -> CertResult:
        """``GET /orders/{name}/certs/{pubkey_hash}[?poll=SECONDS]`` (modeled on APIv2's
        ``instances/pubkey_hash:`` lookup with long poll; at most 60 s here).

        Returns ``pending`` (with ``retry_after``) or ``issued``; ``NotFound`` for a key
        never submitted.
        """
        path = f"/orders/{quote_segment(order_name)}/certs/{quote_segment(pubkey_hash)}"
        params: dict[str, str] | None = None
        read_timeout: float | None = None
        if poll:
            poll = max(1, min(int(poll), MAX_POLL_SECONDS))
            params = {"poll": str(poll)}
            read_timeout = poll + self.read_timeout
        reply = self._request("GET", path, params=params, read_timeout=read_timeout)
        return parse_cert_result(reply.data, f"GET {path}")


def csr_pubkey_hash(csr_pem: str) -> str:
    """Lowercase hex SHA-256 of the CSR's DER SubjectPublicKeyInfo (the ``pubkey_hash``)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as err:
        raise ValueError("not a PEM certificate signing request") from err
    spki = csr.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()
