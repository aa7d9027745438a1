"""The project's one retry rule (certfleet.retry): doubling delays, jitter, Retry-After."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certfleet.retry import exponential, full_jitter, parse_retry_after, spread

NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [
        (-1, 0.0),
        (0, 0.0),
        (1, 60.0),
        (2, 120.0),
        (3, 240.0),
        (6, 1920.0),
        (7, 3600.0),
        (99, 3600.0),
    ],
)
def test_the_delay_doubles_from_first_up_to_the_cap(attempt: int, delay: float) -> None:
    assert exponential(attempt, first=60.0, cap=3600.0) == delay


def test_a_huge_attempt_count_stays_finite_under_an_infinite_cap() -> None:
    assert exponential(10**6, first=0.5, cap=math.inf) == 0.5 * 2.0**16


@given(st.floats(0.0, 1e6), st.floats(0.0, 0.5), st.floats(0.0, 1.0, exclude_max=True))
def test_spread_stays_within_the_jitter_fraction(delay: float, jitter: float, draw: float) -> None:
    moved = spread(delay, jitter, draw)
    assert delay * (1 - jitter) - 1e-6 <= moved <= delay * (1 + jitter) + 1e-6


def test_spread_at_the_middle_draw_does_not_move_the_delay() -> None:
    assert spread(100.0, 0.1, 0.5) == 100.0
    assert spread(100.0, 0.1, 0.0) == pytest.approx(90.0)


@given(st.floats(0.0, 1e6), st.floats(0.0, 1.0, exclude_max=True))
def test_full_jitter_is_between_zero_and_the_delay(delay: float, draw: float) -> None:
    assert 0.0 <= full_jitter(delay, draw) <= delay


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Tue, 14 Nov 2023 23:13:20 GMT", 3600.0),  # IMF-fixdate
        ("Tuesday, 14-Nov-23 23:13:20 GMT", 3600.0),  # obsolete RFC 850 form
        ("Tue Nov 14 23:13:20 2023", 3600.0),  # asctime, no zone: UTC
        ("Tue, 14 Nov 2023 23:13:20 -0000", 3600.0),
        ("Tue, 14 Nov 2023 21:13:20 GMT", 0.0),  # in the past
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),  # delay-seconds are digits only
        ("\u0663", None),  # a non-ASCII digit
    ],
)
def test_retry_after_reads_delay_seconds_and_http_dates(
    value: str | None, seconds: float | None
) -> None:
    found = parse_retry_after(value, NOW)
    assert found == (None if seconds is None else pytest.approx(seconds))


def test_retry_after_is_capped_by_the_caller() -> None:
    assert parse_retry_after("99999999", NOW, cap=600.0) == 600.0
    assert parse_retry_after("Wed, 15 Nov 2023 22:13:20 GMT", NOW, cap=600.0) == 600.0
