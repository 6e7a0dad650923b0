"""Day arithmetic (depth_core/days.py) against the calendar, across month, year and leap-day edges."""

from __future__ import annotations

import datetime as dt

import pytest

from depth_core.days import DAY_MS, DAY_NS, date_of_day_index, day_index, days_touched, next_day, previous_day


@pytest.mark.parametrize(
    ("date", "before", "after"),
    [
        ("2026-11-24", "2026-11-23", "2026-11-25"),
        ("2026-03-01", "2026-02-28", "2026-03-02"),
        ("2024-03-01", "2024-02-29", "2024-03-02"),
        ("2027-01-01", "2026-12-31", "2027-01-02"),
    ],
)
def test_previous_and_next_day(date: str, before: str, after: str) -> None:
    assert previous_day(date) == before
    assert next_day(date) == after
    assert next_day(previous_day(date)) == date


def test_day_index_is_the_epoch_day_and_its_start_in_ms() -> None:
    assert day_index("1970-01-01") == 0
    assert date_of_day_index(day_index("2024-02-29")) == "2024-02-29"
    start = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
    assert day_index("2026-11-24") * DAY_MS == int(start.timestamp()) * 1000
    assert DAY_NS == DAY_MS * 1_000_000 == 86_400 * 10**9


def test_days_touched_is_half_open() -> None:
    t = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
    assert days_touched(t, t + dt.timedelta(days=1)) == ["2026-11-24"]
    assert days_touched(t, t + dt.timedelta(days=1, microseconds=1)) == ["2026-11-24", "2026-11-25"]
    assert days_touched(t - dt.timedelta(hours=1), t + dt.timedelta(hours=1)) == ["2026-11-23", "2026-11-24"]
    assert days_touched(t, t) == ["2026-11-24"]
