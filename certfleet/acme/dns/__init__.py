"""DNS-01 for the ACME provider: TXT records through the sync config's ``dns`` blocks.

``dns_challenges(blocks, resolvers)`` gives a :class:`DnsChallenges` for one order (or one
batch): ``add(identifier, value)`` for each DNS-01 challenge, ``wait_until_served(timeout)``
before answering the challenges, and ``cleanup()`` afterwards, also after a failure.
Backends: ``rfc2136`` (dynamic update with TSIG, :mod:`certfleet.acme.dns.rfc2136`) and
``route53`` (:mod:`certfleet.acme.dns.route53`). docs/acme.md (DNS-01) is the operator's guide.
"""

from __future__ import annotations

from certfleet.acme.dns.block import DnsProviderConfig, choose_block
from certfleet.acme.dns.challenges import DnsChallenges, challenge_record, dns_challenges
from certfleet.acme.dns.errors import DnsError

__all__ = [
    "DnsChallenges",
    "DnsError",
    "DnsProviderConfig",
    "challenge_record",
    "choose_block",
    "dns_challenges",
]
