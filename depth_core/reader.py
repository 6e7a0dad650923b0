"""Reading API for analysts: the merged dataset (docs/analysts.md) as polars frames and books. No Dagster.

* :func:`load_deltas` — a ``polars.LazyFrame`` over the day files of a symbol, with time or update-id bounds
  pushed down to the Parquet reader (row-group statistics skip what is outside).
* :func:`book_at` — the book at an instant (or after an update id) as two polars frames.
* :func:`iter_books` — the top ``depth`` levels on a regular time grid, for feature building.

Time semantics everywhere: the book "at t" is the book after every event whose exchange time ``E`` is at
or before ``t`` (in update-id order; a row whose ``E`` is earlier than a row before it counts from that
earlier row's time, so the replayed prefix is always contiguous). Naive datetimes are read as UTC.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import orjson
import polars as pl

from depth_core.book import OrderBook, TopSamples, sample_tops
from depth_core.days import DAY_NS, DAY_S, days_touched, previous_day
from depth_core.layout import merged_day_prefix, merged_manifest_key, merged_symbol_prefix
from depth_core.names import Market, validate_market, validate_symbol
from depth_core.schema import MERGED_SCHEMA, SIDE_BID
from depth_store.base import ObjectNotFoundError, ObjectStore

STORE_ENV = "DEPTH_STORE_URL"
TimeLike = dt.datetime | dt.date | str
_DATE_DIR_RE = re.compile(r"date=(\d{4}-\d{2}-\d{2})/")
_DURATION_RE = re.compile(r"^\s*(\d+)\s*(ns|us|ms|s|m|h|d)\s*$")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": DAY_NS,
}
# rows of one update-id order may carry exchange times a little out of order (a snapshot's E vs the
# events around it); reads for "at t" take this much more and cut exactly in memory
_TIME_SLACK = dt.timedelta(minutes=2)


class NoDataError(LookupError):
    """No merged data (or no book image) for what was asked."""


def resolve_store(store: ObjectStore | str | None) -> ObjectStore:
    """An ObjectStore, a store URL, or None for ``$DEPTH_STORE_URL``."""
    if isinstance(store, ObjectStore):
        return store
    url = store if store is not None else os.environ.get(STORE_ENV)
    if not url:
        raise ValueError(f"no store given and ${STORE_ENV} is not set")
    from depth_store import open_store

    return open_store(url)


def to_utc(value: TimeLike) -> dt.datetime:
    """A datetime in UTC: naive datetimes and dates are UTC, strings are ISO 8601."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)


def parse_every(every: str | dt.timedelta) -> int:
    """``"1s"``, ``"100ms"``, ``"5m"``, or a timedelta -> nanoseconds."""
    if isinstance(every, dt.timedelta):
        ns = round(every.total_seconds() * 1e9)
    else:
        m = _DURATION_RE.match(every)
        if m is None:
            raise ValueError(f"interval {every!r} not understood: use e.g. '1s', '100ms', '5m'")
        ns = int(m.group(1)) * _UNIT_NS[m.group(2)]
    if ns <= 0:
        raise ValueError(f"interval {every!r} must be positive")
    return ns


def list_days(symbol: str, *, store: ObjectStore | str | None = None, market: Market = "spot") -> list[str]:
    """Dates with merged Parquet for a symbol (one listing of the symbol's folder)."""
    st = resolve_store(store)
    prefix = merged_symbol_prefix(market, symbol)
    days = {
        m.group(1)
        for info in st.list(prefix)
        if info.key.endswith(".parquet") and (m := _DATE_DIR_RE.search(info.key)) is not None
    }
    return sorted(days)


def day_files(store: ObjectStore, symbol: str, date: str, market: Market = "spot") -> list[str]:
    """Keys of one symbol-day's published Parquet files in row order.

    The coverage manifest names them (exact even while a new version is being published, when the day
    folder briefly holds two versions); without a manifest, the folder's files (their names sort in row
    order).
    """
    try:
        manifest = orjson.loads(store.get_bytes(merged_manifest_key(market, symbol, date)))
    except ObjectNotFoundError:
        manifest = None
    if isinstance(manifest, dict) and isinstance(manifest.get("files"), list):
        return [str(k) for k in manifest["files"]]
    return sorted(
        i.key for i in store.list(merged_day_prefix(market, symbol, date)) if i.key.endswith(".parquet")
    )


def scan_keys(store: ObjectStore, keys: list[str], *, merged: bool = True) -> pl.LazyFrame:
    """Lazy scan of these Parquet keys (in order); no keys: an empty frame of the merged schema.

    ``merged`` (merged-dataset files): days merged before the ``book_exact`` column existed read as
    ``book_exact`` true (that merge wrote only exact rows: it dropped what followed a gap). Other tables
    (the top-of-book table) pass ``merged=False``.
    """
    if not keys:
        return pl.LazyFrame(schema=MERGED_SCHEMA)
    locations = [store.scan_location(k) for k in keys]
    options = locations[0][1]
    paths = [loc for loc, _ in locations]
    if not merged:
        return pl.scan_parquet(paths, storage_options=options, hive_partitioning=False)
    return pl.scan_parquet(
        paths,
        storage_options=options,
        hive_partitioning=False,
        schema=MERGED_SCHEMA,
        missing_columns="insert",
    ).with_columns(pl.col("book_exact").fill_null(True))


def load_deltas(
    symbol: str,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    store: ObjectStore | str | None = None,
    market: Market = "spot",
    min_update_id: int | None = None,
    max_update_id: int | None = None,
) -> pl.LazyFrame:
    """Merged rows of ``symbol`` with ``start <= exchange_time < end`` and/or update-id bounds, lazily.

    Days are chosen from the time bounds (without them, every day in the store); the filters are pushed
    down to the Parquet scan. Id bounds keep rows with ``min_update_id <= last_update_id <=
    max_update_id``. Rows stay in file order (update-id order within and across days). Note that a
    slice that does not start at an image (``is_snapshot``) cannot be replayed on its own: use
    :func:`book_at` / :func:`iter_books` for books.
    """
    st = resolve_store(store)
    symbol = validate_symbol(symbol)
    market = validate_market(market)
    t0 = to_utc(start) if start is not None else None
    t1 = to_utc(end) if end is not None else None
    if t0 is not None and t1 is not None:
        days = days_touched(t0, t1)
    else:
        days = [
            d
            for d in list_days(symbol, store=st, market=market)
            if (t0 is None or d >= t0.date().isoformat()) and (t1 is None or d <= t1.date().isoformat())
        ]
    keys = [k for d in days for k in day_files(st, symbol, d, market)]
    lf = scan_keys(st, keys)
    if t0 is not None:
        lf = lf.filter(pl.col("exchange_time") >= t0)
    if t1 is not None:
        lf = lf.filter(pl.col("exchange_time") < t1)
    if min_update_id is not None:
        lf = lf.filter(pl.col("last_update_id") >= min_update_id)
    if max_update_id is not None:
        lf = lf.filter(pl.col("last_update_id") <= max_update_id)
    return lf


_REPLAY_COLUMNS = ["exchange_time", "is_snapshot", "last_update_id", "side", "price", "qty", "book_exact"]


def iter_frames(
    symbol: str,
    first_date: str | dt.date,
    last_date: str | dt.date | None = None,
    *,
    store: ObjectStore | str | None = None,
    market: Market = "spot",
    columns: list[str] | None = None,
) -> Iterator[pl.DataFrame]:
    """The merged rows of whole days (``first_date``..``last_date`` inclusive), one Parquet file at a time.

    For event-level work on full days in bounded memory: ``replay_merged(iter_frames(...), on_event)``.
    """
    st = resolve_store(store)
    symbol, market = validate_symbol(symbol), validate_market(market)
    d0 = to_utc(first_date if isinstance(first_date, dt.date) else dt.date.fromisoformat(first_date)).date()
    d1 = (
        d0
        if last_date is None
        else to_utc(last_date if isinstance(last_date, dt.date) else dt.date.fromisoformat(last_date)).date()
    )
    for i in range((d1 - d0).days + 1):
        for key in day_files(st, symbol, (d0 + dt.timedelta(days=i)).isoformat(), market):
            lf = scan_keys(st, [key])
            yield (lf.select(columns) if columns else lf).collect()


class InexactBookError(NoDataError):
    """The cut falls where the merged book is not exact (``book_exact`` false: after ids no stream received,
    before the image that re-anchors the book)."""


def _day_rows_up_to(lf: pl.LazyFrame, when: dt.datetime | None, update_id: int | None) -> pl.DataFrame | None:
    """Rows from the last image at or before the cut to the cut, or None if no image precedes the cut.

    Raises :class:`InexactBookError` when the last row before the cut has ``book_exact`` false."""
    cut = pl.lit(True)
    if when is not None:
        cut = pl.col("exchange_time") <= when + _TIME_SLACK
    if update_id is not None:
        cut = cut & (pl.col("last_update_id") <= update_id)
    images = lf.filter(cut & pl.col("is_snapshot")).select("last_update_id", "exchange_time")
    if when is not None:
        images = images.filter(pl.col("exchange_time") <= when)
    image_id = images.select(pl.col("last_update_id").max()).collect().item()
    if image_id is None:
        # before the day's first image: a day without a carried book may have inexact rows there, and then
        # the previous day's book would be a wrong answer
        early = lf.filter(cut & ~pl.col("book_exact"))
        if when is not None:
            early = early.filter(pl.col("exchange_time") <= when)
        if early.select(pl.len()).collect().item():
            raise InexactBookError(
                "the merged book is not exact before the day's first image (no carried book: "
                "rows with book_exact false)"
            )
        return None
    rows = lf.filter(cut & (pl.col("last_update_id") >= image_id)).select(_REPLAY_COLUMNS).collect()
    if when is not None:  # exact cut: the contiguous prefix whose running max of E is <= when
        rows = rows.filter(pl.col("exchange_time").cum_max() <= when)
    if rows.height and not rows["book_exact"][-1]:
        raise InexactBookError(
            f"the merged book is not exact at update id {rows['last_update_id'][-1]}: it follows ids no "
            "stream received and precedes the image that re-anchors the book (rows with book_exact false)"
        )
    return rows


def _replay_rows(rows: pl.DataFrame, book: OrderBook | None = None) -> OrderBook:
    book = book if book is not None else OrderBook()
    if rows.height:
        sample_rows_tops(rows, np.zeros(0, np.int64), 0, book)
    return book


def sample_rows_tops(
    rows: pl.DataFrame, sample_rows: np.ndarray, depth: int, book: OrderBook | None
) -> tuple[OrderBook, TopSamples]:
    """:func:`sample_tops` over merged rows (columns side, price, qty, is_snapshot, last_update_id)."""
    return sample_tops(
        (rows["side"] == SIDE_BID).to_numpy(),
        rows["price"].to_numpy(),
        rows["qty"].to_numpy(),
        rows["is_snapshot"].to_numpy(),
        rows["last_update_id"].to_numpy(),
        sample_rows,
        depth,
        book,
    )


def book_frames(book: OrderBook, depth: int | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(bids, asks) polars frames with columns price, qty: bids by descending price, asks ascending."""
    if depth is None:
        depth = max(book.depth_counts())
    bids, asks = book.top(depth)
    return (
        pl.DataFrame(
            {"price": bids[:, 0], "qty": bids[:, 1]}, schema={"price": pl.Float64, "qty": pl.Float64}
        ),
        pl.DataFrame(
            {"price": asks[:, 0], "qty": asks[:, 1]}, schema={"price": pl.Float64, "qty": pl.Float64}
        ),
    )


def book_at(
    symbol: str,
    when: TimeLike | int,
    *,
    store: ObjectStore | str | None = None,
    market: Market = "spot",
    depth: int | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The book of ``symbol`` at instant ``when`` (or, for an int, after the event ending at that update id).

    Returns (bids, asks) frames of price, qty (bids descending, asks ascending), all levels unless
    ``depth`` is given. Replays from the last image at or before the cut (the day's first image at worst;
    the previous day when the instant precedes the day's first image). Raises :class:`NoDataError`.
    """
    book = book_at_book(symbol, when, store=store, market=market)
    return book_frames(book, depth)


def book_at_book(
    symbol: str, when: TimeLike | int, *, store: ObjectStore | str | None = None, market: Market = "spot"
) -> OrderBook:
    """Like :func:`book_at` but returns the :class:`~depth_core.book.OrderBook` itself."""
    st = resolve_store(store)
    symbol = validate_symbol(symbol)
    market = validate_market(market)
    if isinstance(when, bool):
        raise TypeError("when must be a time or an update id, not a bool")
    if isinstance(when, int):
        return _book_at_id(st, symbol, when, market)
    t = to_utc(when)
    for day in (t.date(), t.date() - dt.timedelta(days=1)):
        keys = day_files(st, symbol, day.isoformat(), market)
        if not keys:
            if day == t.date():
                break  # the day is not (yet) merged: the previous day's book would be a stale answer
            continue
        rows = _day_rows_up_to(scan_keys(st, keys), t, None)
        if rows is not None:
            return _replay_rows(rows)
    raise NoDataError(f"no merged book image of {symbol} ({market}) at or before {t.isoformat()}")


def _book_at_id(st: ObjectStore, symbol: str, update_id: int, market: Market) -> OrderBook:
    # newest day first: the first day whose image precedes the id holds it
    for day in reversed(list_days(symbol, store=st, market=market)):
        lf = scan_keys(st, day_files(st, symbol, day, market))
        first = lf.select(pl.col("last_update_id").min()).collect().item()
        if first is None or first > update_id:
            continue
        rows = _day_rows_up_to(lf, None, update_id)
        if rows is not None:
            return _replay_rows(rows)
    raise NoDataError(f"no merged book image of {symbol} ({market}) at or before update id {update_id}")


class BookSample(NamedTuple):
    """The top of the book at one grid time: arrays of shape (<=depth, 2) of price, qty."""

    time: dt.datetime
    bids: np.ndarray
    asks: np.ndarray


def grid_sample_rows(exchange_time_ns: np.ndarray, grid_ns: np.ndarray) -> np.ndarray:
    """For each grid time t, the number of leading rows in the book at t (running max of E <= t)."""
    running = np.maximum.accumulate(exchange_time_ns) if len(exchange_time_ns) else exchange_time_ns
    return np.searchsorted(running, grid_ns, side="right").astype(np.int64)


def iter_books(
    symbol: str,
    start: TimeLike,
    end: TimeLike,
    every: str | dt.timedelta = "1s",
    depth: int = 25,
    *,
    store: ObjectStore | str | None = None,
    market: Market = "spot",
) -> Iterator[BookSample]:
    """Yield the top ``depth`` levels at ``start, start + every, ...`` (< ``end``), day by day.

    Memory stays at one day of rows. Grid times before the first book image of the data, in days
    without merged data, and where the book is not exact (``book_exact`` false: after a gap no stream
    covered, until the re-anchoring image) are yielded with empty arrays; the book carries across days
    (each day's image re-anchors it anyway).
    """
    st = resolve_store(store)
    symbol = validate_symbol(symbol)
    market = validate_market(market)
    t0, t1 = to_utc(start), to_utc(end)
    step = parse_every(every)
    grid = np.arange(_ns(t0), _ns(t1), step, dtype=np.int64)
    book = OrderBook()
    days = days_touched(t0, t1)
    # the book at start may come from the day before (an instant before that day's first image)
    prev = previous_day(days[0])
    prev_keys = day_files(st, symbol, prev, market)
    if prev_keys:
        try:
            rows = _day_rows_up_to(scan_keys(st, prev_keys), t0, None)
        except InexactBookError:
            rows = None
        if rows is not None:
            _replay_rows(rows, book)
    for day in days:
        day_start = _ns(to_utc(dt.date.fromisoformat(day)))
        day_grid = grid[(grid >= day_start) & (grid < day_start + _UNIT_NS["d"])]
        keys = day_files(st, symbol, day, market)
        rows = (
            (
                scan_keys(st, keys)
                .filter(pl.col("exchange_time") <= _from_ns(int(day_grid[-1])) + _TIME_SLACK)
                .select(_REPLAY_COLUMNS)
                .collect()
            )
            if keys and len(day_grid)
            else None
        )
        if rows is None or rows.height == 0:
            if not keys:
                book = OrderBook()  # a day without merged data: no book rather than a stale one
            for t in day_grid:
                bids, asks = book.top(depth)
                yield BookSample(_from_ns(int(t)), bids, asks)
            continue
        e_ns = rows["exchange_time"].dt.epoch("ns").to_numpy()
        sample_rows = grid_sample_rows(e_ns, day_grid)
        book, tops = sample_rows_tops(rows, sample_rows, depth, book)
        exact_rows = rows["book_exact"].to_numpy()
        exact_at = np.where(sample_rows > 0, exact_rows[np.maximum(sample_rows - 1, 0)], True)
        # the day's rows continue after the last grid time; the carried book is rebuilt by the next image
        for j, t in enumerate(day_grid):
            if not exact_at[j]:
                yield BookSample(_from_ns(int(t)), np.zeros((0, 2)), np.zeros((0, 2)))
                continue
            nb = int(np.count_nonzero(~np.isnan(tops.bid_qty[j])))
            na = int(np.count_nonzero(~np.isnan(tops.ask_qty[j])))
            yield BookSample(
                _from_ns(int(t)),
                np.column_stack([tops.bid_price[j, :nb], tops.bid_qty[j, :nb]]),
                np.column_stack([tops.ask_price[j, :na], tops.ask_qty[j, :na]]),
            )


def _ns(t: dt.datetime) -> int:
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * DAY_S + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _from_ns(ns: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ns // 1_000)
