"""What the store holds: the symbols with layout-v1 folders, and the first date the pipeline has data for.

Symbols are not configuration (``DEPTH_SYMBOLS`` only filters): a day's symbols are those its raw data
holds, which the stream-day validation reports (layout v2 objects name them only inside); its
materialization metadata ``symbols`` is what the merge step fans out over.

The first date is kept in a small marker object (``state/market=/_first_date``): every day run lowers it
to its date, so the partitions keep starting at the first merged day after its raw objects are cleaned up.
Without a marker the raw folders are listed (a new install starts its dates at its data, not years back).
"""

from __future__ import annotations

import datetime as dt

from depth_core.days import previous_day
from depth_core.layout import first_date_key
from depth_core.names import InvalidNameError, Market, validate_date, validate_symbol
from depth_core.raw_format import stream_prefix
from depth_store import ObjectNotFoundError, ObjectStore


def _folder_value(folder: str, name: str) -> str | None:
    """``x`` of a folder ``.../name=x/``, or None when the folder is of another kind."""
    last = folder.rstrip("/").rsplit("/", 1)[-1]
    head, sep, value = last.partition("=")
    return value if sep and head == name else None


def v1_symbols(store: ObjectStore, market: Market, stream: str) -> list[str]:
    """Symbols that have a layout-v1 folder in the stream (any date)."""
    out: list[str] = []
    for folder in store.list_folders(stream_prefix(market, stream)):
        value = _folder_value(folder, "symbol")
        if value is None:
            continue
        try:
            out.append(validate_symbol(value))
        except InvalidNameError:
            continue
    return out


def _raw_dates(store: ObjectStore, market: Market, stream: str) -> set[str]:
    """Every date a raw folder of the stream exists for (v2 date folders, v1 symbol/date folders)."""
    dates: set[str] = set()
    for folder in store.list_folders(stream_prefix(market, stream)):
        if (date := _folder_value(folder, "date")) is not None:
            dates.add(date)
        elif _folder_value(folder, "symbol") is not None:
            dates.update(d for f in store.list_folders(folder) if (d := _folder_value(f, "date")))
    return dates


def first_date(store: ObjectStore, market: Market, streams: tuple[str, ...] | list[str]) -> str | None:
    """The first date the pipeline has data for: the marker, else the day before the first raw folder
    (an object filed under a date can hold events of the day before); None on an empty store."""
    marker = _read_marker(store, market)
    if marker is not None:
        return marker
    dates: set[str] = set()
    for stream in streams:
        dates |= _raw_dates(store, market, stream)
    valid = sorted(d for d in dates if _is_date(d))
    if not valid:
        return None
    return previous_day(valid[0])


def record_first_date(store: ObjectStore, market: Market, date: str) -> None:
    """Lower the first-date marker to ``date`` (a day run calls this before it writes anything)."""
    date = validate_date(date)
    key = first_date_key(market)
    current = _read_marker(store, market)
    if current is None or date < current:
        store.put_bytes(key, date.encode())


def _read_marker(store: ObjectStore, market: Market) -> str | None:
    try:
        return validate_date(store.get_bytes(first_date_key(market)).decode().strip())
    except (ObjectNotFoundError, UnicodeDecodeError, InvalidNameError):  # absent or garbled: rebuild it
        return None


def _is_date(text: str) -> bool:
    try:
        validate_date(text)
    except InvalidNameError:
        return False
    return True


def partition_start(
    store: ObjectStore, market: Market, streams: tuple[str, ...] | list[str], configured: str | None
) -> str:
    """``DEPTH_START_DATE`` when set, else the store's first date (never after today: a day run's marker
    is its date, so a demo that merged today shows exactly one date, materialized), else yesterday (UTC:
    the first day the daily schedule asks for on an empty store)."""
    if configured:
        return configured
    today = dt.datetime.now(dt.UTC).date().isoformat()
    first = first_date(store, market, streams)
    return min(first, today) if first else previous_day(today)
