"""UTC day arithmetic: the one home of "the day before", day indices and the length of a day.

Every partition, object key and merged file is per UTC day (``YYYY-MM-DD``); this module is how the code
moves between such dates, epoch day indices and timestamps.
"""

from __future__ import annotations

import datetime as dt

DAY_S = 86_400
DAY_MS = DAY_S * 1_000
DAY_NS = DAY_MS * 1_000_000
_EPOCH = dt.date(1970, 1, 1)
_ONE_DAY = dt.timedelta(days=1)


def day_index(date: str) -> int:
    """Days since 1970-01-01 of a ``YYYY-MM-DD`` date (``day_index(d) * DAY_MS`` is its start in ms)."""
    return (dt.date.fromisoformat(date) - _EPOCH).days


def date_of_day_index(idx: int) -> str:
    """The ``YYYY-MM-DD`` date of an epoch day index."""
    return (_EPOCH + dt.timedelta(days=int(idx))).isoformat()


def previous_day(date: str) -> str:
    """The UTC date before ``date`` (``YYYY-MM-DD``)."""
    return (dt.date.fromisoformat(date) - _ONE_DAY).isoformat()


def next_day(date: str) -> str:
    """The UTC date after ``date`` (``YYYY-MM-DD``)."""
    return (dt.date.fromisoformat(date) + _ONE_DAY).isoformat()


def days_touched(start: dt.datetime, end: dt.datetime) -> list[str]:
    """UTC dates touched by [start, end) (the start's date when the interval is empty)."""
    first = start.date()
    last = (end - dt.timedelta(microseconds=1)).date() if end > start else first
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
