"""The derived ``book_top25_1s`` table: the top N levels of the book every interval, per symbol-day.

The table analysts use most: a fixed grid, a few hundred bytes per sample, no replay needed to use it.
Long format, one row per (time, side, level)::

    symbol           string
    time             datetime[ms, UTC]   grid time t; the book after every event with exchange_time <= t
    side             string              "bid" / "ask"
    level            int16               0 = best, 1 = next, ... (< depth)
    price            float64
    qty              float64
    last_update_id   int64               u of the last row in the book at t (ties a sample to the deltas)

Rows are sorted by time, side ("ask" before "bid"), level. Grid times before the day's first image (no
book yet, unless ``start_book`` carries the previous day's) and after the day's last row (the capture
ended: the book is no longer known) have no rows. :func:`compute_top_levels` is
pure (no I/O); :func:`write_top_day` reads the merged day from the store, computes and writes it to
:func:`top_day_key` (``derived/book_top25_1s/market=/symbol=/date=/part-00000.parquet``) — what the
Dagster asset calls.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from depth_core.book import OrderBook
from depth_core.days import DAY_NS, days_touched, previous_day
from depth_core.layout import derived_day_key
from depth_core.names import Market, validate_date
from depth_core.reader import grid_sample_rows, parse_every, sample_rows_tops
from depth_core.schema import SIDE_ASK, SIDE_BID
from depth_store.base import ObjectStore

TOP_TABLE_NAME = "book_top25_1s"
TOP_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "time": pl.Datetime("ms", "UTC"),
    "side": pl.String(),
    "level": pl.Int16(),
    "price": pl.Float64(),
    "qty": pl.Float64(),
    "last_update_id": pl.Int64(),
}
_NEEDED = ["symbol", "exchange_time", "is_snapshot", "last_update_id", "side", "price", "qty", "book_exact"]


def compute_top_levels(
    merged_day: pl.DataFrame | pl.LazyFrame,
    date: str | dt.date,
    *,
    every: str | dt.timedelta = "1s",
    depth: int = 25,
    start_book: OrderBook | None = None,
) -> pl.DataFrame:
    """Top ``depth`` levels at every ``every`` of UTC day ``date`` from that day's merged rows (file order).

    ``start_book`` (optional) is the book before the day's first row, e.g. the previous day's end; it is
    not modified. Returns a frame with :data:`TOP_SCHEMA` (see the module docstring).
    """
    step = parse_every(every)
    if step % 1_000_000:
        raise ValueError(f"interval {every!r} must be a whole number of milliseconds")
    if not 0 < depth <= 10_000:
        raise ValueError(f"depth must be in 1..10000, not {depth}")
    day = dt.date.fromisoformat(validate_date(date))
    rows = (
        (merged_day.lazy() if isinstance(merged_day, pl.DataFrame) else merged_day).select(_NEEDED).collect()
    )
    if rows.height == 0:
        return pl.DataFrame(schema=TOP_SCHEMA)
    symbol = str(rows["symbol"][0])
    day_start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1_000_000_000
    e_ns = rows["exchange_time"].dt.epoch("ns").to_numpy()
    # the book is known only while data flows: no samples after the day's last row (a capture that ended
    # early, or today's partial day, is not extended with a stale book)
    grid_end = min(day_start + DAY_NS, int(e_ns.max()) + 1)
    grid = np.arange(day_start, grid_end, step, dtype=np.int64)
    sample_rows = grid_sample_rows(e_ns, grid)
    book = start_book.copy() if start_book is not None else None
    _, tops = sample_rows_tops(rows, sample_rows, depth, book)
    ids = rows["last_update_id"].to_numpy()
    sample_id = np.where(sample_rows > 0, ids[np.maximum(sample_rows - 1, 0)], -1)
    # no levels where the book is not exact (book_exact false: after a gap, before the re-anchoring image)
    exact_rows = rows["book_exact"].to_numpy()
    sample_exact = np.where(sample_rows > 0, exact_rows[np.maximum(sample_rows - 1, 0)], True)
    # (time, side, level) arrays with "ask" before "bid": np.nonzero walks them in the table's sort order
    prices = np.stack([tops.ask_price, tops.bid_price], axis=1)
    qtys = np.stack([tops.ask_qty, tops.bid_qty], axis=1)
    present = ~np.isnan(qtys) & sample_exact[:, None, None]
    t_idx, side_idx, level = np.nonzero(present)
    out = pl.DataFrame(
        {
            "time": grid[t_idx] // 1_000_000,
            "side_is_bid": side_idx.astype(np.bool_),
            "level": level.astype(np.int16),
            "price": prices[present],
            "qty": qtys[present],
            "last_update_id": sample_id[t_idx],
        }
    )
    return out.select(
        pl.lit(symbol, dtype=pl.String).alias("symbol"),
        pl.col("time").cast(pl.Datetime("ms", "UTC")),
        pl.when(pl.col("side_is_bid")).then(pl.lit(SIDE_BID)).otherwise(pl.lit(SIDE_ASK)).alias("side"),
        pl.col("level"),
        pl.col("price"),
        pl.col("qty"),
        pl.when(pl.col("last_update_id") >= 0).then(pl.col("last_update_id")).alias("last_update_id"),
    ).cast(TOP_SCHEMA)  # type: ignore[arg-type]


def top_day_key(market: Market, symbol: str, date: str, table: str = TOP_TABLE_NAME) -> str:
    """Where a symbol-day of the table lives (``depth_core.layout.derived_day_key``)."""
    return derived_day_key(table, market, symbol, date)


def build_top_day(
    store: ObjectStore,
    market: Market,
    symbol: str,
    date: str,
    *,
    every: str = "1s",
    depth: int = 25,
    carry_previous_day: bool = False,
) -> pl.DataFrame:
    """Read the merged symbol-day from the store and compute the table (empty if the day has no data).

    With ``carry_previous_day`` the grid times before the day's first image (at most the first seconds:
    a day opens with a carried image or its first snapshot) get the previous day's closing book, if that
    day is in the store; it costs a replay of the previous day, hence off by default.
    """
    from depth_core.reader import day_files, scan_keys

    keys = day_files(store, symbol, date, market)
    if not keys:
        return pl.DataFrame(schema=TOP_SCHEMA)
    start_book = None
    if carry_previous_day:
        prev = previous_day(validate_date(date))
        prev_keys = day_files(store, symbol, prev, market)
        if prev_keys:
            from depth_core.book import replay_merged

            start_book = replay_merged(scan_keys(store, prev_keys).select(_NEEDED).collect())
    return compute_top_levels(
        scan_keys(store, keys).select(_NEEDED), date, every=every, depth=depth, start_book=start_book
    )


def write_top_day(
    store: ObjectStore, market: Market, symbol: str, date: str, *, every: str = "1s", depth: int = 25
) -> tuple[str, pl.DataFrame]:
    """Build the table for one symbol-day and write it (zstd Parquet); returns (key, table)."""
    from depth_core.storeio import put_parquet

    table = build_top_day(store, market, symbol, date, every=every, depth=depth)
    key = top_day_key(market, symbol, date)
    put_parquet(store, key, table, row_group_size=500_000)
    return key, table


def load_top_levels(
    symbol: str,
    start: dt.datetime | dt.date | str,
    end: dt.datetime | dt.date | str,
    *,
    store: ObjectStore | str | None = None,
    market: Market = "spot",
    table: str = TOP_TABLE_NAME,
) -> pl.LazyFrame:
    """The materialised table for ``start <= time < end`` as a LazyFrame (days the pipeline has built)."""
    from depth_core.reader import resolve_store, scan_keys, to_utc

    st = resolve_store(store)
    t0, t1 = to_utc(start), to_utc(end)
    keys = [k for day in days_touched(t0, t1) if st.exists(k := top_day_key(market, symbol, day, table))]
    if not keys:
        return pl.LazyFrame(schema=TOP_SCHEMA)
    return scan_keys(st, keys, merged=False).filter((pl.col("time") >= t0) & (pl.col("time") < t1))
