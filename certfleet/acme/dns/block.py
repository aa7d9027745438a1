"""Which ``dns`` block of the sync config writes a given TXT record.

The block whose ``zones`` holds the longest suffix of the record name wins; a record that
no zone covers goes to the block without ``zones`` (the default). :func:`choose_block` is a
pure function of the record name and the blocks. The blocks are the sync config's
(:class:`certfleet.config.acme.DnsProviderConfig`).
"""

from __future__ import annotations

from collections.abc import Sequence

from certfleet.acme.dns.errors import DnsError
from certfleet.config.acme import DnsProviderConfig


def describe(block: DnsProviderConfig) -> str:
    """How messages name a block: ``dns "rfc2136" (zones a.test, b.test)`` or ``(default)``."""
    zones = f"zones {', '.join(block.zones)}" if block.zones else "default"
    return f'dns "{block.kind}" ({zones})'


def normalize(name: str) -> str:
    """A DNS name as the blocks' zones are written: lowercase, no trailing dot."""
    return name.strip().rstrip(".").lower()


def is_within(name: str, zone: str) -> bool:
    """Whether ``name`` is ``zone`` or a name below it (both normalized)."""
    return name == zone or name.endswith("." + zone)


def choose_block(
    record: str, blocks: Sequence[DnsProviderConfig]
) -> tuple[DnsProviderConfig, str | None]:
    """The block that writes ``record`` and the zone it matched (None: the default block).

    The longest zone of any block that is a suffix of ``record`` wins; with none, the first
    block without zones. Raises :class:`DnsError` when no block fits.
    """
    record = normalize(record)
    best: tuple[DnsProviderConfig, str] | None = None
    for block in blocks:
        for zone in block.zones:
            zone = normalize(zone)
            if is_within(record, zone) and (best is None or len(zone) > len(best[1])):
                best = (block, zone)
    if best is not None:
        return best
    for block in blocks:
        if not block.zones:
            return block, None
    listed = sorted({normalize(zone) for block in blocks for zone in block.zones})
    return_reason = (
        f"no dns block has a zone for it (zones: {', '.join(listed) or 'none'}) "
        "and there is no dns block without zones"
    )
    raise DnsError(record, "dns blocks", return_reason)
