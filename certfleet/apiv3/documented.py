"""APIv3 calls that SSLMate documents publicly.

Sources (see ``shared/reference/sslmate-facts.md`` section 1):

* https://sslmate.com/help/reference/apiv3 — base URL, Bearer auth, JSON bodies, error
  objects with a string ``code``, and ``GET /orders/{name}``;
* https://sslmate.com/saas/howitworks — order creation with ``cluster`` and
  ``identifiers = [{"type": "dns", "value": ..., "approval": "http"|"dns"}]``. The path
  ``POST /orders`` and the 201/409 answers are the modeled part (docs/sandbox.md "Endpoints").

Everything not confirmed by those pages lives in ``modeled.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

from certfleet.apiv3.errors import NotFound
from certfleet.apiv3.model import Identifier, Order, parse_order
from certfleet.apiv3.transport import Reply, Transport, quote_segment


class DocumentedCalls(Transport):
    """``GET /orders/{name}`` and order creation."""

    def get_order(self, name: str) -> Order:
        """``GET /orders/{name}`` (documented: the APIv3 reference's own example call).

        Raises ``NotFound`` for an unknown order.
        """
        path = f"/orders/{quote_segment(name)}"
        return parse_order(self._request("GET", path).data, f"GET {path}")

    def create_order(
        self,
        identifiers: Sequence[Identifier],
        *,
        cluster: str | None = None,
        name: str | None = None,
    ) -> Order:
        """Create an order (body documented in "How it works"; path ``POST /orders`` modeled).

        The name is always sent (the default is the first DNS name, as SSLMate's), so that
        after an ambiguous failure the client can read the order back with ``GET
        /orders/{name}``: if it exists with the same cluster and names, that attempt took
        effect and the order is returned; a different order of that name is a ``Conflict``.
        """
        if not identifiers:
            raise ValueError("an order needs at least one identifier")
        order_name = name or identifiers[0].value
        body: dict[str, object] = {
            "name": order_name,
            "identifiers": [ident.to_json() for ident in identifiers],
        }
        if cluster is not None:
            body["cluster"] = cluster
        wanted = sorted(ident.value for ident in identifiers)

        def recover(deadline: float) -> Reply | None:
            path = f"/orders/{quote_segment(order_name)}"
            try:
                reply = self._request("GET", path, deadline=deadline)
            except NotFound:
                return None
            found = parse_order(reply.data, f"GET {path}")
            if found.cluster == cluster and sorted(found.dns_names) == wanted:
                return Reply(201, reply.data)
            return None

        reply = self._request("POST", "/orders", body=body, recover=recover)
        return parse_order(reply.data, "POST /orders")
