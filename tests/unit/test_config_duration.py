"""parse_duration / format_duration: the spellings config files and --interval accept."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certfleet.config import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("1h30m", 5400.0),
        ("1d2h3m4s", 93784.0),
        ("90", 90.0),
        ("1.5s", 1.5),
        (" 60s ", 60.0),
        (45, 45.0),
        (2.5, 2.5),
        ("0s", 0.0),
    ],
)
def test_accepted(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "empty"),
        ("5x", 'use a number of seconds or units d, h, m, s, like "1h30m"'),
        ("m5", 'use a number of seconds or units d, h, m, s, like "1h30m"'),
        ("30m1h", "units must appear once each, largest first (d, h, m, s)"),
        ("5m5m", "units must appear once each, largest first (d, h, m, s)"),
        ("-5s", 'use a number of seconds or units d, h, m, s, like "1h30m"'),
        (-5, "must be a finite, non-negative duration"),
        (float("nan"), "must be a finite, non-negative duration"),
        (True, "expected a duration, not true/false"),
        ([1], "expected a duration"),
    ],
)
def test_refused(value: object, problem: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(value)
    assert caught.value.problem == problem
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (90, "1m30s"), (3600, "1h"), (604800, "7d"), (5400, "1h30m"), (1.5, "1.5s")],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**9))
def test_format_parses_back(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.text(max_size=20))
def test_random_text_is_a_number_or_a_duration_error(text: str) -> None:
    try:
        assert parse_duration(text) >= 0
    except DurationError:
        pass
