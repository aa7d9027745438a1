"""The per-order part of the metrics file kept between polls (node_agent.metrics.OrderMetrics):
after renewals, new orders and removed ones it is what a fresh rendering gives."""

from __future__ import annotations

from node_agent.agentstate import InstalledOrder, OrderTable
from node_agent.metrics import OrderMetrics, render_order_metrics


def installed(number: int, when: int = 0) -> InstalledOrder:
    return InstalledOrder(
        "web", f"o{number}", "ab" * 16, "1", "ecdsa", 2_000_000 + number + when, "v1",
        installed_at=1_000 + when,
    )  # fmt: skip


def test_kept_lines_match_a_fresh_rendering_through_changes() -> None:
    table = OrderTable((f"o{n:03d}.example.com", installed(n)) for n in range(50))
    metrics = OrderMetrics()
    assert metrics.text(table) == render_order_metrics(table)
    first = metrics.text(table)
    assert metrics.text(table) is first  # nothing moved: the same text, not rendered again
    table["o007.example.com"] = installed(7, when=86_400)  # renewed
    renewed = metrics.text(table)
    assert renewed == render_order_metrics(table) and renewed != first
    assert 'order="o007.example.com"} 2086407' in renewed
    table["a-new.example.com"] = installed(99)  # sorts first
    del table["o010.example.com"]
    assert metrics.text(table) == render_order_metrics(table)
    assert "o010.example.com" not in metrics.text(table)
    for name in list(table):
        del table[name]
    assert metrics.text(table) == render_order_metrics(table) == render_order_metrics({})
