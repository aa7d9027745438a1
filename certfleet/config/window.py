"""The agent's ``update_window`` and ``update_days``: when a node may replace a certificate.

``update_window = "03:00-05:00"`` is a daily window in UTC (every node of a fleet reads it
the same way, whatever its time zone, and no daylight-saving shift moves it); an end
earlier than the start crosses midnight ("22:00-02:00"). ``update_days = ["sat", "sun"]``
keeps the days of the week on which the window *opens* (UTC days); alone, it means those
whole days. ``node_agent.schedule`` computes when a window opens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 1440
WINDOW_FORM = '"HH:MM-HH:MM" in UTC, e.g. "03:00-05:00" or "22:00-02:00" (crosses midnight)'
DAYS_FORM = 'a list of days: "mon", "tue", "wed", "thu", "fri", "sat", "sun"'
_WINDOW = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])-([01]?[0-9]|2[0-3]):([0-5][0-9])", re.ASCII)


@dataclass(frozen=True)
class UpdateWindow:
    """A daily UTC window, opening on some days of the week (Monday is 0).

    ``start`` and ``end`` are minutes after 00:00 UTC; ``end <= start`` crosses midnight,
    and ``end == start`` is the whole day (``update_days`` without ``update_window``)."""

    start: int = 0
    end: int = 0
    days: tuple[int, ...] = tuple(range(7))

    @property
    def length(self) -> int:
        """How long the window stays open, in seconds."""
        return ((self.end - self.start) % MINUTES_PER_DAY or MINUTES_PER_DAY) * 60


def parse_window(text: str) -> tuple[int, int]:
    """(start, end) in minutes after midnight from "HH:MM-HH:MM"; ValueError if malformed."""
    match = _WINDOW.fullmatch(text.strip())
    if match is None:
        raise ValueError("is not a window HH:MM-HH:MM")
    hour, minute, end_hour, end_minute = (int(part) for part in match.groups())
    start, end = hour * 60 + minute, end_hour * 60 + end_minute
    if start == end:
        raise ValueError("opens and closes at the same time")
    return start, end


def parse_day(text: str) -> int:
    """0 (Monday) to 6 (Sunday) from "mon" ... "sun" or "monday" ... (any case)."""
    word = text.strip().lower()
    for number, (short, full) in enumerate(zip(DAYS, _FULL_NAMES)):
        if word in (short, full):
            return number
    raise ValueError("is not a day of the week")


_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
