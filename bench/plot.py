"""How certfleet's costs grow with N, beside ``aws s3 sync``: an SVG from the bench's JSON.

Run: .venv/bin/python bench/plot.py [bench/results/latest.json] [--out FILE.svg]
(bench/run.py writes it beside its JSON: ``bench/results/latest.svg``.)

Two log-log charts, orders N on the x axis: bytes on the wire per poll (certfleet's idle and
one-change polls, ``aws s3 sync``'s, and the naive one-index layout's change), and CPU per
poll (the certfleet daemon's change poll, ``certfleet-agent --once``, ``aws s3 sync``). A
series is drawn from whatever sizes the JSON holds; one missing from it is left out. The SVG
is written by hand (no plotting library).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

BENCH = Path(__file__).resolve().parent
WIDTH, HEIGHT, MARGIN = 760, 340, 60
COLOURS = ("#1b6ac9", "#7aa6e0", "#c43c39", "#e8928f", "#6b6b6b", "#2e8b57")

Series = list[tuple[float, float]]


def _peer(data: dict[str, Any], side: str, poll: str, figure: str) -> Series:
    rows = (data.get("peer") or {}).get("sizes") or []
    return [(row["orders"], row[side][poll][figure]) for row in rows if side in row]


def wire_series(data: dict[str, Any]) -> dict[str, Series]:
    naive = [
        (row["orders"], row["read_path"]["naive"]["bytes_in"])
        for row in (data.get("propagation") or {}).get("sizes") or []
    ]
    return {
        "certfleet idle poll (daemon)": _peer(data, "certfleet", "daemon_idle_poll", "wire_bytes"),
        "certfleet one change": _peer(data, "certfleet", "change_poll", "wire_bytes"),
        "aws s3 sync idle": _peer(data, "aws_s3_sync", "idle_poll", "wire_bytes"),
        "aws s3 sync one change": _peer(data, "aws_s3_sync", "change_poll", "wire_bytes"),
        "naive index, one change (objects)": naive,
    }


def cpu_series(data: dict[str, Any]) -> dict[str, Series]:
    scale = (data.get("agent") or {}).get("state_scale") or []
    return {
        "certfleet daemon, one change": [
            (row["orders"], row["change_poll_cpu_ms_without_metrics"])
            for row in scale
            if row.get("change_poll_cpu_ms_without_metrics") is not None
        ],
        "certfleet-agent --once, one change": _peer(data, "certfleet", "change_poll", "cpu_ms"),
        "aws s3 sync, one change": _peer(data, "aws_s3_sync", "change_poll", "cpu_ms"),
        "aws s3 sync idle": _peer(data, "aws_s3_sync", "idle_poll", "cpu_ms"),
    }


def chart(title: str, unit: str, series: dict[str, Series], top: int) -> list[str]:
    """One log-log chart's SVG elements, ``top`` pixels down."""
    drawn = {name: points for name, points in series.items() if points}
    values = [v for points in drawn.values() for _, v in points if v > 0]
    sizes = [n for points in drawn.values() for n, _ in points if n > 0]
    out = [f'<text x="{MARGIN}" y="{top + 20}" font-weight="bold">{escape(title)}</text>']
    if not values or not sizes:
        return [*out, f'<text x="{MARGIN}" y="{top + 50}">no figures in the JSON</text>']
    x_lo, x_hi = math.floor(math.log10(min(sizes))), math.ceil(math.log10(max(sizes)))
    y_lo, y_hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    x_hi, y_hi = max(x_hi, x_lo + 1), max(y_hi, y_lo + 1)
    left, right = MARGIN, WIDTH - 200
    bottom, upper = top + HEIGHT - 40, top + 40

    def x(n: float) -> float:
        return left + (math.log10(n) - x_lo) / (x_hi - x_lo) * (right - left)

    def y(v: float) -> float:
        return bottom - (math.log10(v) - y_lo) / (y_hi - y_lo) * (bottom - upper)

    out.append(f'<rect x="{left}" y="{upper}" width="{right - left}" height="{bottom - upper}" '
               'fill="none" stroke="#999"/>')  # fmt: skip
    for power in range(x_lo, x_hi + 1):
        out.append(f'<text x="{x(10**power):.0f}" y="{bottom + 16}" text-anchor="middle">'
                   f'{10**power:,}</text>')  # fmt: skip
    for power in range(y_lo, y_hi + 1):
        out.append(f'<line x1="{left}" x2="{right}" y1="{y(10**power):.0f}" '
                   f'y2="{y(10**power):.0f}" stroke="#eee"/>')  # fmt: skip
        out.append(f'<text x="{left - 6}" y="{y(10**power) + 4:.0f}" text-anchor="end">'
                   f'1e{power}</text>')  # fmt: skip
    out.append(f'<text x="{(left + right) / 2:.0f}" y="{bottom + 32}" text-anchor="middle">'
               f'orders (N); y: {escape(unit)}</text>')  # fmt: skip
    for number, (name, points) in enumerate(drawn.items()):
        colour = COLOURS[number % len(COLOURS)]
        path = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in sorted(points) if n > 0 and v > 0)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for n, v in points:
            if n > 0 and v > 0:
                out.append(f'<circle cx="{x(n):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>')
        out.append(f'<text x="{right + 10}" y="{upper + 14 + 18 * number}" fill="{colour}">'
                   f'{escape(name)}</text>')  # fmt: skip
    return out


def svg(data: dict[str, Any]) -> str:
    parts = [
        *chart("Bytes on the wire per poll", "bytes", wire_series(data), 0),
        *chart("CPU per poll", "milliseconds", cpu_series(data), HEIGHT),
    ]
    started = escape(str((data.get("meta") or {}).get("started_at", "")))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{2 * HEIGHT + 20}"'
        ' font-family="sans-serif" font-size="11">\n'
        + "\n".join(parts)
        + f'\n<text x="{MARGIN}" y="{2 * HEIGHT + 10}" fill="#666">make bench, {started}</text>\n'
        "</svg>\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="?", default=str(BENCH / "results" / "latest.json"))
    parser.add_argument("--out", default=str(BENCH / "results" / "latest.svg"))
    args = parser.parse_args()
    data = json.loads(Path(args.json).read_text())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(svg(data))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
