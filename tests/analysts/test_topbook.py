"""The top-of-book table against the book replayed independently at its grid times."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from depth_core.book import OrderBook, replay_merged
from depth_core.topbook import TOP_SCHEMA, compute_top_levels
from tests.analysts import synth


def test_top_levels_match_replay_at_grid_times() -> None:
    data = synth.generate(market="usdm", days=("2026-11-23",), events_per_day=2000, seed=21)
    day = data.frames["2026-11-23"]
    table = compute_top_levels(day, "2026-11-23", every="5m", depth=10)
    assert dict(table.schema) == TOP_SCHEMA
    times = table["time"].unique().sort()
    assert times.len() == 287  # 288 grid times; the first image comes 1.5 s in, so t=0 has no book
    assert times[0] == dt.datetime(2026, 11, 23, 0, 5, tzinfo=dt.UTC)
    rng = np.random.default_rng(0)
    for t in rng.choice(times.to_list(), 12, replace=False):
        prefix = day.filter(pl.col("exchange_time").cum_max() <= t)
        book = replay_merged(prefix)
        bids, asks = book.top(10)
        at = table.filter(pl.col("time") == t)
        got_bids = at.filter(pl.col("side") == "bid").sort("level")
        got_asks = at.filter(pl.col("side") == "ask").sort("level")
        assert got_bids.select("price", "qty").to_numpy().tolist() == bids.tolist()
        assert got_asks.select("price", "qty").to_numpy().tolist() == asks.tolist()
        assert got_bids["level"].to_list() == list(range(10))
        assert set(at["last_update_id"].to_list()) == {int(prefix["last_update_id"][-1])}
    assert table.select(pl.col("time"), pl.col("side"), pl.col("level")).is_duplicated().sum() == 0
    assert table["time"].is_sorted()


def test_top_levels_with_a_start_book_and_bad_arguments() -> None:
    data = synth.generate(days=("2026-11-23",), events_per_day=50, seed=2)
    day = data.frames["2026-11-23"]
    start = OrderBook()
    start.load_snapshot(np.array([[10.0, 1.0]]), np.array([[11.0, 2.0]]))
    table = compute_top_levels(day, "2026-11-23", every="1s", depth=1, start_book=start)
    first = table.filter(pl.col("time") == dt.datetime(2026, 11, 23, tzinfo=dt.UTC))
    assert first.select("side", "price", "qty").rows() == [("ask", 11.0, 2.0), ("bid", 10.0, 1.0)]
    assert first["last_update_id"].null_count() == 2
    assert start.levels("bid") == {10.0: 1.0}  # not modified
    assert compute_top_levels(day.clear(), "2026-11-23").height == 0
    with pytest.raises(ValueError):
        compute_top_levels(day, "2026-11-23", every="500us")
    with pytest.raises(ValueError):
        compute_top_levels(day, "2026-11-23", depth=0)


def test_write_top_day_reads_the_store_and_writes_the_hive_layout(tmp_path: object) -> None:
    from depth_core.storeio import read_parquet
    from depth_core.topbook import TOP_TABLE_NAME, build_top_day, write_top_day
    from depth_store import open_store

    data = synth.generate(days=("2026-11-23", "2026-11-24"), events_per_day=400, seed=5)
    store = open_store(str(tmp_path))
    synth.write(store, data)
    key, table = write_top_day(store, "spot", "BTCUSDT", "2026-11-24", every="1m", depth=3)
    assert key == f"derived/{TOP_TABLE_NAME}/market=spot/symbol=BTCUSDT/date=2026-11-24/part-00000.parquet"
    assert read_parquet(store, key).equals(table)
    assert table.equals(compute_top_levels(data.frames["2026-11-24"], "2026-11-24", every="1m", depth=3))
    assert table["time"].n_unique() == 1440  # the day opens with a carried image at 00:00:00
    first_day = build_top_day(store, "spot", "BTCUSDT", "2026-11-23", every="1s", depth=1)
    assert first_day["time"].min() == dt.datetime(2026, 11, 23, 0, 0, 2, tzinfo=dt.UTC)  # image at 1.5 s
    assert build_top_day(store, "spot", "BTCUSDT", "2026-11-25").height == 0
    from depth_core.topbook import load_top_levels

    loaded = load_top_levels("BTCUSDT", "2026-11-24T06:00", "2026-11-26", store=store).collect()
    assert loaded.equals(table.filter(pl.col("time") >= dt.datetime(2026, 11, 24, 6, tzinfo=dt.UTC)))
    assert load_top_levels("BTCUSDT", "2026-11-22", "2026-11-23", store=store).collect().height == 0
