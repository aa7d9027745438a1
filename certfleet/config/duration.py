"""Durations in config files and on command lines: "90s", "5m", "1h30m", "7d" or seconds."""

from __future__ import annotations

import math
import re

from certfleet.config.errors import DurationError

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])", re.ASCII)
_NUMBER = re.compile(r"\d+(?:\.\d+)?", re.ASCII)


def parse_duration(value: object) -> float:
    """Seconds in ``value``: a non-negative number, or a string such as "90", "90s", "5m",
    "1h", "7d" or "1h30m" (units d, h, m, s, each at most once, largest first).

    Raises DurationError (a ValueError) for anything else, including booleans.
    """
    if isinstance(value, bool):
        raise DurationError(str(value), "expected a duration, not true/false")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise DurationError(str(value)[:40], "expected a duration")
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise DurationError(str(value), "must be a finite, non-negative duration")
    return seconds


def _parse_text(value: str) -> float:
    text = value.strip()
    if not text:
        raise DurationError(value, "empty")
    if _NUMBER.fullmatch(text):
        return float(text)
    total = 0.0
    position = 0
    seen: list[str] = []
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        unit = match.group(2)
        if seen and list(_UNITS).index(unit) <= list(_UNITS).index(seen[-1]):
            raise DurationError(value, "units must appear once each, largest first (d, h, m, s)")
        seen.append(unit)
        total += float(match.group(1)) * _UNITS[unit]
        position = match.end()
    if position != len(text) or not seen:
        raise DurationError(value, 'use a number of seconds or units d, h, m, s, like "1h30m"')
    return total


def format_duration(seconds: float) -> str:
    """The shortest config spelling of ``seconds`` ("7d", "1h30m", "90s", "0s", "1.5s")."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(seconds)
    if rest == 0:
        return "0s"
    out = ""
    for unit, size in _UNITS.items():
        count, rest = divmod(rest, int(size))
        if count:
            out += f"{count}{unit}"
    return out
